"""numpy kernels for elementwise ops."""
from __future__ import annotations

import ctypes
import mmap
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import lanes, native
from .registry import KERNELS, kernel

_UFUNCS = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": np.power,
    "maximum": np.maximum, "minimum": np.minimum, "neg": np.negative, "abs": np.abs, "sign": np.sign,
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "tanh": np.tanh, "sin": np.sin, "cos": np.cos,
    "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
    "ge": np.greater_equal, "logical_and": np.logical_and, "logical_or": np.logical_or,
    "logical_not": np.logical_not,
}
KERNELS.update(_UFUNCS)


def takes_out(fn: Callable) -> Callable:
    """Mark a kernel as accepting out= (an array of its output's type to write into), so the memory
    plan may run it in place. Without out= it allocates, like any kernel."""
    fn.supports_out = True
    return fn


@kernel("rsqrt")
@takes_out
def rsqrt(x, out=None):
    out = np.sqrt(x, out=out)
    return np.divide(1, out, out=out, dtype=out.dtype) if isinstance(out, np.ndarray) else 1 / out


@kernel("sigmoid")
@takes_out
def sigmoid(x, out=None):
    # split by sign so that exp never overflows
    e = np.exp(-np.abs(x))
    r = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
    if out is None:
        return r
    np.copyto(out, r)
    return out


_ZEROS_FROM = 1 << 12  # elements from which relu reads an array of zeros instead of broadcasting a zero
_ZERO_RUN = 1 << 24  # elements of that array (it occupies no memory: see _zeros_for)
_zeros: dict[np.dtype, np.ndarray] = {}


def _order(a: np.ndarray) -> str | None:
    """The dense memory order of a: "C", "CNHW" (a 4-d view of (C, N, H, W) memory), else None."""
    if a.flags.c_contiguous:
        return "C"
    if a.ndim == 4 and a.transpose(1, 0, 2, 3).flags.c_contiguous:
        return "CNHW"
    return None


def _flat(a: np.ndarray) -> np.ndarray | None:
    """a's elements as one 1-d view in memory order, if they are dense (C order or CNHW): else None."""
    order = _order(a)
    if order is None:
        return None
    return (a if order == "C" else a.transpose(1, 0, 2, 3)).reshape(-1)


def _zeros_for(dtype: np.dtype) -> np.ndarray:
    """_ZERO_RUN read-only zeros of this dtype. An anonymous read-only mapping: every page of it is the
    kernel's one shared zero page, so it takes no memory and its reads hit the cache."""
    z = _zeros.get(dtype)
    if z is None:
        try:
            buf = mmap.mmap(-1, _ZERO_RUN * dtype.itemsize, prot=mmap.PROT_READ)
            z = np.frombuffer(buf, dtype=dtype)
        except (AttributeError, TypeError, OSError):  # no PROT_READ (Windows) or no mapping: plain zeros
            z = np.zeros(_ZERO_RUN, dtype=dtype)
            z.flags.writeable = False
        _zeros[dtype] = z
    return z


@kernel("relu")
@takes_out
def relu(x, out=None):
    """np.maximum against an ARRAY of zeros: numpy 2.4 runs maximum with a scalar operand in a slow loop
    (345 K float32: 0.17-0.25 ms, against 0.05-0.06 ms with an array; the same bits: NaN kept, -0.0 -> +0.0
    both ways). Read in x's own memory order, so CNHW activations qualify."""
    flat = _flat(x) if isinstance(x, np.ndarray) and x.size >= _ZEROS_FROM and x.dtype.kind == "f" else None
    if out is None and flat is not None:
        out = np.empty_like(x)  # (keeps x's memory order)
    dst = None if flat is None or out.strides != x.strides or out.dtype != x.dtype else _flat(out)
    if dst is None:
        return np.maximum(x, x.dtype.type(0), out=out)
    zeros = _zeros_for(x.dtype)
    for s in range(0, flat.size, _ZERO_RUN):
        e = min(flat.size, s + _ZERO_RUN)
        np.maximum(flat[s:e], zeros[:e - s], out=dst[s:e])
    return out


_BITS = {np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}


def _zero_bits(v: np.ndarray) -> bool:
    """v is one element whose bit pattern is all zeros (+0.0, not -0.0)."""
    return v.size == 1 and v.tobytes() == bytes(v.itemsize)


_SELECT_SOURCE = Path(__file__).with_name("select.c").read_text()
_SELECT_NAMES = {4: "graphc_select_u32", 8: "graphc_select_u64"}
SELECT_FROM = 1 << 14  # elements from which where(c, x, 0) runs select.c (a ctypes call costs a few us)
SELECT_SPLIT = 1 << 17  # elements from which it is split into parts for both lanes (lanes.py)
SELECT_PARTS = 8
_select: dict[int, ctypes._CFuncPtr] = {}


def _c_select(c, x: np.ndarray, out: np.ndarray, keep: bool) -> bool:
    """out = x where c == keep, else +0.0, by select.c once native.py has built it (numpy's two ufuncs give the
    same bits meanwhile): one pass instead of a bool -> int conversion and a masked AND. False (nothing done)
    unless c, x and out are one shape, dense in one memory order, and large enough."""
    if (not isinstance(c, np.ndarray) or c.dtype != np.bool_ or out.size < SELECT_FROM
            or c.shape != out.shape or x.shape != out.shape or out.dtype != x.dtype):
        return False
    order = _order(out)
    if order is None or _order(c) != order or _order(x) != order:
        return False
    same = native.address(out) == native.address(x)
    if not same and np.may_share_memory(out, x):  # (a partial overlap: select.c reads and writes them apart)
        return False
    fns = _select_fns()
    if fns is None:
        return False
    n = out.size
    parts = SELECT_PARTS if n >= SELECT_SPLIT else 1
    lanes.run(fns[x.itemsize], (native.address(c), native.address(x), native.address(out), n, parts, int(keep)),
              parts)
    return True


def _select_fns() -> dict | None:
    """select.c's part functions by item size, once built (native.library hashes the source: once)."""
    if not _select:
        lib = native.library(_SELECT_SOURCE)
        if lib is None:
            return None
        for size, name in _SELECT_NAMES.items():
            _select[size] = lanes.part_function(getattr(lib, name + "_part"))
    return _select


@kernel("where")
@takes_out
def where(c, a, b, out=None):
    """np.where is a masked copy that branches per element: with a random mask (a ReLU's gradient) it runs
    ~20x slower than a ufunc. Float operands are selected bitwise instead, without branches and exactly
    (NaN, inf and -0.0 included): bits(a) & m | bits(b) & ~m with m = -c (all ones where c holds)."""
    a, b = np.asarray(a), np.asarray(b)
    it = _BITS.get(a.dtype)
    if it is None or b.dtype != a.dtype or (out is not None and out.dtype != a.dtype):
        r = np.where(c, a, b)
        if out is None:
            return r
        np.copyto(out, r)
        return out
    if out is None:
        cs = np.shape(c)
        shape = cs if cs == b.shape and a.ndim == 0 else np.broadcast_shapes(cs, a.shape, b.shape)
        out = np.empty(shape, dtype=a.dtype)
    a_zero, b_zero = _zero_bits(a), _zero_bits(b)
    if (a_zero or b_zero) and _c_select(c, b if a_zero else a, out, keep=not a_zero):
        return out
    ov = out.view(it)
    if a_zero:  # (relu's gradient: zero where the output is <= 0) c - 1: all bits where c does NOT hold
        np.bitwise_and(b.view(it), np.asarray(np.subtract(c, 1, dtype=it)), out=ov)
        return out
    m = np.asarray(np.subtract(0, c, dtype=it))  # -1 (all bits) where c, else 0 (an array even when 0-d)
    if b_zero:
        np.bitwise_and(a.view(it), m, out=ov)
    else:
        keep_b = np.bitwise_and(b.view(it), np.invert(m))  # before out (which may be a or b) is written
        np.bitwise_and(a.view(it), m, out=ov)
        np.bitwise_or(ov, keep_b, out=ov)
    return out


@kernel("clamp")
@takes_out
def clamp(x, *, min, max, out=None):
    r = np.clip(x, min, max, out=out)
    return r.astype(x.dtype, copy=False) if out is None else r


@kernel("cast")
def cast(x, *, dtype):
    return x.astype(dtype)
