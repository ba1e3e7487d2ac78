"""JAX lowerings of convolution and its gradients (NCHW, attrs as (h, w) pairs; pooling is in pool.py).

The two convolution gradients are the transposes of conv2d as a linear map of its input or
of its weight (jax.linear_transpose), so XLA sees the same transposed convolutions that
jax.grad would produce, with no wasted forward pass.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
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
