"""numpy kernels for convolution and pooling.

Convolution is im2col through a strided view (no copy until the reshape) and one batched
matmul per call (BLAS); the input gradient sums kernel-offset slices instead of scattering.
Python loops run over kernel offsets (k*k), never over pixels or batch items.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ...ops.conv import out_size
from .registry import kernel


def _pad(x: np.ndarray, padding, value: float = 0.0) -> np.ndarray:
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def windows(xp: np.ndarray, k, stride, dilation, out_hw) -> np.ndarray:
    """View of shape (N, C, Ho, Wo, kh, kw) over a padded input."""
    n, c = xp.shape[:2]
    sn, sc, sh, sw = xp.strides
    return as_strided(
        xp,
        shape=(n, c, out_hw[0], out_hw[1], k[0], k[1]),
        strides=(sn, sc, sh * stride[0], sw * stride[1], sh * dilation[0], sw * dilation[1]),
        writeable=False,
    )


def _offset_slice(i: int, j: int, stride, dilation, out_hw) -> tuple[slice, slice]:
    hs, ws = i * dilation[0], j * dilation[1]
    return (slice(hs, hs + stride[0] * (out_hw[0] - 1) + 1, stride[0]),
            slice(ws, ws + stride[1] * (out_hw[1] - 1) + 1, stride[1]))


def _cols(x, k, stride, padding, dilation, groups, out_hw):
    """im2col: (G, N*Ho*Wo, Cg*kh*kw)."""
    n, c = x.shape[:2]
    win = windows(_pad(x, padding), k, stride, dilation, out_hw)
    cg = c // groups
    win = win.reshape(n, groups, cg, out_hw[0], out_hw[1], k[0], k[1])
    return win.transpose(1, 0, 3, 4, 2, 5, 6).reshape(groups, n * out_hw[0] * out_hw[1], cg * k[0] * k[1])


def _out_hw(hw, k, stride, padding, dilation):
    return (out_size(hw[0], k[0], stride[0], padding[0], dilation[0]),
            out_size(hw[1], k[1], stride[1], padding[1], dilation[1]))


@kernel("conv2d")
def conv2d(x, w, *, stride, padding, dilation, groups):
    n = x.shape[0]
    o, cg, kh, kw = w.shape
    ho, wo = _out_hw(x.shape[2:], (kh, kw), stride, padding, dilation)
    cols = _cols(x, (kh, kw), stride, padding, dilation, groups, (ho, wo))
    wm = w.reshape(groups, o // groups, cg * kh * kw).transpose(0, 2, 1)
    out = np.matmul(cols, wm)  # G, NHW, Og
    out = out.reshape(groups, n, ho, wo, o // groups).transpose(1, 0, 4, 2, 3)
    return np.ascontiguousarray(out).reshape(n, o, ho, wo)


@kernel("conv2d_weight_grad")
def conv2d_weight_grad(x, g, *, kernel_size, stride, padding, dilation, groups):
    n, o, ho, wo = g.shape
    cols = _cols(x, kernel_size, stride, padding, dilation, groups, (ho, wo))
    gm = g.reshape(n, groups, o // groups, ho, wo).transpose(1, 2, 0, 3, 4).reshape(groups, o // groups, n * ho * wo)
    dw = np.matmul(gm, cols)  # G, Og, Cg*kh*kw
    return dw.reshape(o, x.shape[1] // groups, kernel_size[0], kernel_size[1])


@kernel("conv2d_input_grad")
def conv2d_input_grad(g, w, *, input_hw, stride, padding, dilation, groups):
    n, o, ho, wo = g.shape
    _, cg, kh, kw = w.shape
    og = o // groups
    gm = g.reshape(n, groups, og, ho, wo).transpose(1, 0, 3, 4, 2).reshape(groups, n * ho * wo, og)
    dcols = np.matmul(gm, w.reshape(groups, og, cg * kh * kw))
    dcols = dcols.reshape(groups, n, ho, wo, cg, kh, kw).transpose(5, 6, 1, 0, 4, 2, 3)  # kh, kw, N, G, Cg, Ho, Wo
    h, wd = input_hw
    dxp = np.zeros((n, groups, cg, h + 2 * padding[0], wd + 2 * padding[1]), dtype=g.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[(..., *_offset_slice(i, j, stride, dilation, (ho, wo)))] += dcols[i, j]
    dx = dxp.reshape(n, groups * cg, h + 2 * padding[0], wd + 2 * padding[1])
    return dx[:, :, padding[0]:padding[0] + h, padding[1]:padding[1] + wd]


_ONE = (1, 1)


@kernel("max_pool2d")
def max_pool2d(x, *, kernel_size, stride, padding):
    ho, wo = _out_hw(x.shape[2:], kernel_size, stride, padding, _ONE)
    win = windows(_pad(x, padding, -np.inf), kernel_size, stride, _ONE, (ho, wo))
    return win.max(axis=(4, 5))


@kernel("max_pool2d_grad")
def max_pool2d_grad(g, x, *, input_hw, kernel_size, stride, padding):
    n, c, ho, wo = g.shape
    kh, kw = kernel_size
    win = windows(_pad(x, padding, -np.inf), kernel_size, stride, _ONE, (ho, wo))
    arg = win.reshape(n, c, ho, wo, kh * kw).argmax(axis=-1)  # first max wins, as in torch
    dxp = np.zeros((n, c, input_hw[0] + 2 * padding[0], input_hw[1] + 2 * padding[1]), dtype=g.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[(..., *_offset_slice(i, j, stride, _ONE, (ho, wo)))] += np.where(arg == i * kw + j, g, 0)
    return dxp[:, :, padding[0]:padding[0] + input_hw[0], padding[1]:padding[1] + input_hw[1]]


@kernel("avg_pool2d")
def avg_pool2d(x, *, kernel_size, stride, padding):
    # count_include_pad=True, torch's default: padding zeros count in the divisor
    ho, wo = _out_hw(x.shape[2:], kernel_size, stride, padding, _ONE)
    win = windows(_pad(x, padding), kernel_size, stride, _ONE, (ho, wo))
    return win.sum(axis=(4, 5)) / x.dtype.type(kernel_size[0] * kernel_size[1])


@kernel("avg_pool2d_grad")
def avg_pool2d_grad(g, *, input_hw, kernel_size, stride, padding):
    n, c, ho, wo = g.shape
    kh, kw = kernel_size
    dxp = np.zeros((n, c, input_hw[0] + 2 * padding[0], input_hw[1] + 2 * padding[1]), dtype=g.dtype)
    share = g / g.dtype.type(kh * kw)
    for i in range(kh):
        for j in range(kw):
            dxp[(..., *_offset_slice(i, j, stride, _ONE, (ho, wo)))] += share
    return dxp[:, :, padding[0]:padding[0] + input_hw[0], padding[1]:padding[1] + input_hw[1]]
