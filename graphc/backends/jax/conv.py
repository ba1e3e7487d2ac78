"""JAX lowerings of convolution and its gradients (NCHW, attrs as (h, w) pairs; pooling is in pool.py).

The two convolution gradients are the transposes of conv2d as a linear map of its input or
of its weight (jax.linear_transpose), so XLA sees the same transposed convolutions that
jax.grad would produce, with no wasted forward pass; except where the kernel is wider than the
image it slides over (_wider_than_image), which XLA's CPU backend runs far slower.
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


def _wider_than_image(hw: Pair, kernel: Pair, dilation: Pair) -> bool:
    """Whether the (dilated) kernel is larger than the image it slides over, padding aside: XLA's algebraic
    simplifier then swaps the convolution's operands, and its CPU backend runs the swapped form in a naive loop
    instead of its library kernels (ResNet-18's 3x3 convolutions on layer4's 2x2 maps at batch 16: 247 ms each, against
    15 ms over an explicitly padded input). Such convolutions get their padding as a copy (lax.pad) instead."""
    return any(d * (k - 1) + 1 > n for n, k, d in zip(hw, kernel, dilation))


def _zero_pad(x: jax.Array, pads: Sequence[tuple[int, int, int]]) -> jax.Array:
    """x with (low, high, interior) zero padding on its two spatial dims."""
    return lax.pad(x, np.zeros((), x.dtype), [(0, 0, 0), (0, 0, 0), *pads])


@lowering("conv2d")
def conv2d(x: jax.Array, w: jax.Array, *, stride: Pair, padding: Pair, dilation: Pair, groups: int) -> jax.Array:
    if any(padding) and _wider_than_image(x.shape[2:], w.shape[2:], dilation):
        x, padding = _zero_pad(x, [(p, p, 0) for p in padding]), (0, 0)
    return lax.conv_general_dilated(
        x, w, window_strides=tuple(stride), padding=_pads(padding), rhs_dilation=tuple(dilation),
        dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=groups, precision=PRECISION,
    )


def _fit(hw: Pair, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair) -> list[int]:
    """The extent of the padded input the convolution actually reads, per spatial dim. Where the stride
    leaves rows unread, XLA's transposed convolution can fail a CHECK and abort the process (seen with
    jax 0.10: kernel 2x3, stride 2, padding 1 on 4x4), so the gradients are taken of an exact-fit
    convolution, one that reads every row of its (padded, cropped) input."""
    out = []
    for n, k, s, p, d in zip(hw, kernel, stride, padding, dilation):
        o = (n + 2 * p - d * (k - 1) - 1) // s + 1
        out.append((o - 1) * s + d * (k - 1) + 1)
    return out


def _exact_fit(hw: Pair, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair) \
        -> tuple[list[int], list[tuple[int, int]]] | None:
    """(rows of the input read, (low, high) padding) per spatial dim of the exact-fit convolution, with
    the padding inside the convolution: the high side pads less where the stride leaves padding unread,
    and the input is cropped where it leaves input rows unread. Nothing is copied, unlike padding the
    input with lax.pad first (which cost ResNet-18's step 15% on CPU: a padded copy of every activation
    and XLA's extra work on it). None where the read window ends inside the low padding (no input read)."""
    rows, pads = [], []
    for n, p, read in zip(hw, padding, _fit(hw, kernel, stride, padding, dilation)):
        hi = read - n - p
        if n + min(hi, 0) <= 0:
            return None
        rows.append(n + min(hi, 0))
        pads.append((p, max(hi, 0)))
    return rows, pads


def _conv(x: jax.Array, w: jax.Array, stride: Pair, pads: list[tuple[int, int]], dilation: Pair,
          groups: int) -> jax.Array:
    return lax.conv_general_dilated(
        x, w, window_strides=tuple(stride), padding=pads, rhs_dilation=tuple(dilation),
        dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=groups, precision=PRECISION,
    )


def _pad_crop(x: jax.Array, padding: Pair, fit: list[int]) -> jax.Array:
    return _zero_pad(x, [(p, L - n - p, 0) for n, p, L in zip(x.shape[2:], padding, fit)])


def _input_grad_over_padded(g: jax.Array, w: jax.Array, input_hw: Pair, stride: Pair, padding: Pair,
                            dilation: Pair, groups: int) -> jax.Array | None:
    """The input gradient as a plain convolution of the gradient, spread by the stride and padded (one lax.pad),
    with the flipped kernel: what XLA's transposed convolution computes, over an image no smaller than the
    kernel (see _wider_than_image). None where the convolution pads by more than its kernel reaches."""
    kernel = w.shape[2:]
    low = [d * (k - 1) - p for k, p, d in zip(kernel, padding, dilation)]
    if min(low) < 0:
        return None
    high = [n - 1 - (o - 1) * s + p for n, o, s, p in zip(input_hw, g.shape[2:], stride, padding)]
    o, i = w.shape[:2]  # (out, in / groups): per group, the kernel with in and out swapped, flipped in space
    wt = w.reshape(groups, o // groups, i, *kernel).swapaxes(1, 2).reshape(groups * i, o // groups, *kernel)
    gp = _zero_pad(g, [(lo, hi, s - 1) for lo, hi, s in zip(low, high, stride)])
    return lax.conv_general_dilated(
        gp, wt[:, :, ::-1, ::-1], window_strides=(1, 1), padding="VALID", rhs_dilation=tuple(dilation),
        dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=groups, precision=PRECISION,
    )


@lowering("conv2d_input_grad")
def conv2d_input_grad(g: jax.Array, w: jax.Array, *, input_hw: Pair, stride: Pair, padding: Pair, dilation: Pair,
                      groups: int) -> jax.Array:
    if _wider_than_image(g.shape[2:], w.shape[2:], dilation):
        dx = _input_grad_over_padded(g, w, input_hw, stride, padding, dilation, groups)
        if dx is not None:
            return dx
    fit = _fit(input_hw, w.shape[2:], stride, padding, dilation)
    if all(L == n + 2 * p for n, p, L in zip(input_hw, padding, fit)):
        # every row read (all stride-1 convolutions): the transpose of the convolution itself, no copies. Not
        # the exact-fit convolution with asymmetric padding: XLA aborted on its transpose (4x4, kernel 2x3,
        # stride 2, padding 1: "Window dimensions do not match RHS shape", as for jax.grad's own)
        rows, pads, crop = list(input_hw), _pads(padding), None
    else:  # the padded, cropped frame (lax.pad), transposed, and back to the input's frame
        rows, pads = fit, [(0, 0), (0, 0)]
        crop = [(-p, n + p - L, 0) for n, p, L in zip(input_hw, padding, fit)]
    x_type = jax.ShapeDtypeStruct((g.shape[0], w.shape[1] * groups, *rows), g.dtype)
    fwd = lambda x: _conv(x, w, stride, pads, dilation, groups)
    g_fit = jax.linear_transpose(fwd, x_type)(g)[0]
    return g_fit if crop is None else _zero_pad(g_fit, crop)


@lowering("conv2d_weight_grad")
def conv2d_weight_grad(x: jax.Array, g: jax.Array, *, kernel_size: Pair, stride: Pair, padding: Pair,
                       dilation: Pair, groups: int) -> jax.Array:
    exact = _exact_fit(x.shape[2:], kernel_size, stride, padding, dilation)
    if exact is None:
        x_fit, pads = _pad_crop(x, padding, _fit(x.shape[2:], kernel_size, stride, padding, dilation)), [(0, 0)] * 2
    else:
        rows, pads = exact
        x_fit = x[:, :, :rows[0], :rows[1]] if rows != list(x.shape[2:]) else x
    w_type = jax.ShapeDtypeStruct((g.shape[1], x.shape[1] // groups, *kernel_size), g.dtype)
    fwd = lambda w: _conv(x_fit, w, stride, pads, dilation, groups)
    return jax.linear_transpose(fwd, w_type)(g)[0]
