"""Keep freed array memory in the process instead of returning it to the OS after every step.

glibc serves large allocations (above a threshold that starts at 128 KiB) with mmap and gives them
back with munmap on free, and trims the heap top after frees. A compiled step allocates and frees
the same set of buffers every call, so every call pays the page faults of fresh memory again:
on this project's (virtualized) CI machine, 1,700 faults per LeNet step cost 23% of its time
(12.4 ms -> 9.5 ms once memory stays mapped) and ResNet-18 batch 16 lost 6%. XLA's CPU client
takes its buffers from malloc too: a jax step's new parameters, gradients and activations of 128 KiB
and more were mapped and unmapped at every call (freeing one 256 KiB result cost ~14 us against ~1 us
from the heap, and a call writing 30 of them took 2.2 ms against 0.6 ms).

On the first compiled function of either backend, graphc raises glibc's mmap threshold to its
maximum (32 MiB) and its trim threshold to 1 GiB (mallopt), so buffers of a step are reused from the heap. The price
is that the process keeps its high-water mark of heap memory mapped, as allocator-backed runtimes
(PyTorch with jemalloc, XLA's BFC allocator) do. GRAPHC_MALLOC=off leaves malloc alone; the
glibc tunables (GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...) set explicitly take precedence.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit
TRIM_THRESHOLD = 1 << 30

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Tune glibc malloc once per process (see the module docstring); True when it was changed."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if (os.environ.get("GRAPHC_MALLOC", "").strip().lower() == "off" or not sys.platform.startswith("linux")
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        _done = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        _done = False
    return _done
