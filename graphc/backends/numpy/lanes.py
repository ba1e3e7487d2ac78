"""Two lanes for C kernels: the calling thread and lanes.c's helper thread, which waits for work spinning
briefly instead of sleeping, so a kernel of 0.1 ms can be split (a Python pool thread costs 0.1 ms to hand
work to: chunks.py). A kernel exports a part function, fn(const long *args, long part, long lane), and
run() has lanes.c claim its parts from both threads. Parts never depend on the lane that runs them, so the
numbers are the same on one thread or two, and before lanes.c is built (in the background, like the other
C kernels) the parts simply run one after another here."""
from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import chunks, native

_SOURCE = Path(__file__).with_name("lanes.c").read_text()
FLAGS = [*native.FLAGS, "-pthread"]
_lib: list[Any] = []


def _runner() -> Any:
    if not _lib:
        lib = native.library(_SOURCE, FLAGS)
        if lib is None:
            return None
        lib.graphc_lanes_run.restype = None
        lib.graphc_lanes_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_long]
        _lib.append(lib.graphc_lanes_run)
    return _lib[0]


def wait() -> bool:
    """Wait for lanes.c's build (tests: so that two threads really run the parts); whether it loaded."""
    native.library(_SOURCE, FLAGS, wait=True)
    return _runner() is not None


def part_function(fn: Any) -> Any:
    """Declare a C part function's signature (fn(const long *args, long part, long lane))."""
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long]
    return fn


def run(fn: Any, args: Sequence[int], parts: int, split: bool = True) -> None:
    """fn(args, part, lane) for part in range(parts): on both lanes when split, two threads are allowed now
    (the BLAS thread policy, threads.py, may allow one) and lanes.c is loaded, else here, one after another.
    args are integers (pointers and sizes), passed as a C long array."""
    block = (ctypes.c_long * len(args))(*args)
    runner = _runner() if parts > 1 else None
    if runner is None:
        for p in range(parts):
            fn(block, p, 0)
        return
    runner(_address(fn), block, parts, chunks.state["threads"] if split else 1)


_addresses: dict[int, tuple[Any, int]] = {}


def _address(fn: Any) -> int:
    """fn's entry point, for lanes.c to call (ctypes.cast costs a few us: once per function)."""
    hit = _addresses.get(id(fn))
    if hit is None or hit[0] is not fn:
        hit = _addresses[id(fn)] = (fn, ctypes.cast(fn, ctypes.c_void_p).value)
    return hit[1]
