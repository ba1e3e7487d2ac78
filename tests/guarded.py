"""Arrays that end where readable memory ends: the next page is mapped PROT_NONE, so a C kernel that reads one
element past an array's end crashes the test instead of reading a neighbour's memory unnoticed."""
from __future__ import annotations

import ctypes
import mmap

import numpy as np

_keep: list = []  # the mappings stay alive (and guarded) for the whole session


def guarded(values: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of values whose last byte is the last readable byte before a PROT_NONE page."""
    page = mmap.PAGESIZE
    n = values.nbytes
    total = (-(-n // page) + 1) * page
    m = mmap.mmap(-1, total)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if libc.mprotect(base + total - page, page, 0) != 0:
        raise OSError(ctypes.get_errno(), "mprotect failed")
    _keep.append(m)
    out = np.frombuffer(m, dtype=values.dtype, count=values.size, offset=total - page - n).reshape(values.shape)
    out[...] = values
    return out
