"""conv.c's direct convolution, for stride-1 float32 convolutions with few channels (LeNet's).

There im2col + GEMM loses twice: the im2col copy is as large as the work, and OpenBLAS runs products with 6
or 16 rows at a fraction of its speed. conv.c reads the kernel offsets straight from the input, 16 positions
by 6 output channels per register block. Measured at LeNet's shapes, batch 64, one thread, against the im2col
kernels: forward 1->6 0.15-0.21 ms against 0.37-0.45, 6->16 0.34-0.37 against 0.59-0.61, the input gradient
16->6 0.42 against 2.1-2.3 (padding included), the weight gradient 1->6 0.17 against 0.56, 6->16 0.23-0.35
against 0.7.

Its sums are not numpy's (FMA where the CPU has it, another order than BLAS), so a program must not switch
from one to the other mid-run: the first convolution that qualifies waits for conv.c's build (cc, about 1.6 s
with gcc, once per machine: the library is cached like native.py's). Without a compiler, with GRAPHC_NATIVE=0
or after a failed build, numpy's kernels run, as before.

Each kernel splits its images into parts that the calling thread and lanes.c's helper take from (lanes.py:
a handoff costs a lock, not the 0.1 ms of waking a Python pool thread, so LeNet's 0.2 ms convolutions gain
from two cores: 1.2-1.7x per kernel here). The weight gradient keeps one double partial sum per part, a
number of parts fixed by the batch alone, added in order at the end, so the thread count never changes a
number. Inputs and gradients in numpy's (N, C, H, W) layout are read in place through plane strides, not
copied to (C, N, H, W) first.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from . import lanes, native

_SOURCE = Path(__file__).with_name("conv.c").read_text()
FLAGS = ["-O3", "-ffp-contract=fast", "-fno-math-errno", "-Wno-psabi", "-fPIC", "-shared"]
_OB = 6  # conv.c's output channels per register block
_SLACK = 64  # floats readable past an input's end (conv.c reads whole vectors past a row's last column)
MAX_TERMS = 160  # most C*kh*kw (terms per output) for which conv.c runs; wider convolutions keep BLAS busy
MAX_OUT = 32  # most output channels
PARTS = 16  # a kernel's images are split in up to this many parts, which both lanes (lanes.py) take from
WGRAD_PARTS = 8  # the weight gradient's partial sums, one per part, added in order at the end
MIN_SPLIT = 1 << 18  # multiply-adds from which a kernel's images are split (about 15 us of work)
MIN_PAD_SPLIT = 1 << 17  # floats written from which a padded copy is split
_lib: list[ctypes.CDLL] = []


def _library() -> ctypes.CDLL | None:
    if not _lib:
        lib = native.library(_SOURCE, FLAGS, wait=True)
        if lib is None:
            return None
        lanes.part_function(lib.graphc_pad_part_f32)
        lanes.part_function(lib.graphc_conv_part_f32)
        lanes.part_function(lib.graphc_conv_wgrad_part_f32)
        _lib.append(lib)
    return _lib[0]


def applies(dtypes, kernel_size, stride, dilation, groups: int, padding, terms: int, outs: int) -> bool:
    """The convolution is one conv.c runs: float32 operands, groups 1, stride and dilation 1, padding inside
    the kernel, at most MAX_TERMS terms (C*kh*kw) per output and MAX_OUT output channels."""
    kh, kw = kernel_size
    return (all(d == np.float32 for d in dtypes) and groups == 1 and tuple(stride) == (1, 1)
            and tuple(dilation) == (1, 1) and terms <= MAX_TERMS and outs <= MAX_OUT and kw <= 32
            and 0 <= padding[0] < kh and 0 <= padding[1] < kw)


def _padded(xc: np.ndarray, ph: int, pw: int) -> tuple[np.ndarray, int, int]:
    """(C, N, H, W) -> one flat float32 copy padded by (ph, pw) with zeros, followed by _SLACK zeros. A
    transposed (N, C, H, W) array with contiguous planes is read in place, not copied first."""
    c, n, h, w = xc.shape
    hp, wp = h + 2 * ph, w + 2 * pw
    size = c * n * hp * wp
    buf = np.empty(size + _SLACK, dtype=np.float32)
    buf[size:] = 0
    item = xc.itemsize
    if xc.strides[2:] != (w * item, item):
        xc = np.ascontiguousarray(xc)
    sc, sn = xc.strides[0] // item, xc.strides[1] // item
    parts = min(c * n, PARTS) if size >= MIN_PAD_SPLIT else 1
    lanes.run(_library().graphc_pad_part_f32,
              (native.address(xc), native.address(buf), c * n, n, h, w, ph, pw, sc, sn, parts), parts)
    return buf, hp, wp


def _packed(w: np.ndarray) -> np.ndarray:
    """(O, C, kh, kw) -> (blocks, C*kh*kw, _OB): each block's weights per term, zero past O."""
    o = w.shape[0]
    blocks = -(-o // _OB)
    wp = np.zeros((blocks * _OB, w[0].size), dtype=np.float32)
    wp[:o] = w.reshape(o, -1)
    return np.ascontiguousarray(wp.reshape(blocks, _OB, -1).transpose(0, 2, 1))


def _correlate(xc: np.ndarray, w: np.ndarray, ph: int, pw: int) -> np.ndarray | None:
    """sum over (c, a, b) of w[o, c, a, b] * x[c, n, i + a - ph, j + b - pw], as a CNHW (N, O, Ho, Wo) view."""
    lib = _library()
    if lib is None:
        return None
    c, n = xc.shape[:2]
    o, _, kh, kw = w.shape
    buf, hp, wp = _padded(xc, ph, pw)
    ho, wo = hp - kh + 1, wp - kw + 1
    out = np.empty((o, n, ho, wo), dtype=np.float32)
    packed = _packed(w)
    parts = min(n, PARTS) if o * n * ho * wp * w[0].size >= MIN_SPLIT else 1
    lanes.run(lib.graphc_conv_part_f32, (native.address(buf), native.address(packed), native.address(out),
                                         c, n, hp, wp, o, kh, kw, parts), parts)
    return out.transpose(1, 0, 2, 3)


def conv2d(x: np.ndarray, w: np.ndarray, padding) -> np.ndarray | None:
    """The forward convolution, or None when conv.c is not available."""
    return _correlate(x.transpose(1, 0, 2, 3), w, padding[0], padding[1])


def input_grad(g: np.ndarray, w: np.ndarray, padding) -> np.ndarray | None:
    """The input gradient: the gradient correlated, fully padded, with the flipped and transposed kernel."""
    kh, kw = w.shape[2:]
    wt = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    return _correlate(g.transpose(1, 0, 2, 3), wt, kh - 1 - padding[0], kw - 1 - padding[1])


def weight_grad(x: np.ndarray, g: np.ndarray, kernel_size, padding, out: np.ndarray | None) -> np.ndarray | None:
    """The weight gradient (into out when given), or None when conv.c is not available."""
    lib = _library()
    if lib is None:
        return None
    xc, gc = x.transpose(1, 0, 2, 3), g.transpose(1, 0, 2, 3)
    c, n = xc.shape[:2]
    o, _, ho, wo = gc.shape
    kh, kw = kernel_size
    buf, hp, wp = _padded(xc, padding[0], padding[1])
    if gc.strides[2:] != (wo * 4, 4) or min(gc.strides) < 0:
        gc = np.ascontiguousarray(gc)  # read in place when its planes are contiguous: NCHW or CNHW
    nparts = min(n, WGRAD_PARTS)  # never the thread count: it would change the sums
    stride = -(-o * c * kh * kw // 16) * 16  # parts 128 bytes apart: two lanes never write one cache line
    parts = np.empty((nparts, stride), dtype=np.float64)
    size = ho * wo * 8 * -(-o // 8)
    scratch = np.empty((2, size), dtype=np.float32)
    lanes.run(lib.graphc_conv_wgrad_part_f32, (native.address(buf), native.address(gc), native.address(parts),
                                               native.address(scratch), c, n, hp, wp, o, kh, kw, nparts, size, stride,
                                               gc.strides[0] // 4, gc.strides[1] // 4),
              nparts, split=o * c * kh * kw * n * ho * wo >= MIN_SPLIT)
    dw = np.empty((o, c, kh, kw), dtype=np.float32) if out is None or not out.flags.c_contiguous else out
    np.copyto(dw.reshape(-1), parts.sum(axis=0)[:o * c * kh * kw], casting="same_kind")
    if out is not None and dw is not out:
        np.copyto(out, dw)
        return out
    return dw
