"""Views and data movement: reshape, permute, expand, basic indexing and its adjoint, cat."""
from __future__ import annotations

from ..ir.types import TensorType
from .registry import Sample, ShapeError, defop, fmt, norm_axis, randn, same_dtype, vjp_of


def _reshape(x: TensorType, *, shape: tuple[int, ...]) -> TensorType:
    n = 1
    for s in shape:
        n *= s
    if n != x.numel or any(s < 0 for s in shape):
        raise ShapeError(f"shape '{list(shape)}' is invalid for input of size {x.numel} (input shape {fmt(x.shape)})")
    return TensorType(tuple(shape), x.dtype)


defop("reshape", _reshape, kind="view", samples=lambda rng: [
    Sample([randn(rng, 3, 4)], {"shape": (2, 6)}),
    Sample([randn(rng, 2, 3, 4)], {"shape": (24,)}),
    Sample([randn(rng, 1)], {"shape": ()}),
])


@vjp_of("reshape")
def _(ctx, g):
    return (g.reshape(ctx.inputs[0].shape),)


def _permute(x: TensorType, *, perm: tuple[int, ...]) -> TensorType:
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"permute: {perm} is not a permutation of the {x.ndim} dims of shape {fmt(x.shape)}")
    return TensorType(tuple(x.shape[p] for p in perm), x.dtype)


defop("permute", _permute, kind="view", samples=lambda rng: [
    Sample([randn(rng, 3, 4)], {"perm": (1, 0)}),
    Sample([randn(rng, 2, 3, 4)], {"perm": (2, 0, 1)}),
])


@vjp_of("permute")
def _(ctx, g):
    perm = ctx.attrs["perm"]
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return (g.permute(*inv),)


def _expand(x: TensorType, *, shape: tuple[int, ...]) -> TensorType:
    lead = len(shape) - x.ndim
    if lead < 0:
        raise ShapeError(f"expand: the number of sizes provided ({len(shape)}) must be greater or equal to the "
                         f"number of dimensions in the tensor ({x.ndim})")
    for i, s in enumerate(x.shape):
        if s != 1 and s != shape[lead + i]:
            raise ShapeError(f"The expanded size of the tensor ({shape[lead + i]}) must match the existing size ({s}) "
                             f"at non-singleton dimension {lead + i}.  Target sizes: {list(shape)}.  "
                             f"Tensor sizes: {list(x.shape)}")
    return TensorType(tuple(shape), x.dtype)


defop("expand", _expand, kind="view", samples=lambda rng: [
    Sample([randn(rng, 3, 1)], {"shape": (3, 4)}),
    Sample([randn(rng, 4)], {"shape": (2, 3, 4)}),
])


@vjp_of("expand")
def _(ctx, g):
    return (g.sum_to_size(ctx.inputs[0].shape),)


# ---- basic indexing ------------------------------------------------------------------------------
# The index attr is normalized by the Tensor layer: one entry per input dim or new axis,
# ("i", k) an int, ("s", start, stop, step) a concrete slice, ("n",) a new axis of size 1.

def index_shape(shape: tuple[int, ...], index: tuple[tuple, ...]) -> tuple[int, ...]:
    out, d = [], 0
    for e in index:
        if e[0] == "n":
            out.append(1)
            continue
        if d >= len(shape):
            raise ShapeError(f"too many indices for tensor of dimension {len(shape)}")
        if e[0] == "i":
            if not 0 <= e[1] < shape[d]:
                raise ShapeError(f"index {e[1]} is out of bounds for dimension {d} with size {shape[d]}")
        else:
            out.append(len(range(e[1], e[2], e[3])))
        d += 1
    if d != len(shape):
        raise ShapeError(f"index covers {d} of the {len(shape)} dims of shape {fmt(shape)}")
    return tuple(out)


def _index(x: TensorType, *, index: tuple) -> TensorType:
    return TensorType(index_shape(x.shape, index), x.dtype)


def _index_grad(g: TensorType, *, index: tuple, shape: tuple[int, ...]) -> TensorType:
    if index_shape(shape, index) != g.shape:
        raise ShapeError(f"index_grad: gradient of shape {fmt(g.shape)} does not fit {index} of {fmt(shape)}")
    return TensorType(tuple(shape), g.dtype)


_IDX = (("i", 1), ("s", 0, 4, 2), ("n",))
defop("index", _index, kind="view", samples=lambda rng: [
    Sample([randn(rng, 3, 4)], {"index": _IDX}),
    Sample([randn(rng, 2, 3, 4)], {"index": (("s", 1, 2, 1), ("s", 0, 3, 1), ("i", 3))}),
])
defop("index_grad", _index_grad, kind="opaque", samples=lambda rng: [
    Sample([randn(rng, 2, 1)], {"index": _IDX, "shape": (3, 4)}),
])


@vjp_of("index")
def _(ctx, g):
    return (ctx.call("index_grad", g, index=ctx.attrs["index"], shape=tuple(ctx.inputs[0].shape)),)


@vjp_of("index_grad")
def _(ctx, g):
    return (ctx.call("index", g, index=ctx.attrs["index"]),)


def _cat(*xs: TensorType, axis: int) -> TensorType:
    if not xs:
        raise ShapeError("cat expects a non-empty list of tensors")
    dt = same_dtype(*xs)
    a = norm_axis(axis, xs[0].ndim)
    for x in xs[1:]:
        if x.ndim != xs[0].ndim or any(s != t for i, (s, t) in enumerate(zip(x.shape, xs[0].shape)) if i != a):
            raise ShapeError(f"Sizes of tensors must match except in dimension {a}: got shapes {fmt(xs[0].shape)} "
                             f"and {fmt(x.shape)}")
    shape = list(xs[0].shape)
    shape[a] = sum(x.shape[a] for x in xs)
    return TensorType(tuple(shape), dt)


defop("cat", _cat, kind="opaque", samples=lambda rng: [
    Sample([randn(rng, 3, 4), randn(rng, 2, 4)], {"axis": 0}),
    Sample([randn(rng, 2, 1, 3), randn(rng, 2, 2, 3), randn(rng, 2, 3, 3)], {"axis": 1}),
])


@vjp_of("cat")
def _(ctx, g):
    axis = ctx.attrs["axis"] % g.ndim
    out, start = [], 0
    for x, need in zip(ctx.inputs, ctx.needs):
        n = x.shape[axis]
        if need:
            index = tuple(("s", start, start + n, 1) if d == axis else ("s", 0, s, 1) for d, s in enumerate(g.shape))
            out.append(ctx.call("index", g, index=index))
        else:
            out.append(None)
        start += n
    return tuple(out)
