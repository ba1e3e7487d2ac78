"""JAX lowerings of convolution and pooling (NCHW, attrs as (h, w) pairs).

The two convolution gradients are the transposes of conv2d as a linear map of its input or
of its weight (jax.linear_transpose), so XLA sees the same transposed convolutions that
jax.grad would produce, with no wasted forward pass.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .lowering import PRECISION, lowering

Pair = Sequence[int]


def _pads(padding: Pair) -> list[tuple[int, int]]:
    return [(padding[0], padding[0]), (padding[1], padding[1])]


@lowering("conv2d")
def conv2d(x: jax.Array, w: jax.Array, *, stride: Pair, padding: Pair, dilation: Pair, groups: int) -> jax.Array:
    return lax.conv_general_dilated(
        x, w, window_strides=tuple(stride), padding=_pads(padding), rhs_dilation=tuple(dilation),
        dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=groups, precision=PRECISION,
    )


def _fit(hw: Pair, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair) -> list[int]:
    """The extent of the padded input the convolution actually reads, per spatial dim. Where the stride
    leaves rows unread, XLA's transposed convolution can fail a CHECK and abort the process (seen with
    jax 0.10: kernel 2x3, stride 2, padding 1 on 4x4), so the gradients are taken of an exact-fit
    convolution on the padded, cropped input instead."""
    out = []
    for n, k, s, p, d in zip(hw, kernel, stride, padding, dilation):
        o = (n + 2 * p - d * (k - 1) - 1) // s + 1
        out.append((o - 1) * s + d * (k - 1) + 1)
    return out


def _pad_crop(x: jax.Array, padding: Pair, fit: list[int]) -> jax.Array:
    z = np.zeros((), x.dtype)
    cfg = [(0, 0, 0), (0, 0, 0)] + [(p, L - n - p, 0) for n, p, L in zip(x.shape[2:], padding, fit)]
    return lax.pad(x, z, cfg)


@lowering("conv2d_input_grad")
def conv2d_input_grad(g: jax.Array, w: jax.Array, *, input_hw: Pair, stride: Pair, padding: Pair, dilation: Pair,
                      groups: int) -> jax.Array:
    fit = _fit(input_hw, w.shape[2:], stride, padding, dilation)
    x_type = jax.ShapeDtypeStruct((g.shape[0], w.shape[1] * groups, *fit), g.dtype)
    fwd = lambda x: conv2d(x, w, stride=stride, padding=(0, 0), dilation=dilation, groups=groups)
    g_fit = jax.linear_transpose(fwd, x_type)(g)[0]
    # back from the padded, cropped frame to the input's: drop the padding, zero-fill unread rows
    cfg = [(0, 0, 0), (0, 0, 0)] + [(-p, n + p - L, 0) for n, p, L in zip(input_hw, padding, fit)]
    return lax.pad(g_fit, np.zeros((), g.dtype), cfg)


@lowering("conv2d_weight_grad")
def conv2d_weight_grad(x: jax.Array, g: jax.Array, *, kernel_size: Pair, stride: Pair, padding: Pair,
                       dilation: Pair, groups: int) -> jax.Array:
    x_fit = _pad_crop(x, padding, _fit(x.shape[2:], kernel_size, stride, padding, dilation))
    w_type = jax.ShapeDtypeStruct((g.shape[1], x.shape[1] // groups, *kernel_size), g.dtype)
    fwd = lambda w: conv2d(x_fit, w, stride=stride, padding=(0, 0), dilation=dilation, groups=groups)
    return jax.linear_transpose(fwd, w_type)(g)[0]


def _window(kernel_size: Pair, stride: Pair, padding: Pair) -> dict:
    return {"window_dimensions": (1, 1, *kernel_size), "window_strides": (1, 1, *stride),
            "padding": [(0, 0), (0, 0), *_pads(padding)]}


# Init values are numpy constants, not jnp arrays: under jit a jnp constant is a tracer, and lax.reduce_window
# then emits a generic reduction that JAX cannot differentiate instead of reduce_window_max / _sum.

def _lowest(dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.floating):
        return np.array(-np.inf, dtype)
    return np.array(np.iinfo(dtype).min, dtype)


@lowering("max_pool2d")
def max_pool2d(x: jax.Array, *, kernel_size: Pair, stride: Pair, padding: Pair) -> jax.Array:
    # padding never wins a max: it is -inf
    return lax.reduce_window(x, _lowest(x.dtype), lax.max, **_window(kernel_size, stride, padding))


@lowering("max_pool2d_grad")
def max_pool2d_grad(g: jax.Array, x: jax.Array, *, input_hw: Pair, kernel_size: Pair, stride: Pair,
                    padding: Pair) -> jax.Array:
    # JAX differentiates a max window by select-and-scatter with `>=`: the first max of each window
    # gets the whole gradient, as in torch
    _, pull = jax.vjp(lambda v: max_pool2d(v, kernel_size=kernel_size, stride=stride, padding=padding), x)
    return pull(g)[0]


@lowering("avg_pool2d")
def avg_pool2d(x: jax.Array, *, kernel_size: Pair, stride: Pair, padding: Pair) -> jax.Array:
    # count_include_pad=True, torch's default: padding zeros count in the divisor
    s = lax.reduce_window(x, np.zeros((), x.dtype), lax.add, **_window(kernel_size, stride, padding))
    return s / jnp.asarray(kernel_size[0] * kernel_size[1], x.dtype)


@lowering("avg_pool2d_grad")
def avg_pool2d_grad(g: jax.Array, *, input_hw: Pair, kernel_size: Pair, stride: Pair, padding: Pair) -> jax.Array:
    x_type = jax.ShapeDtypeStruct((*g.shape[:2], *input_hw), g.dtype)
    fwd = lambda x: avg_pool2d(x, kernel_size=kernel_size, stride=stride, padding=padding)
    return jax.linear_transpose(fwd, x_type)(g)[0]
