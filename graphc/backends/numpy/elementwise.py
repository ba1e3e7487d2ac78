"""numpy kernels for elementwise ops."""
from __future__ import annotations

import mmap
from collections.abc import Callable

import numpy as np

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


def _flat(a: np.ndarray) -> np.ndarray | None:
    """a's elements as one 1-d view in memory order, if they are dense (C order or CNHW): else None."""
    if a.flags.c_contiguous:
        return a.reshape(-1)
    if a.ndim == 4 and a.transpose(1, 0, 2, 3).flags.c_contiguous:
        return a.transpose(1, 0, 2, 3).reshape(-1)
    return None


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
    return v.size == 1 and not np.asarray(v).view(_BITS[v.dtype]).any()


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
    shape = np.broadcast_shapes(np.shape(c), a.shape, b.shape)
    if out is None:
        out = np.empty(shape, dtype=a.dtype)
    ov = out.view(it)
    if _zero_bits(a):  # (relu's gradient: zero where the output is <= 0) c - 1: all bits where c does NOT hold
        np.bitwise_and(b.view(it), np.asarray(np.subtract(c, 1, dtype=it)), out=ov)
        return out
    m = np.asarray(np.subtract(0, c, dtype=it))  # -1 (all bits) where c, else 0 (an array even when 0-d)
    if _zero_bits(b):
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
