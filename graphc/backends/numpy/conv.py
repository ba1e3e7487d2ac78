"""numpy kernels for convolution and its two gradients (pooling lives in pool.py).

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
kernel; other strides sum kernel-offset slices (col2im without a scatter-add). Python loops run
over kernel offsets (k*k), never over pixels or images.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ...ops.conv import out_size
from . import conv_c
from .registry import kernel

_SHORT_PRODUCT = 64  # most GEMM columns (N*Ho*Wo) for which the input gradient's product runs transposed


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

    Stride 1 with the output as wide as the input: runs of whole shifted planes (_cols_same_width).
    Other large outputs: pad once, then one strided copy of all kernel offsets. Small outputs (deep
    layers, where most of each window is padding): per kernel offset, copy the valid rectangle
    straight from the input and zero the rest, skipping the padded copy."""
    kh, kw = k
    xc = _cn(x)
    c, n, h, w = xc.shape
    ho, wo = out_hw
    if (kh, kw) == (1, 1) and stride == (1, 1) and padding == (0, 0):
        return xc.reshape(c, -1)  # a view when x is CNHW in memory
    if ROW_RUNS and stride == (1, 1) and wo == w >= 4:
        return _cols_same_width(xc, k, padding, dilation, ho)
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


ROW_RUNS = True


def _cols_same_width(xc: np.ndarray, k, padding, dilation, ho: int) -> np.ndarray:
    """im2col for a stride-1 convolution whose output is as wide as its input (ResNet's 3x3, padding 1),
    copied in runs of ho*W elements instead of rows of Wo.

    Only the rows are padded (a copy in runs of H*W); on that (Hp, W) grid, kernel offset (i, j) of every
    output position (r, q) sits at flat index (r + i*dh)*W + q + j*dw - pw of its plane, so the columns of one
    (channel, offset, image) are ONE contiguous run of the padded plane, shifted by j*dw - pw. A shift moves
    the first or last |shift| columns of each row onto the neighbouring row (or plane, or the margin of pw
    elements around the buffer): exactly the positions that read padding, set to zero afterwards. The old
    copy moved rows of Wo elements (16 at ResNet's 16x16 maps): 2-3x slower."""
    c, n, h, w = xc.shape
    kh, kw = k
    (ph, pw), (dh, dw) = padding, dilation
    hp = h + 2 * ph
    plane = hp * w
    buf = np.empty(c * n * plane + 2 * pw, dtype=xc.dtype)
    buf[:pw] = 0
    buf[buf.size - pw:] = 0
    xv = buf[pw:pw + c * n * plane].reshape(c, n, hp, w)
    xv[:, :, :ph] = 0
    xv[:, :, ph + h:] = 0
    xv[:, :, ph:ph + h] = xc
    it = buf.itemsize
    # starts at buf[0], i.e. plane index -pw: offset (i, j) adds i*dh*W + j*dw, so it reads from j*dw - pw
    win = as_strided(buf, shape=(c, kh, kw, n, ho * w), strides=(n * plane * it, dh * w * it, dw * it, plane * it, it),
                     writeable=False)
    cols = np.empty((c, kh, kw, n, ho, w), dtype=xc.dtype)
    np.copyto(cols.reshape(win.shape), win)
    for j in range(kw):
        shift = j * dw - pw
        if shift < 0:
            cols[:, :, j, :, :, :-shift] = 0
        elif shift > 0:
            cols[:, :, j, :, :, w - shift:] = 0
    return cols.reshape(c * kh * kw, n * ho * w)


def _rows(g: np.ndarray) -> np.ndarray:
    """An (N, O, Ho, Wo) gradient as the (O, N*Ho*Wo) matrix the GEMMs read (free when g is CNHW)."""
    return _cn(g).reshape(g.shape[1], -1)


def _grouped(a: np.ndarray, groups: int) -> np.ndarray:
    return a.reshape(groups, a.shape[0] // groups, a.shape[1])


@kernel("conv2d")
def conv2d(x, w, *, stride, padding, dilation, groups):
    n = x.shape[0]
    o, cg, kh, kw = w.shape
    if conv_c.applies((x.dtype, w.dtype), (kh, kw), stride, dilation, groups, padding, cg * kh * kw, o):
        done = conv_c.conv2d(x, w, padding)
        if done is not None:
            return done
    ho, wo = _out_hw(x.shape[2:], (kh, kw), stride, padding, dilation)
    cols = _cols(x, (kh, kw), stride, padding, dilation, (ho, wo))
    wm = w.reshape(o, cg * kh * kw)
    if groups == 1:
        out = wm @ cols  # (O, N*Ho*Wo)
    else:
        out = np.matmul(_grouped(wm, groups), _grouped(cols, groups)).reshape(o, -1)
    return out.reshape(o, n, ho, wo).transpose(1, 0, 2, 3)


@kernel("conv2d_weight_grad")
def conv2d_weight_grad(x, g, *, kernel_size, stride, padding, dilation, groups, out=None):
    n, o, ho, wo = g.shape
    if conv_c.applies((x.dtype, g.dtype), kernel_size, stride, dilation, groups, padding,
                      x.shape[1] * kernel_size[0] * kernel_size[1], o):
        done = conv_c.weight_grad(x, g, kernel_size, padding, out)
        if done is not None:
            return done
    cols = _cols(x, kernel_size, stride, padding, dilation, (ho, wo))
    gm = _rows(g)
    # written into its final 4-d array, so the gradient owns its memory (no copy when it becomes .grad); out: the
    # parameter's old .grad, a C-contiguous array of this type that the step throws away (graphc/passes/memory.py)
    dw = np.empty((o, x.shape[1] // groups, kernel_size[0], kernel_size[1]), dtype=np.result_type(x, g)) \
        if out is None else out
    if groups == 1:
        np.matmul(gm, cols.T, out=dw.reshape(o, -1))  # (O, C*kh*kw)
    else:
        np.matmul(_grouped(gm, groups), _grouped(cols, groups).transpose(0, 2, 1),
                  out=dw.reshape(groups, o // groups, -1))
    return dw


conv2d_weight_grad.supports_out = True


@kernel("conv2d_input_grad")
def conv2d_input_grad(g, w, *, input_hw, stride, padding, dilation, groups):
    n, o, ho, wo = g.shape
    _, cg, kh, kw = w.shape
    if conv_c.applies((g.dtype, w.dtype), (kh, kw), stride, dilation, groups, padding, o * kh * kw, cg):
        done = conv_c.input_grad(g, w, padding)
        if done is not None:
            return done
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
    hp, wp = h + 2 * padding[0], wd + 2 * padding[1]
    if stride == (1, 1) and groups == 1 and o <= 32 and hp * wp <= 1.5 * ho * wo:
        return _input_grad_flat(g, w, input_hw, padding, dilation)
    wm = w.reshape(o, cg * kh * kw)
    gm = _rows(g)
    pointwise = (kh, kw) == (1, 1) and stride == (1, 1) and padding == (0, 0)
    if groups == 1 and n * ho * wo <= _SHORT_PRODUCT and not pointwise:
        # the same product, transposed: OpenBLAS streams a weight that is not in the cache 25-40% faster as the
        # right operand of a short product than as a transposed left one (deep layers at small batch, where the
        # weight's read is the whole cost); the col2im below reads the small (C*kh*kw, N*Ho*Wo) view in place
        dcols = (gm.T @ wm).T
    elif groups == 1:
        dcols = wm.T @ gm  # (C*kh*kw, N*Ho*Wo)
    else:
        dcols = np.matmul(_grouped(wm, groups).transpose(0, 2, 1), _grouped(gm, groups))
    c = cg * groups
    dcols = dcols.reshape(c, kh, kw, n, ho, wo)
    if pointwise:
        return dcols.reshape(c, n, h, wd).transpose(1, 0, 2, 3)
    # col2im without a padded buffer: each kernel offset adds its valid rectangle (contiguous CNHW result)
    dx = np.zeros((c, n, h, wd), dtype=g.dtype)
    for i in range(kh):
        ro, ri = _clip(i, stride[0], padding[0], dilation[0], h, ho)
        for j in range(kw):
            co, ci = _clip(j, stride[1], padding[1], dilation[1], wd, wo)
            dx[:, :, ri, ci] += dcols[:, i, j, :, ro, co]
    return dx.transpose(1, 0, 2, 3)


def _input_grad_flat(g: np.ndarray, w: np.ndarray, input_hw, padding, dilation) -> np.ndarray:
    """col2im with contiguous adds, for stride 1 and few output channels (a thin, memory-bound GEMM).

    The gradient is embedded (zero-filled) in the padded input's (Hp, Wp) grid, so output position
    (r, q) sits at flat index r*Wp + q of its image and kernel offset (i, j) adds to flat index + i*d*Wp + j*d:
    every offset's contribution is ONE contiguous shifted slice over all images, instead of a strided add
    with rows of Wo elements. Positions never stray into the next row or image (r + i*d < Hp, q + j*d < Wp),
    and the embedded zeros add nothing. Costs (Hp*Wp)/(Ho*Wo) more GEMM columns: callers keep that small."""
    n, o, ho, wo = g.shape
    _, c, kh, kw = w.shape
    h, wd = input_hw
    hp, wp = h + 2 * padding[0], wd + 2 * padding[1]
    size = n * hp * wp
    ge = np.zeros((o, n, hp, wp), dtype=g.dtype)
    ge[:, :, :ho, :wo] = _cn(g)
    dcols = (w.reshape(o, -1).T @ ge.reshape(o, size)).reshape(c, kh * kw, size)
    dxp = np.zeros((c, size), dtype=dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            s = i * dilation[0] * wp + j * dilation[1]
            dxp[:, s:] += dcols[:, i * kw + j, :size - s]
    dx = dxp.reshape(c, n, hp, wp)[:, :, padding[0]:padding[0] + h, padding[1]:padding[1] + wd]
    return np.ascontiguousarray(dx).transpose(1, 0, 2, 3)
