"""numpy kernels for convolution and pooling.

Layout: every 4-d array these kernels return is a (N, C, H, W) *view* of memory laid out as
(C, N, H, W) ("CNHW"). numpy ufuncs keep the memory order of their inputs, so once the first
convolution returns a CNHW array the whole network's activations stay CNHW without any layout
pass, and every convolution becomes ONE large GEMM over all N*H*W positions:

    cols (C*kh*kw, N*Ho*Wo) = one strided copy of the padded input   (im2col)
    out  (O, N*Ho*Wo)       = W (O, C*kh*kw) @ cols                   (BLAS)

which is already the output in CNHW memory order: no transpose copy after the GEMM. With
NCHW memory (torch's layout, what a per-image loop would need) a batch of 16 small images
turns into 16 thin GEMMs or a transpose copy per conv. For batch 1 the two layouts coincide.
The kernels accept any strides (a user's NCHW input works unchanged); only speed depends on it.

The input gradient of a stride-1 convolution is a convolution of the gradient with the flipped
kernel; other strides sum kernel-offset slices (col2im without a scatter-add). Pooling takes a
running maximum over kernel offsets, each visiting only the outputs whose input lies inside the
image. Python loops run over kernel offsets (k*k), never over pixels or images.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ...ops.conv import out_size
from .registry import kernel


def _cn(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> the (C, N, H, W) view; contiguous when x is in CNHW memory order."""
    return x.transpose(1, 0, 2, 3)


def _padded_cn(x: np.ndarray, padding, value: float = 0.0) -> np.ndarray:
    """x as a (C, N, H + 2ph, W + 2pw) array; a view when there is no padding."""
    ph, pw = padding
    xc = _cn(x)
    if ph == 0 and pw == 0:
        return xc
    c, n, h, w = xc.shape
    xp = np.empty((c, n, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    if ph:
        xp[:, :, :ph] = value
        xp[:, :, h + ph:] = value
    if pw:
        xp[:, :, ph:h + ph, :pw] = value
        xp[:, :, ph:h + ph, w + pw:] = value
    xp[:, :, ph:h + ph, pw:w + pw] = xc
    return xp


def _out_hw(hw, k, stride, padding, dilation) -> tuple[int, int]:
    return (out_size(hw[0], k[0], stride[0], padding[0], dilation[0]),
            out_size(hw[1], k[1], stride[1], padding[1], dilation[1]))


def _clip(i: int, s: int, p: int, d: int, n_in: int, n_out: int) -> tuple[slice, slice]:
    """For kernel offset i (stride s, padding p, dilation d): the output positions r whose input position
    r*s + i*d - p falls inside [0, n_in), and those input positions, as two slices."""
    off = i * d - p
    r0 = max(0, -(off // s)) if off < 0 else 0
    if off < 0 and off + r0 * s < 0:
        r0 += 1
    r1 = min(n_out, (n_in - 1 - off) // s + 1) if n_in - 1 - off >= 0 else 0
    r1 = max(r1, r0)
    return slice(r0, r1), slice(off + r0 * s, off + (r1 - 1) * s + 1 if r1 > r0 else off + r0 * s, s)


def _cols(x: np.ndarray, k, stride, padding, dilation, out_hw) -> np.ndarray:
    """im2col in CNHW order: (C*kh*kw, N*Ho*Wo); no copy for a 1x1 stride-1 conv of a CNHW array.

    Large outputs: pad once, then one strided copy of all kernel offsets (long inner rows). Small
    outputs (deep layers, where most of each window is padding): per kernel offset, copy the valid
    rectangle straight from the input and zero the rest, skipping the padded copy."""
    kh, kw = k
    xc = _cn(x)
    c, n, h, w = xc.shape
    ho, wo = out_hw
    if (kh, kw) == (1, 1) and stride == (1, 1) and padding == (0, 0):
        return xc.reshape(c, -1)  # a view when x is CNHW in memory
    if ho * wo <= 64:
        cols = np.empty((c, kh, kw, n, ho, wo), dtype=x.dtype)
        for i in range(kh):
            ro, ri = _clip(i, stride[0], padding[0], dilation[0], h, ho)
            for j in range(kw):
                co, ci = _clip(j, stride[1], padding[1], dilation[1], w, wo)
                dst = cols[:, i, j]
                if (ro.start, ro.stop, co.start, co.stop) != (0, ho, 0, wo):
                    dst[...] = 0
                dst[:, :, ro, co] = xc[:, :, ri, ci]
        return cols.reshape(c * kh * kw, n * ho * wo)
    xp = _padded_cn(x, padding)
    sc, sn, sh, sw = xp.strides
    win = as_strided(xp, shape=(c, kh, kw, n, ho, wo),
                     strides=(sc, sh * dilation[0], sw * dilation[1], sn, sh * stride[0], sw * stride[1]),
                     writeable=False)
    cols = np.empty(win.shape, dtype=x.dtype)
    np.copyto(cols, win)
    return cols.reshape(c * kh * kw, n * ho * wo)


def _rows(g: np.ndarray) -> np.ndarray:
    """An (N, O, Ho, Wo) gradient as the (O, N*Ho*Wo) matrix the GEMMs read (free when g is CNHW)."""
    return _cn(g).reshape(g.shape[1], -1)


def _grouped(a: np.ndarray, groups: int) -> np.ndarray:
    return a.reshape(groups, a.shape[0] // groups, a.shape[1])


@kernel("conv2d")
def conv2d(x, w, *, stride, padding, dilation, groups):
    n = x.shape[0]
    o, cg, kh, kw = w.shape
    ho, wo = _out_hw(x.shape[2:], (kh, kw), stride, padding, dilation)
    cols = _cols(x, (kh, kw), stride, padding, dilation, (ho, wo))
    wm = w.reshape(o, cg * kh * kw)
    if groups == 1:
        out = wm @ cols  # (O, N*Ho*Wo)
    else:
        out = np.matmul(_grouped(wm, groups), _grouped(cols, groups)).reshape(o, -1)
    return out.reshape(o, n, ho, wo).transpose(1, 0, 2, 3)


@kernel("conv2d_weight_grad")
def conv2d_weight_grad(x, g, *, kernel_size, stride, padding, dilation, groups):
    n, o, ho, wo = g.shape
    cols = _cols(x, kernel_size, stride, padding, dilation, (ho, wo))
    gm = _rows(g)
    # written into its final 4-d array, so the gradient owns its memory (no copy when it becomes .grad)
    dw = np.empty((o, x.shape[1] // groups, kernel_size[0], kernel_size[1]), dtype=np.result_type(x, g))
    if groups == 1:
        np.matmul(gm, cols.T, out=dw.reshape(o, -1))  # (O, C*kh*kw)
    else:
        np.matmul(_grouped(gm, groups), _grouped(cols, groups).transpose(0, 2, 1),
                  out=dw.reshape(groups, o // groups, -1))
    return dw


@kernel("conv2d_input_grad")
def conv2d_input_grad(g, w, *, input_hw, stride, padding, dilation, groups):
    n, o, ho, wo = g.shape
    _, cg, kh, kw = w.shape
    full = (dilation[0] * (kh - 1) - padding[0], dilation[1] * (kw - 1) - padding[1])
    h, wd = input_hw
    if (stride == (1, 1) and groups == 1 and min(full) >= 0 and (kh, kw) != (1, 1) and n * ho * wo > 128
            and o * h * wd <= 2 * cg * ho * wo):
        # the adjoint of a stride-1 convolution is a convolution of the gradient with the flipped, transposed
        # kernel: one im2col copy (O*k*k rows) and one GEMM, instead of a GEMM into C*k*k rows plus k*k
        # strided adds (col2im) that cost as much as the GEMM itself. It pays when the gradient has no more
        # channels than the input (ResNet's blocks), and not for tiny images (deep layers at small batch),
        # where copying the flipped weights outweighs the activations.
        return conv2d(g, w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3), stride=stride, padding=full, dilation=dilation,
                      groups=1)
    wm = w.reshape(o, cg * kh * kw)
    gm = _rows(g)
    if groups == 1:
        dcols = wm.T @ gm  # (C*kh*kw, N*Ho*Wo)
    else:
        dcols = np.matmul(_grouped(wm, groups).transpose(0, 2, 1), _grouped(gm, groups))
    c = cg * groups
    dcols = dcols.reshape(c, kh, kw, n, ho, wo)
    if (kh, kw) == (1, 1) and stride == (1, 1) and padding == (0, 0):
        return dcols.reshape(c, n, h, wd).transpose(1, 0, 2, 3)
    # col2im without a padded buffer: each kernel offset adds its valid rectangle (contiguous CNHW result)
    dx = np.zeros((c, n, h, wd), dtype=g.dtype)
    for i in range(kh):
        ro, ri = _clip(i, stride[0], padding[0], dilation[0], h, ho)
        for j in range(kw):
            co, ci = _clip(j, stride[1], padding[1], dilation[1], wd, wo)
            dx[:, :, ri, ci] += dcols[:, i, j, :, ro, co]
    return dx.transpose(1, 0, 2, 3)


# ---- pooling ----------------------------------------------------------------------------------------

_ONE = (1, 1)


def _phase_split(xc: np.ndarray, stride) -> dict[tuple[int, int], np.ndarray]:
    """A (C, N, H, W) array as its stride phases: (p, q) -> the contiguous copy of xc[:, :, p::sh, q::sw].
    Every kernel offset of a strided window then reads one phase at a shift, with unit stride."""
    return {(p, q): np.ascontiguousarray(xc[:, :, p::stride[0], q::stride[1]])
            for p in range(stride[0]) for q in range(stride[1])}


def _phase_clip(i: int, s: int, pad: int, n_phase: int, n_out: int) -> tuple[int, slice, slice]:
    """Kernel offset i reads input row r*s + i - pad = phase (i - pad) % s, row r + (i - pad) // s of that
    phase: -> (phase, output rows, phase rows), the rows clipped to the image."""
    q = i - pad
    off = q // s
    r0, r1 = max(0, -off), min(n_out, n_phase - off)
    r1 = max(r0, r1)
    return q % s, slice(r0, r1), slice(r0 + off, r1 + off)


def _pool_windows(xc: np.ndarray, kernel_size, stride, padding, out_hw):
    """(phases of xc, [(output slice, phase key, phase slice) per kernel offset in row-major order])."""
    ph = _phase_split(xc, stride) if stride != (1, 1) else {(0, 0): xc}
    offsets = []
    for i in range(kernel_size[0]):
        for j in range(kernel_size[1]):
            p, ro, ri = _phase_clip(i, stride[0], padding[0], -(-(xc.shape[2] - (i - padding[0]) % stride[0])
                                                                  // stride[0]), out_hw[0])
            q, co, ci = _phase_clip(j, stride[1], padding[1], -(-(xc.shape[3] - (j - padding[1]) % stride[1])
                                                                  // stride[1]), out_hw[1])
            offsets.append(((slice(None), slice(None), ro, co), (p, q), (slice(None), slice(None), ri, ci)))
    return ph, offsets


def _pool_max(ph, offsets, shape) -> np.ndarray:
    """Running maximum over the kernel offsets: (C, N, Ho, Wo). Padding never wins (it is -inf in torch), so
    each offset only visits the outputs whose input lies inside the image."""
    some = next(iter(ph.values()))
    out = np.full(shape, -np.inf, dtype=some.dtype)
    for so, key, si in offsets:
        dst = out[so]
        np.maximum(dst, ph[key][si], out=dst)
    return out


@kernel("max_pool2d")
def max_pool2d(x, *, kernel_size, stride, padding):
    ho, wo = _out_hw(x.shape[2:], kernel_size, stride, padding, _ONE)
    ph, offsets = _pool_windows(_cn(x), kernel_size, stride, padding, (ho, wo))
    return _pool_max(ph, offsets, (x.shape[1], x.shape[0], ho, wo)).transpose(1, 0, 2, 3)


@kernel("max_pool2d_grad")
def max_pool2d_grad(g, x, *, input_hw, kernel_size, stride, padding):
    """Each output's gradient goes to the FIRST maximum of its window in row-major order (torch's and
    XLA's choice on ties): kernel offsets are visited in that order, and an output whose maximum was
    found is marked taken. Per offset: a few branch-free passes over output-sized arrays (the gradient
    is selected bitwise, as in the where kernel: a masked copy would branch per element), no scatter-add.
    A strided window works on the stride phases of the input, so every pass has unit stride; the phases of
    the gradient are interleaved back at the end."""
    n, c, ho, wo = g.shape
    h, w = input_hw
    gc = np.ascontiguousarray(_cn(g))
    bits = np.int32 if gc.dtype == np.float32 else np.int64
    gbits = gc.view(bits)
    ph, offsets = _pool_windows(_cn(x), kernel_size, stride, padding, (ho, wo))
    m = _pool_max(ph, offsets, gc.shape)
    dph = {k: np.zeros(v.shape, dtype=g.dtype) for k, v in ph.items()}
    taken = np.zeros(m.shape, dtype=bool)
    hit = np.empty(m.shape, dtype=bool)
    mask = np.empty(m.shape, dtype=bits)
    part = np.empty(m.shape, dtype=bits)
    for so, key, si in offsets:
        hs, ts, ms, ps = hit[so], taken[so], mask[so], part[so]
        np.equal(ph[key][si], m[so], out=hs)
        np.greater(hs, ts, out=hs)  # equal, and not taken by an earlier offset
        np.logical_or(ts, hs, out=ts)
        np.subtract(0, hs, out=ms, dtype=bits)
        np.bitwise_and(gbits[so], ms, out=ps)
        dst = dph[key][si]
        np.add(dst, ps.view(g.dtype), out=dst)
    if stride == (1, 1):
        dx = dph[(0, 0)]
    else:
        dx = np.empty((c, n, h, w), dtype=g.dtype)
        for (p, q), d in dph.items():
            dx[:, :, p::stride[0], q::stride[1]] = d
    return dx.transpose(1, 0, 2, 3)


@kernel("avg_pool2d")
def avg_pool2d(x, *, kernel_size, stride, padding):
    # count_include_pad=True, torch's default: padding zeros count in the divisor
    ho, wo = _out_hw(x.shape[2:], kernel_size, stride, padding, _ONE)
    h, w = x.shape[2:]
    if padding == (0, 0) and kernel_size == stride == (h, w):  # global pooling (ResNet's head)
        return np.sum(x, axis=(2, 3), keepdims=True) / x.dtype.type(h * w)
    xc = _cn(x)
    out = np.zeros(xc.shape[:2] + (ho, wo), dtype=x.dtype)
    for i in range(kernel_size[0]):
        ro, ri = _clip(i, stride[0], padding[0], 1, h, ho)
        for j in range(kernel_size[1]):
            co, ci = _clip(j, stride[1], padding[1], 1, w, wo)
            out[:, :, ro, co] += xc[:, :, ri, ci]
    out /= x.dtype.type(kernel_size[0] * kernel_size[1])
    return out.transpose(1, 0, 2, 3)


@kernel("avg_pool2d_grad")
def avg_pool2d_grad(g, *, input_hw, kernel_size, stride, padding):
    n, c, ho, wo = g.shape
    kh, kw = kernel_size
    h, w = input_hw
    share = _cn(g) / g.dtype.type(kh * kw)
    dx = np.zeros((c, n, h, w), dtype=g.dtype)
    if padding == (0, 0) and kernel_size == stride == (h, w):  # global pooling
        dx[...] = share
        return dx.transpose(1, 0, 2, 3)
    for i in range(kh):
        ro, ri = _clip(i, stride[0], padding[0], 1, h, ho)
        for j in range(kw):
            co, ci = _clip(j, stride[1], padding[1], 1, w, wo)
            dx[:, :, ri, ci] += share[:, :, ro, co]
    return dx.transpose(1, 0, 2, 3)
