"""How many threads numpy's BLAS may use while a compiled step runs, chosen by measurement.

On a 2-core machine shared with other work, a 2-thread GEMM waits for its slower thread: when
another process holds one core, BLAS-heavy steps ran up to 10x slower with 2 threads than with
1 (measured on this project's CI machine; PyTorch's OpenMP pool suffers the same). On an idle
machine, 2 threads are 1.5-1.9x faster for large GEMMs. No fixed choice is right, so each
generated function measures its own calls: it alternates between all threads and one thread at
first, then runs the faster setting and re-checks the other now and then (less often while the
choice holds), so it follows the machine's load. Steps under 1 ms are left alone.

GRAPHC_BLAS_THREADS=N pins N threads, =auto (the default) adapts, =off leaves BLAS untouched.
Needs threadpoolctl; without it BLAS is left as it is. The thread count is restored after each
call, so numpy code outside compiled steps is unaffected.
"""
from __future__ import annotations

import os
import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from . import chunks

_controller: Any = None


def _blas() -> list[Any]:
    """threadpoolctl's controllers of numpy's BLAS libraries ([] when threadpoolctl is missing)."""
    global _controller
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController

            _controller = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
        except Exception:  # noqa: BLE001  (no threadpoolctl, or a BLAS it cannot drive: leave BLAS alone)
            _controller = []
    return _controller


def _set(libs: list[Any], n: int) -> None:
    for c in libs:
        c.set_num_threads(n)


class AdaptiveThreads:
    """Picks the faster of (the BLAS threads allowed now, one thread) for one generated function, by timing
    its calls. "Allowed now" is read at each call, so an enclosing threadpool_limits(1) is respected."""

    WARMUP = 2  # calls per setting before choosing
    WINDOW = 5  # recent calls per setting that decide
    MIN_SECONDS = 1e-3  # faster steps are not worth adapting
    MARGIN = 0.05  # the other setting must be this much faster to take over: step times vary by more than the
    # difference, and flipping on noise left a LeNet step on its slower setting for 2/3 of its calls

    def __init__(self, libs: list[Any]):
        self.libs = libs
        self.times: dict[bool, deque] = {False: deque(maxlen=self.WINDOW), True: deque(maxlen=self.WINDOW)}
        self.calls = 0
        self.one = False  # the current choice: one thread (True) or all allowed (False)
        self.probe_every = 8
        self.since_probe = 0
        self.off = False

    def choose(self) -> bool:
        self.calls += 1
        if self.calls <= 2 * self.WARMUP:
            return self.calls % 2 == 0
        self.since_probe += 1
        if self.since_probe >= self.probe_every:
            self.since_probe = 0
            return not self.one
        return self.one

    def record(self, one: bool, seconds: float) -> None:
        self.times[one].append(seconds)
        if self.calls < 2 * self.WARMUP or not self.times[True] or not self.times[False]:
            return
        med = {k: statistics.median(v) for k, v in self.times.items()}
        if max(med.values()) < self.MIN_SECONDS:
            self.off = True
            return
        best = med[True] < med[False]
        if best != self.one and med[best] < (1 - self.MARGIN) * med[self.one]:
            self.one, self.probe_every = best, 8
        elif best != self.one:  # the other setting looks faster, but within the margin: keep probing it often
            self.probe_every = 8
        elif one != self.one:  # a probe confirmed the choice: probe less often
            self.probe_every = min(self.probe_every * 2, 128)

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        libs = self.libs

        def run(*args: Any) -> Any:
            if self.off:
                return fn(*args)
            allowed = max(c.num_threads for c in libs)
            if allowed == 1:  # the caller limits BLAS to one thread (threadpool_limits(1)): chunks follow
                chunks.state["threads"] = 1
                try:
                    return fn(*args)
                finally:
                    chunks.state["threads"] = chunks.THREADS
            one = self.choose()
            if one:
                _set(libs, 1)
                chunks.state["threads"] = 1  # chunked elementwise groups follow the same choice
            t0 = time.perf_counter()
            try:
                return fn(*args)
            finally:
                dt = time.perf_counter() - t0
                if one:
                    _set(libs, allowed)
                    chunks.state["threads"] = chunks.THREADS
                self.record(one, dt)

        run.__wrapped__ = fn  # type: ignore[attr-defined]
        run.threads = self  # type: ignore[attr-defined]
        return run


def with_blas_policy(fn: Callable[..., Any]) -> Callable[..., Any]:
    """fn under the GRAPHC_BLAS_THREADS policy (see the module docstring)."""
    mode = os.environ.get("GRAPHC_BLAS_THREADS", "auto").strip().lower()
    if mode in ("off", ""):
        return fn
    libs = _blas()
    if not libs:
        return fn
    if mode == "auto":
        return AdaptiveThreads(libs).wrap(fn)
    n = int(mode)

    def pinned(*args: Any) -> Any:
        allowed = max(c.num_threads for c in libs)
        _set(libs, n)
        chunks.state["threads"] = min(n, chunks.THREADS)
        try:
            return fn(*args)
        finally:
            _set(libs, allowed)
            chunks.state["threads"] = chunks.THREADS

    pinned.__wrapped__ = fn  # type: ignore[attr-defined]
    return pinned
