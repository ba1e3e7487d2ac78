"""2-d pooling: max (with or without the winners' indices) and average, with their gradients.
Max pooling's gradient always scatters to recorded indices (torch's scheme), never searches windows again.
Attrs are (h, w) pairs; inputs are (N, C, H, W)."""
from __future__ import annotations

import numpy as np

from ..ir.types import TensorType, int64
from .conv import out_size
from .registry import Sample, ShapeError, defop, fmt, randn, vjp_of


def _pool(x: TensorType, *, kernel_size, stride, padding, **_) -> TensorType:
    if x.ndim != 4:
        raise ShapeError(f"pooling expects a 4-d input (N, C, H, W), got {fmt(x.shape)}")
    if padding[0] * 2 > kernel_size[0] or padding[1] * 2 > kernel_size[1]:
        raise ShapeError(f"pad should be at most half of effective kernel size, but got pad={padding} and "
                         f"kernel_size={kernel_size}")
    ho = out_size(x.shape[2], kernel_size[0], stride[0], padding[0])
    wo = out_size(x.shape[3], kernel_size[1], stride[1], padding[1])
    if ho <= 0 or wo <= 0:
        raise ShapeError(f"pooling: input {fmt(x.shape)} is too small for kernel {kernel_size}: output {ho}x{wo}")
    return TensorType(x.shape[:2] + (ho, wo), x.dtype)


def _pool_grad(g: TensorType, *rest: TensorType, input_hw, **_) -> TensorType:
    return TensorType(g.shape[:2] + tuple(input_hw), g.dtype)


def _pool_with_indices(x: TensorType, **attrs) -> list[TensorType]:
    out = _pool(x, **attrs)
    return [out, TensorType(out.shape, int64)]


def _indices_grad(g: TensorType, indices: TensorType, *, input_hw, **_) -> TensorType:
    if indices.shape != g.shape or indices.dtype != int64:
        raise ShapeError(f"max_pool2d_indices_grad: indices {fmt(indices.shape)} {indices.dtype.name} do not match "
                         f"the gradient {fmt(g.shape)} (int64 indices of the pooled output)")
    return _pool_grad(g, input_hw=input_hw)


def _window_indices(rng: np.random.Generator, shape, input_hw, kernel_size, stride, padding) -> np.ndarray:
    """Valid max-pool indices for samples: per output, a random in-image position of its window
    (overlapping windows may pick the same input, as real maxima do)."""
    n, c, ho, wo = shape
    h, w = input_hw
    r = np.arange(ho)[:, None] * stride[0] - padding[0] + rng.integers(0, kernel_size[0], (n, c, ho, wo))
    q = np.arange(wo) * stride[1] - padding[1] + rng.integers(0, kernel_size[1], (n, c, ho, wo))
    return (np.clip(r, 0, h - 1) * w + np.clip(q, 0, w - 1)).astype(np.int64)


_P1 = {"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0)}
_P2 = {"kernel_size": (3, 3), "stride": (2, 1), "padding": (1, 1)}
defop("max_pool2d", _pool, kind="opaque", samples=lambda rng: [
    Sample([randn(rng, 2, 3, 6, 6)], _P1), Sample([randn(rng, 1, 2, 5, 4)], _P2)])
defop("max_pool2d_with_indices", _pool_with_indices, kind="opaque", nout=2, samples=lambda rng: [
    Sample([randn(rng, 2, 3, 6, 6)], _P1), Sample([randn(rng, 1, 2, 5, 4)], _P2),
    Sample([randn(rng, 2, 2, 7, 7)], {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1)})])
defop("max_pool2d_indices_grad", _indices_grad, kind="opaque",
      nondiff="second derivative of max pooling is not implemented", samples=lambda rng: [
          Sample([randn(rng, 2, 3, 3, 3), _window_indices(rng, (2, 3, 3, 3), (6, 6), **_P1)],
                 {**_P1, "input_hw": (6, 6)}),
          Sample([randn(rng, 1, 2, 3, 4), _window_indices(rng, (1, 2, 3, 4), (5, 4), **_P2)],
                 {**_P2, "input_hw": (5, 4)})])
defop("avg_pool2d", _pool, kind="opaque", samples=lambda rng: [
    Sample([randn(rng, 2, 3, 6, 6)], _P1), Sample([randn(rng, 1, 2, 5, 4)], _P2)])
defop("avg_pool2d_grad", _pool_grad, kind="opaque", samples=lambda rng: [
    Sample([randn(rng, 2, 3, 3, 3)], {**_P1, "input_hw": (6, 6)}),
    Sample([randn(rng, 1, 2, 3, 4)], {**_P2, "input_hw": (5, 4)})])


def _pool_attrs(attrs: dict) -> dict:
    return {k: attrs[k] for k in ("kernel_size", "stride", "padding")}


@vjp_of("max_pool2d")
def _(ctx, g):
    # (F.max_pool2d records the winners itself when a gradient is wanted; a bare max_pool2d node finds them now)
    x = ctx.inputs[0]
    _, indices = ctx.call("max_pool2d_with_indices", x, **_pool_attrs(ctx.attrs))
    return (ctx.call("max_pool2d_indices_grad", g, indices, input_hw=tuple(x.shape[2:]), **_pool_attrs(ctx.attrs)),)


@vjp_of("max_pool2d_with_indices")
def _(ctx, g, _unused_indices_grad=None):
    x, indices = ctx.inputs[0], ctx.outputs[1]
    return (ctx.call("max_pool2d_indices_grad", g, indices, input_hw=tuple(x.shape[2:]), **_pool_attrs(ctx.attrs)),)


@vjp_of("avg_pool2d")
def _(ctx, g):
    x = ctx.inputs[0]
    return (ctx.call("avg_pool2d_grad", g, input_hw=tuple(x.shape[2:]), **_pool_attrs(ctx.attrs)),)


@vjp_of("avg_pool2d_grad")
def _(ctx, z):
    return (ctx.call("avg_pool2d", z, **_pool_attrs(ctx.attrs)),)
