"""Elementwise ops: arithmetic, unary math, comparisons, where, clamp, cast."""
from __future__ import annotations

from ..ir.types import TensorType, bool_, dtype_of
from .registry import Sample, ShapeError, away, broadcast_shapes, defop, need_float, positive, randn, same_dtype, vjp_of


def _binary(a: TensorType, b: TensorType) -> TensorType:
    return TensorType(broadcast_shapes(a.shape, b.shape), same_dtype(a, b))


def _compare(a: TensorType, b: TensorType) -> TensorType:
    same_dtype(a, b)
    return TensorType(broadcast_shapes(a.shape, b.shape), bool_)


def _unary(x: TensorType) -> TensorType:
    return x


def _float_unary(x: TensorType) -> TensorType:
    need_float(x, "this op")
    return x


def _binary_samples(make=randn, make_b=None):
    make_b = make_b or make

    def samples(rng):
        return [
            Sample([make(rng, 3, 4), make_b(rng, 3, 4)]),
            Sample([make(rng, 2, 3, 4), make_b(rng, 4)]),
            Sample([make(rng, 2, 1, 3), make_b(rng, 1, 4, 1)]),
            Sample([make(rng), make_b(rng, 3)]),
        ]

    return samples


def _unary_samples(make=randn):
    return lambda rng: [Sample([make(rng, 3, 4)]), Sample([make(rng)]), Sample([make(rng, 2, 1, 5)])]


# ---- binary arithmetic --------------------------------------------------------------------------

defop("add", _binary, kind="elementwise", samples=_binary_samples())
defop("sub", _binary, kind="elementwise", samples=_binary_samples())
defop("mul", _binary, kind="elementwise", samples=_binary_samples())
defop("div", _binary, kind="elementwise", samples=_binary_samples(randn, away))
defop("pow", _binary, kind="elementwise", samples=_binary_samples(positive, randn))
defop("maximum", _binary, kind="elementwise", samples=_binary_samples())
defop("minimum", _binary, kind="elementwise", samples=_binary_samples())


@vjp_of("add")
def _(ctx, g):
    a, b = ctx.inputs
    return g.sum_to_size(a.shape), g.sum_to_size(b.shape)


@vjp_of("sub")
def _(ctx, g):
    a, b = ctx.inputs
    return g.sum_to_size(a.shape), (-g).sum_to_size(b.shape) if ctx.needs[1] else None


@vjp_of("mul")
def _(ctx, g):
    a, b = ctx.inputs
    return (
        (g * b).sum_to_size(a.shape) if ctx.needs[0] else None,
        (g * a).sum_to_size(b.shape) if ctx.needs[1] else None,
    )


@vjp_of("div")
def _(ctx, g):
    a, b = ctx.inputs
    return (
        (g / b).sum_to_size(a.shape) if ctx.needs[0] else None,
        (-g * a / (b * b)).sum_to_size(b.shape) if ctx.needs[1] else None,
    )


@vjp_of("pow")
def _(ctx, g):
    a, b = ctx.inputs
    (y,) = ctx.outputs
    return (
        (g * b * a ** (b - 1)).sum_to_size(a.shape) if ctx.needs[0] else None,
        (g * y * a.log()).sum_to_size(b.shape) if ctx.needs[1] else None,
    )


def _minmax_vjp(ctx, g, wins):
    a, b = ctx.inputs
    # torch splits the gradient evenly where the two operands tie
    share = wins.to(g.dtype) + (a == b).to(g.dtype) * 0.5
    return (
        (g * share).sum_to_size(a.shape) if ctx.needs[0] else None,
        (g * (1 - share)).sum_to_size(b.shape) if ctx.needs[1] else None,
    )


@vjp_of("maximum")
def _(ctx, g):
    a, b = ctx.inputs
    return _minmax_vjp(ctx, g, a > b)


@vjp_of("minimum")
def _(ctx, g):
    a, b = ctx.inputs
    return _minmax_vjp(ctx, g, a < b)


# ---- unary math ---------------------------------------------------------------------------------

defop("neg", _unary, kind="elementwise", samples=_unary_samples())
defop("abs", _unary, kind="elementwise", samples=_unary_samples(away))
defop("sign", _unary, kind="elementwise", nondiff="piecewise constant: its gradient is zero",
      samples=_unary_samples())
for _name, _make in [("exp", randn), ("log", positive), ("sqrt", positive), ("rsqrt", positive), ("tanh", randn),
                     ("sigmoid", randn), ("sin", randn), ("cos", randn)]:
    defop(_name, _float_unary, kind="elementwise", samples=_unary_samples(_make))
defop("relu", _unary, kind="elementwise", samples=_unary_samples(away))


@vjp_of("neg")
def _(ctx, g):
    return (-g,)


@vjp_of("abs")
def _(ctx, g):
    return (g * ctx.inputs[0].sign(),)


@vjp_of("exp")
def _(ctx, g):
    return (g * ctx.outputs[0],)


@vjp_of("log")
def _(ctx, g):
    return (g / ctx.inputs[0],)


@vjp_of("sqrt")
def _(ctx, g):
    return (g / (2 * ctx.outputs[0]),)


@vjp_of("rsqrt")
def _(ctx, g):
    y = ctx.outputs[0]
    return (-0.5 * g * y * y * y,)


@vjp_of("tanh")
def _(ctx, g):
    y = ctx.outputs[0]
    return (g * (1 - y * y),)


@vjp_of("sigmoid")
def _(ctx, g):
    y = ctx.outputs[0]
    return (g * y * (1 - y),)


@vjp_of("sin")
def _(ctx, g):
    return (g * ctx.inputs[0].cos(),)


@vjp_of("cos")
def _(ctx, g):
    return (-g * ctx.inputs[0].sin(),)


@vjp_of("relu")
def _(ctx, g):
    from ..functional import where

    # torch's threshold_backward: zero where the output is <= 0, so a NaN output passes its gradient on
    return (where(ctx.outputs[0] <= 0, 0.0, g),)


# ---- comparisons, where, clamp, cast --------------------------------------------------------------

for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    defop(_name, _compare, kind="elementwise", nondiff="comparisons have no gradient",
          samples=_binary_samples())


def _where(c: TensorType, a: TensorType, b: TensorType) -> TensorType:
    if c.dtype != bool_:
        raise ShapeError(f"where expected condition to be a boolean tensor, but got a tensor with dtype {c.dtype.name}")
    return TensorType(broadcast_shapes(c.shape, a.shape, b.shape), same_dtype(a, b))


defop("where", _where, kind="elementwise",
      samples=lambda rng: [Sample([randn(rng, 3, 4) > 0, randn(rng, 3, 4), randn(rng, 3, 4)]),
                           Sample([randn(rng, 3, 1) > 0, randn(rng, 4), randn(rng, 2, 1, 1)])])


@vjp_of("where")
def _(ctx, g):
    c, a, b = ctx.inputs
    return (
        None,
        g.where(c, 0.0).sum_to_size(a.shape) if ctx.needs[1] else None,
        g.where(~c, 0.0).sum_to_size(b.shape) if ctx.needs[2] else None,
    )


def _clamp(x: TensorType, *, min: float | None, max: float | None) -> TensorType:
    if min is None and max is None:
        raise ShapeError("clamp: at least one of 'min' or 'max' must not be None")
    return x


defop("clamp", _clamp, kind="elementwise",
      samples=lambda rng: [Sample([randn(rng, 3, 4)], {"min": -0.5, "max": 0.5}),
                           Sample([randn(rng, 5)], {"min": 0.1, "max": None}),
                           Sample([randn(rng, 5)], {"min": None, "max": -0.1})])


@vjp_of("clamp")
def _(ctx, g):
    x = ctx.inputs[0]
    lo, hi = ctx.attrs["min"], ctx.attrs["max"]
    inside = None
    if lo is not None:
        inside = x >= lo
    if hi is not None:
        inside = (x <= hi) if inside is None else inside & (x <= hi)
    return (g.where(inside, 0.0),)


def _cast(x: TensorType, *, dtype: str) -> TensorType:
    return TensorType(x.shape, dtype_of(dtype))


defop("cast", _cast, kind="elementwise",
      samples=lambda rng: [Sample([randn(rng, 3, 4)], {"dtype": "float32"}),
                           Sample([randn(rng, 3)], {"dtype": "float64"})])


@vjp_of("cast")
def _(ctx, g):
    return (g.to(ctx.inputs[0].dtype),)


# logical ops on bool masks (used by VJP rules and by users' masks)
def _logical(a: TensorType, b: TensorType) -> TensorType:
    if a.dtype != bool_ or b.dtype != bool_:
        raise ShapeError(f"logical ops need bool tensors, got {a.dtype.name} and {b.dtype.name}")
    return TensorType(broadcast_shapes(a.shape, b.shape), bool_)


def _logical_not(a: TensorType) -> TensorType:
    if a.dtype != bool_:
        raise ShapeError(f"logical_not needs a bool tensor, got {a.dtype.name}")
    return a


_bool_pair = lambda rng: [Sample([randn(rng, 3, 4) > 0, randn(rng, 4) > 0])]  # noqa: E731
defop("logical_and", _logical, kind="elementwise", nondiff="boolean", samples=_bool_pair)
defop("logical_or", _logical, kind="elementwise", nondiff="boolean", samples=_bool_pair)
defop("logical_not", _logical_not, kind="elementwise", nondiff="boolean",
      samples=lambda rng: [Sample([randn(rng, 3, 4) > 0])])
