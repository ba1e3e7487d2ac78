"""numpy kernels for 2-d pooling, in the CNHW memory order of conv.py (any strides are accepted).

Max pooling takes a running maximum over the kernel offsets, each offset visiting only the outputs
whose input lies inside the image (padding is -inf in torch and never wins). Python loops run over
kernel offsets, never over pixels or images.

Training uses max_pool2d_with_indices: the forward also records, per output, which input won (torch's
indices: h * W + w within the image plane, the FIRST maximum in row-major window order on ties), so the
backward is a single scatter of the gradient, not a second search of every window. The winner is tracked
branch-free: at offset k, hit = (x_k > running max) and the winning offset is max(previous, hit * k),
because offsets are visited in increasing order.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from . import lanes, native
from .conv import _clip, _cn, _out_hw
from .registry import kernel

_ONE = (1, 1)
_C_SOURCE = Path(__file__).with_name("pool.c").read_text()
_C_DTYPES = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_c_lib: list[ctypes.CDLL] = []
C_SPLIT = 1 << 16  # window reads (planes * Ho * Wo * kh * kw) from which the C pooling splits its planes into parts
PARTS = 16  # that both lanes take from (lanes.py)


def _c_max_pool(x: np.ndarray, kernel_size, stride, padding, out_hw) -> tuple[np.ndarray, np.ndarray] | None:
    """pool.c's max pooling with indices, where it applies (a contiguous CNHW float array, no padding, every
    window inside the image) and once native.py has built it; None otherwise: the numpy kernel runs, with the
    same results. The build starts at the first ask and never blocks."""
    xc = _cn(x)
    (kh, kw), (sh, sw) = kernel_size, stride
    c, n, h, w = xc.shape
    ho, wo = out_hw
    if (x.dtype not in _C_DTYPES or padding != (0, 0) or not xc.flags.c_contiguous or ho < 1 or wo < 1
            or wo > 4096 or (ho - 1) * sh + kh > h or (wo - 1) * sw + kw > w):
        return None
    lib = _pool_lib()
    if lib is None:
        return None
    out = np.empty((c, n, ho, wo), dtype=x.dtype)
    idx = np.empty((c, n, ho, wo), dtype=np.int64)
    planes = c * n
    parts = min(planes, PARTS) if planes * ho * wo * kh * kw >= C_SPLIT else 1
    lanes.run(getattr(lib, f"graphc_max_pool_part_{_C_DTYPES[x.dtype]}"),
              (native.address(xc), native.address(out), native.address(idx), planes, parts, h, w, ho, wo, kh, kw,
               sh, sw), parts)
    return out.transpose(1, 0, 2, 3), idx.transpose(1, 0, 2, 3)


def _pool_lib() -> ctypes.CDLL | None:
    """pool.c's library once native.py has built it (the build starts at the first ask), else None."""
    if not _c_lib:
        lib = native.library(_C_SOURCE)
        if lib is None:
            return None
        for kind in ("max_pool", "max_pool_scatter", "max_pool_assign"):
            for t in _C_DTYPES.values():
                lanes.part_function(getattr(lib, f"graphc_{kind}_part_{t}"))
        _c_lib.append(lib)
    return _c_lib[0]


def _c_scatter(gc: np.ndarray, ic: np.ndarray, hw: tuple[int, int], overlap: bool) -> np.ndarray | None:
    """pool.c's scatter of the windows' gradients (g as (C, N, Ho, Wo) with contiguous planes, the indices
    CNHW-contiguous), once built: added up where windows overlap (np.bincount's sums, bit for bit), stored where
    they do not (numpy's assignment). None otherwise, or when an index lies outside its plane (numpy's kernel
    then runs and reports it)."""
    item = gc.itemsize
    if (gc.dtype not in _C_DTYPES or ic.dtype != np.int64 or not ic.flags.c_contiguous
            or gc.strides[2:] != (gc.shape[3] * item, item) or min(gc.strides) < 0):
        return None
    lib = _pool_lib()
    if lib is None:
        return None
    c, n, ho, wo = gc.shape
    dx = np.empty((c, n) + tuple(hw), dtype=gc.dtype)
    planes = c * n
    parts = min(planes, PARTS) if planes * hw[0] * hw[1] >= C_SPLIT else 1
    bad = np.zeros(parts, dtype=np.int64)  # per part: indices outside their plane
    fn = getattr(lib, f"graphc_max_pool_{'scatter' if overlap else 'assign'}_part_{_C_DTYPES[gc.dtype]}")
    lanes.run(fn, (native.address(gc), native.address(ic), native.address(dx), planes, parts, hw[0] * hw[1],
                   ho * wo, n, gc.strides[0] // item, gc.strides[1] // item, native.address(bad)), parts)
    return dx if not bad.any() else None


def _lowest(dtype: np.dtype):
    return -np.inf if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).min


def _flat_phases(xc: np.ndarray, kernel_size, stride, padding, out_hw) -> tuple[dict, int, int]:
    """The padded input split into its stride phases, each a flat array over (C, N, Hq, Wq) with ONE row
    pitch Wq shared with the output grid: phase (a, b) holds padded rows a, a + sh, ... and columns
    b, b + sw, ..., padding filled with the lowest value. Kernel offset (i, j) then reads phase
    (i % sh, j % sw) at the flat shift (i // sh) * Wq + j // sw, so every pass of the pooling loop is one
    long contiguous 1-d slice over all images and channels (rows that spill past an output row's end land
    in columns the final crop drops). -> (phases, Hq, Wq)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    c, n, h, w = xc.shape
    ho, wo = out_hw
    hq, wq = ho + (kh - 1) // sh, wo + (kw - 1) // sw
    low = _lowest(xc.dtype)
    phases = {}
    for a in range(min(sh, kh)):
        y0 = max(0, -(-(ph - a) // sh))  # first phase row inside the image: y*sh + a - ph >= 0
        y1 = max(y0, min(hq, (h - 1 + ph - a) // sh + 1))
        for b in range(min(sw, kw)):
            x0 = max(0, -(-(pw - b) // sw))
            x1 = max(x0, min(wq, (w - 1 + pw - b) // sw + 1))
            arr = np.empty((c, n, hq, wq), dtype=xc.dtype)
            arr[:, :, :y0] = low
            arr[:, :, y1:] = low
            arr[:, :, y0:y1, :x0] = low
            arr[:, :, y0:y1, x1:] = low
            if y1 > y0 and x1 > x0:
                arr[:, :, y0:y1, x0:x1] = xc[:, :, y0 * sh + a - ph:(y1 - 1) * sh + a - ph + 1:sh,
                                             x0 * sw + b - pw:(x1 - 1) * sw + b - pw + 1:sw]
            phases[(a, b)] = arr.reshape(-1)
    return phases, hq, wq


def _offsets(kernel_size, stride, wq: int) -> list[tuple[int, tuple[int, int], int]]:
    """(offset number k in row-major order, phase, flat shift) per kernel offset."""
    (kh, kw), (sh, sw) = kernel_size, stride
    return [(i * kw + j, (i % sh, j % sw), (i // sh) * wq + j // sw) for i in range(kh) for j in range(kw)]


def _crop(flat: np.ndarray, c: int, n: int, hq: int, wq: int, out_hw) -> np.ndarray:
    """The (C, N, Ho, Wo) outputs out of a flat array laid out on the (Hq, Wq) grid, contiguous."""
    return np.ascontiguousarray(flat.reshape(c, n, hq, wq)[:, :, :out_hw[0], :out_hw[1]])


@kernel("max_pool2d")
def max_pool2d(x, *, kernel_size, stride, padding):
    xc = _cn(x)
    c, n = xc.shape[:2]
    out_hw = _out_hw(xc.shape[2:], kernel_size, stride, padding, _ONE)
    phases, hq, wq = _flat_phases(xc, kernel_size, stride, padding, out_hw)
    offs = _offsets(kernel_size, stride, wq)
    span = c * n * hq * wq - max(s for _, _, s in offs)  # covers every output position
    m = np.empty(c * n * hq * wq, dtype=x.dtype)
    for k, key, shift in offs:
        src = phases[key][shift:shift + span]
        if k == 0:
            np.copyto(m[:span], src)
        else:
            np.maximum(m[:span], src, out=m[:span])  # propagates NaN, like torch
    return _crop(m, c, n, hq, wq, out_hw).transpose(1, 0, 2, 3)


def _first_valid(n_out: int, s: int, p: int) -> np.ndarray:
    """Per output row (or column): the first kernel offset whose input lies inside the image."""
    return np.maximum(0, p - np.arange(n_out) * s)


@kernel("max_pool2d_with_indices")
def max_pool2d_with_indices(x, *, kernel_size, stride, padding):
    """(max, int64 index h * W + w of the first maximum within the image plane), as torch returns them."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    xc = _cn(x)
    c, n, h, w = xc.shape
    ho, wo = _out_hw((h, w), kernel_size, stride, padding, _ONE)
    done = _c_max_pool(x, kernel_size, stride, padding, (ho, wo))
    if done is not None:
        return done
    phases, hq, wq = _flat_phases(xc, kernel_size, stride, padding, (ho, wo))
    offs = _offsets(kernel_size, stride, wq)
    size = c * n * hq * wq
    span = size - max(s for _, _, s in offs)
    arg_t = np.uint8 if kh * kw <= 256 else np.uint32
    # each window starts at its first in-image offset: the winner when nothing beats the lowest value
    # (all -inf), as torch picks it
    start = np.zeros((hq, wq), dtype=arg_t)
    start[:ho, :wo] = _first_valid(ho, sh, ph)[:, None] * kw + _first_valid(wo, sw, pw)
    arg_grid = np.empty((c * n, hq, wq), dtype=arg_t)
    m = np.empty(size, dtype=x.dtype)
    _window_max(phases, offs, span, start, arg_grid, m, nan_wins=False)
    if np.issubdtype(x.dtype, np.floating) and np.isnan(m[:span]).any():
        _window_max(phases, offs, span, start, arg_grid, m, nan_wins=True)  # rare: the slower rule
    del phases
    lut = (np.arange(kh)[:, None] * w + np.arange(kw)).ravel()  # offset -> index shift within the plane
    base = (np.arange(ho) * sh - ph)[:, None] * w + (np.arange(wo) * sw - pw)
    idx = np.take(lut, arg_grid.reshape(c, n, hq, wq)[:, :, :ho, :wo])
    idx += base
    return _crop(m, c, n, hq, wq, (ho, wo)).transpose(1, 0, 2, 3), idx.transpose(1, 0, 2, 3)


def _window_max(phases: dict, offs: list, span: int, start: np.ndarray, arg_grid: np.ndarray, m: np.ndarray,
                nan_wins: bool) -> None:
    """Running maximum into m and winning offset into arg_grid. A hit is a strictly greater value (an earlier
    equal maximum keeps its index) or, with nan_wins, any NaN: torch's CPU kernel moves the index to every NaN it
    meets (`val > maxval || isnan(val)`), so a window's index is its last NaN. Checking for NaN costs two more
    passes per offset, so it runs only when a maximum came out NaN."""
    arg_grid[...] = start
    arg = arg_grid.reshape(-1)[:span]
    hit = np.empty(span, dtype=bool)
    step = np.empty(span, dtype=arg_grid.dtype)
    nan = np.empty(span, dtype=bool) if nan_wins else None
    for k, key, shift in offs:
        src = phases[key][shift:shift + span]
        if k == 0:  # offset 0 is each window's first in-image one, or padding that never wins
            np.copyto(m[:span], src)
            continue
        np.greater(src, m[:span], out=hit)
        if nan is not None:
            np.logical_or(hit, np.isnan(src, out=nan), out=hit)
        np.maximum(m[:span], src, out=m[:span])  # (maximum propagates NaN, like torch)
        np.multiply(hit, arg_grid.dtype.type(k), out=step)
        np.maximum(arg, step, out=arg)  # offsets only grow: the last hit is the largest


@kernel("max_pool2d_indices_grad")
def max_pool2d_indices_grad(g, indices, *, input_hw, kernel_size, stride, padding):
    """Scatter each output's gradient to the input its index names. Windows that do not overlap (stride at
    least the kernel) send to distinct inputs, so a plain assignment does; overlapping windows may share a
    winner and accumulate (bincount, in float64)."""
    n, c, ho, wo = g.shape
    h, w = input_hw
    size = c * n * h * w
    gc = _cn(g)
    overlap = stride[0] < kernel_size[0] or stride[1] < kernel_size[1]
    done = _c_scatter(gc, _cn(indices), (h, w), overlap)  # pool.c, a plane at a time, numpy's bits, when built
    if done is not None:
        return done.transpose(1, 0, 2, 3)
    flat = np.add(_cn(indices), (np.arange(c * n, dtype=np.int64) * (h * w)).reshape(c, n, 1, 1))
    if not overlap:
        dx = np.zeros(size, dtype=g.dtype)
        dx[flat.ravel()] = gc.ravel()
    else:
        dx = np.bincount(flat.ravel(), weights=gc.ravel(), minlength=size).astype(g.dtype, copy=False)
    return dx.reshape(c, n, h, w).transpose(1, 0, 2, 3)


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
