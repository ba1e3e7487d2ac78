"""Large fused elementwise groups, evaluated chunk by chunk on up to two threads.

A fused group (an SGD update: buf *= m; buf += g; p += -lr * buf) runs as one ufunc call per op over
whole arrays, so each op streams every array through memory once more: on ResNet-18's 11.7 M
parameters the update is memory-bound. Evaluated in chunks of CHUNK elements, a chunk stays in the
core's cache from one op to the next, and the chunks are split between two threads (numpy releases
the GIL inside ufunc loops), which torch's elementwise kernels get from OpenMP. Measured on the
ResNet-18 update, 2-core EPYC: 17.4 ms whole-array, 14.6 ms chunked, 11.4 ms chunked on 2 threads.

Generated code (graphc/backends/numpy/codegen.py) calls run_chunks only where fits() below holds;
otherwise it runs the whole-array lines.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

CHUNK = 65536  # elements per chunk: 256 KiB of float32, a few arrays of it fit in L2
MIN_ELEMENTS = 4 * CHUNK  # smaller groups run whole: the chunk loop would cost more than it saves

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()
#: threads a chunked group may use now; the BLAS thread policy (threads.py) lowers it to 1 while it finds
#: that one thread is faster (a loaded machine), as a 2-thread ufunc waits for its slower half just the same
THREADS = min(2, os.cpu_count() or 1)
state = {"threads": THREADS}


def executor() -> ThreadPoolExecutor:
    """The one pool thread that runs the first half of a two-thread group of numpy chunks (the C kernels have
    lanes.py instead)."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="graphc-chunks")
        return _pool


def run_chunks(fn: Callable[[int, int], None], n: int) -> None:
    """fn(s, e) for consecutive chunks [s, e) covering range(n): the first half of the chunks on a pool thread,
    the second half here (or all here when one thread is allowed)."""
    bounds = list(range(0, n, CHUNK)) + [n]
    spans = list(zip(bounds[:-1], bounds[1:]))

    def part(ss: list[tuple[int, int]]) -> None:
        for s, e in ss:
            fn(s, e)

    if state["threads"] < 2 or len(spans) < 2:
        part(spans)
        return
    half = len(spans) // 2
    fut = executor().submit(part, spans[:half])
    try:
        part(spans[half:])
    finally:
        fut.result()  # waits for the other half, and raises its error, before anything reads the group's results


def fits(reads: tuple, writes: tuple) -> bool:
    """Whether a group may run chunk by chunk on these arrays: all C-contiguous (a flat view is the array
    itself), and no array it writes overlaps another one it touches (whole-array ufuncs buffer such overlap;
    chunks would read what an earlier chunk wrote)."""
    if not all(isinstance(a, np.ndarray) and a.flags.c_contiguous for a in reads):
        return False
    return not any(w is not a and np.may_share_memory(w, a) for w in writes for a in reads)
