"""Reductions over any set of axes with keepdim: sum mean var amax amin prod logsumexp, max(dim), argmax."""
from __future__ import annotations

from ..ir.types import TensorType, int64
from .registry import Sample, ShapeError, defop, need_float, norm_axis, positive, randn, vjp_of


def reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...], keepdim: bool) -> tuple[int, ...]:
    for a in axes:
        if not 0 <= a < max(len(shape), 1):
            raise ShapeError(f"dimension {a} out of range for a tensor of shape {tuple(shape)}")
    if keepdim:
        return tuple(1 if i in axes else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def _sum(x: TensorType, *, axes: tuple[int, ...], keepdim: bool) -> TensorType:
    dt = x.dtype if x.dtype.is_floating_point else int64  # torch sums integers and bools as int64
    return TensorType(reduced_shape(x.shape, axes, keepdim), dt)


def _float_reduce(x: TensorType, *, axes: tuple[int, ...], keepdim: bool, **_) -> TensorType:
    need_float(x, "this reduction")
    return TensorType(reduced_shape(x.shape, axes, keepdim), x.dtype)


def _same_reduce(x: TensorType, *, axes: tuple[int, ...], keepdim: bool) -> TensorType:
    return TensorType(reduced_shape(x.shape, axes, keepdim), x.dtype)


def _reduce_samples(make=randn):
    return lambda rng: [
        Sample([make(rng, 3, 4)], {"axes": (0, 1), "keepdim": False}),
        Sample([make(rng, 2, 3, 4)], {"axes": (1,), "keepdim": True}),
        Sample([make(rng, 2, 3, 4)], {"axes": (0, 2), "keepdim": False}),
        Sample([make(rng, 5)], {"axes": (0,), "keepdim": True}),
    ]


defop("sum", _sum, kind="reduction", samples=_reduce_samples())
defop("mean", _float_reduce, kind="reduction", samples=_reduce_samples())
defop("amax", _same_reduce, kind="reduction", samples=_reduce_samples())
defop("amin", _same_reduce, kind="reduction", samples=_reduce_samples())
defop("prod", _same_reduce, kind="reduction", samples=_reduce_samples(positive))
defop("logsumexp", _float_reduce, kind="reduction", samples=_reduce_samples())
defop("var", _float_reduce, kind="reduction", samples=lambda rng: [
    Sample([randn(rng, 3, 4)], {"axes": (0, 1), "keepdim": False, "correction": 1}),
    Sample([randn(rng, 2, 3, 4)], {"axes": (0, 2), "keepdim": True, "correction": 0}),
    Sample([randn(rng, 6)], {"axes": (0,), "keepdim": False, "correction": 1}),
])


def _expand_back(ctx, g):
    """A reduced gradient put back into the input's shape (reinserting reduced axes first)."""
    x = ctx.inputs[0]
    if not ctx.attrs["keepdim"]:
        g = g.reshape(reduced_shape(x.shape, ctx.attrs["axes"], True))
    return g.expand(x.shape)


def _count(ctx) -> int:
    n = 1
    for a in ctx.attrs["axes"]:
        n *= ctx.inputs[0].shape[a]
    return n


@vjp_of("sum")
def _(ctx, g):
    return (_expand_back(ctx, g),)


@vjp_of("mean")
def _(ctx, g):
    return (_expand_back(ctx, g) / _count(ctx),)


@vjp_of("var")
def _(ctx, g):
    x = ctx.inputs[0]
    mean = x.mean(ctx.attrs["axes"], keepdim=True)
    return (_expand_back(ctx, g) * (x - mean) * (2.0 / max(_count(ctx) - ctx.attrs["correction"], 0)),)


def _extreme_vjp(ctx, g):
    # torch's amax/amin spread the gradient evenly over ties
    x, y = ctx.inputs[0], ctx.outputs[0]
    yk = _expand_back(ctx, y)
    mask = (x == yk).to(g.dtype)
    count = mask.sum(ctx.attrs["axes"], keepdim=True)
    return (_expand_back(ctx, g) * mask / count,)


vjp_of("amax")(_extreme_vjp)
vjp_of("amin")(_extreme_vjp)


@vjp_of("prod")
def _(ctx, g):
    # assumes no zero factors (the samples avoid them); torch special-cases zeros
    return (_expand_back(ctx, g) * _expand_back(ctx, ctx.outputs[0]) / ctx.inputs[0],)


@vjp_of("logsumexp")
def _(ctx, g):
    return (_expand_back(ctx, g) * (ctx.inputs[0] - _expand_back(ctx, ctx.outputs[0])).exp(),)


# ---- max(dim) with indices, argmax ------------------------------------------------------------------

def _max_dim(x: TensorType, *, axis: int, keepdim: bool) -> list[TensorType]:
    shape = reduced_shape(x.shape, (norm_axis(axis, x.ndim),), keepdim)
    return [TensorType(shape, x.dtype), TensorType(shape, int64)]


def _argmax(x: TensorType, *, axis: int | None, keepdim: bool) -> TensorType:
    if axis is None:
        return TensorType((1,) * x.ndim if keepdim else (), int64)
    return TensorType(reduced_shape(x.shape, (norm_axis(axis, x.ndim),), keepdim), int64)


_dim_samples = lambda rng: [  # noqa: E731
    Sample([randn(rng, 3, 4)], {"axis": 1, "keepdim": False}),
    Sample([randn(rng, 2, 3, 4)], {"axis": 0, "keepdim": True}),
]
defop("max_dim", _max_dim, kind="reduction", nout=2, samples=_dim_samples)
defop("min_dim", _max_dim, kind="reduction", nout=2, samples=_dim_samples)
defop("argmax", _argmax, kind="reduction", nondiff="integer output", samples=lambda rng: [
    Sample([randn(rng, 3, 4)], {"axis": 1, "keepdim": False}),
    Sample([randn(rng, 3, 4)], {"axis": None, "keepdim": False}),
])
defop("argmin", _argmax, kind="reduction", nondiff="integer output", samples=lambda rng: [
    Sample([randn(rng, 3, 4)], {"axis": 0, "keepdim": True}),
])


def _dim_vjp(ctx, g, _unused_indices_grad=None):
    x = ctx.inputs[0]
    axis, idx = ctx.attrs["axis"] % x.ndim, ctx.outputs[1]
    if not ctx.attrs["keepdim"]:
        g = g.unsqueeze(axis)
        idx = idx.unsqueeze(axis)
    hit = ctx.call("iota", shape=tuple(x.shape), axis=axis, dtype="int64") == idx
    return (g.expand(x.shape).where(hit, 0.0),)


vjp_of("max_dim")(_dim_vjp)
vjp_of("min_dim")(_dim_vjp)
