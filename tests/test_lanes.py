"""lanes.c: parts of a C kernel taken by the calling thread and one helper thread (graphc/backends/numpy/lanes.py).

Each part must run exactly once whichever lane takes it, the helper must really take parts, a second caller
while a job runs must still get all its parts done, and a forked child must get a helper of its own."""
from __future__ import annotations

import importlib
import os
import shutil
import signal
import threading

import numpy as np
import pytest

lanes = importlib.import_module("graphc.backends.numpy.lanes")
native = importlib.import_module("graphc.backends.numpy.native")
chunks = importlib.import_module("graphc.backends.numpy.chunks")

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) on this machine")

# out[part] = 1000 * (times the part ran) + lane; part 0 waits (up to ~2 s) until another part has run on lane 1,
# so a test can see the helper take work without depending on how fast it wakes; each part takes a[3] us at least
_PROBE = r"""
#include <time.h>
static long us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000L + t.tv_nsec / 1000;
}
void probe_part(const long *a, long p, long lane)
{
    long *out = (long *)a[0];
    for (long t0 = us(); us() - t0 < a[3];)
        ;
    if (p == 0 && a[2]) {
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
            int seen = 0;
            for (long q = 1; q < a[1]; q++)
                seen |= __atomic_load_n(&out[q], __ATOMIC_ACQUIRE) % 1000 == 1;
            clock_gettime(CLOCK_MONOTONIC, &t);
            if (seen || t.tv_sec - t0.tv_sec > 2)
                break;
        }
    }
    __atomic_add_fetch(&out[p], 1000 + lane, __ATOMIC_RELEASE);
}
"""


def _probe():
    lib = native.library(_PROBE, wait=True)
    assert lib is not None
    return lanes.part_function(lib.probe_part)


def _run(parts: int, wait_for_helper: bool = False, micros: int = 0) -> np.ndarray:
    out = np.zeros(parts, dtype=np.int64)
    lanes.run(_probe(), (out.ctypes.data, parts, int(wait_for_helper), micros), parts)
    return out


@pytest.fixture
def loaded(monkeypatch):
    monkeypatch.setitem(chunks.state, "threads", 2)
    assert lanes.wait()


def test_every_part_runs_once_and_the_helper_takes_some(loaded):
    out = _run(16, wait_for_helper=True)
    assert (out // 1000 == 1).all(), out
    assert (out % 1000 == 1).any(), "the helper thread took no part"
    for _ in range(200):  # many short jobs in a row: the helper spinning, sleeping and woken again
        assert (_run(5) // 1000 == 1).all()


def test_one_lane_runs_every_part_here(loaded, monkeypatch):
    monkeypatch.setitem(chunks.state, "threads", 1)
    out = _run(8)
    np.testing.assert_array_equal(out, np.full(8, 1000))


def test_callers_on_two_threads_each_get_their_parts(loaded):
    """One job at a time runs on both lanes; a caller that finds them busy runs its parts itself."""
    results, errors = [], []

    def caller() -> None:
        try:
            for _ in range(100):
                results.append(_run(7, micros=20))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=caller) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(results) == 300
    assert all((r // 1000 == 1).all() for r in results)


@pytest.mark.filterwarnings("ignore:os.fork")
def test_a_forked_child_gets_its_own_helper(loaded):
    """The child has no helper thread (fork copies only the caller's): it must start its own, not wait for the
    parent's. The child reports by its exit status; an alarm ends it if it hangs."""
    _run(16, wait_for_helper=True)  # the parent's helper exists
    pid = os.fork()
    if pid == 0:  # the child: nothing but the job, then _exit
        status = 3
        try:
            signal.alarm(30)
            out = _run(16, wait_for_helper=True)
            status = 0 if (out // 1000 == 1).all() and (out % 1000 == 1).any() else 1
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_without_the_library_the_parts_run_here(monkeypatch):
    monkeypatch.setitem(chunks.state, "threads", 2)
    monkeypatch.setattr(lanes, "_lib", [])
    monkeypatch.setattr(lanes, "_runner", lambda: None)
    np.testing.assert_array_equal(_run(6), np.full(6, 1000))
