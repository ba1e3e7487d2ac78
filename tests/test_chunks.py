"""Large fused elementwise groups run chunk by chunk on two threads (graphc/backends/numpy/chunks.py).

Chunking changes which elements a ufunc call sees, never the arithmetic on an element: results must be
bit-identical to the whole-array code, on both threads settings, and the whole-array lines must take over
whenever a chunk view would not be the array itself (non-contiguous or overlapping arrays)."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
from steps import train_step

import graphc as gc
from graphc import nn, optim

codegen = importlib.import_module("graphc.backends.numpy.codegen")
chunks = importlib.import_module("graphc.backends.numpy.chunks")

N = chunks.MIN_ELEMENTS + 12345  # large enough to chunk, and not a multiple of the chunk size


@pytest.fixture(autouse=True)
def _numpy_chunks(monkeypatch):
    """These tests are about the chunked numpy lines: the C loop that may take such a group over (native.py,
    tested in test_native.py) is turned off."""
    monkeypatch.setenv("GRAPHC_NATIVE", "0")


def _chain(x, y):
    return ((x * 3.0 + y) * x - y * 0.5).relu() * 2.0


@pytest.mark.parametrize("threads", [1, 2])
def test_a_large_elementwise_chain_is_chunked_and_bit_identical(threads, monkeypatch):
    monkeypatch.setitem(chunks.state, "threads", threads)
    rng = np.random.default_rng(0)
    xa, ya = rng.standard_normal(N, dtype=np.float32), rng.standard_normal(N, dtype=np.float32)
    f = gc.compile(_chain)
    out = f(gc.tensor(xa), gc.tensor(ya)).numpy()
    exe = [e for es in f._cache.values() for e in es][0]
    assert "chunks.run_chunks" in exe.source
    with monkeypatch.context() as m:
        m.setattr(codegen, "_chunkable", lambda *a: False)
        whole = gc.compile(_chain)(gc.tensor(xa), gc.tensor(ya)).numpy()
    np.testing.assert_array_equal(out, whole)
    np.testing.assert_allclose(out, _chain(gc.tensor(xa), gc.tensor(ya)).numpy(), rtol=1e-6)


def test_non_contiguous_arguments_take_the_whole_array_lines(monkeypatch):
    rng = np.random.default_rng(1)
    side = int(np.ceil(np.sqrt(N)))
    xa = rng.standard_normal((side, side), dtype=np.float32)
    ya = rng.standard_normal((side, side), dtype=np.float32)
    ran = []
    monkeypatch.setattr(chunks, "run_chunks", lambda fn, n, _run=chunks.run_chunks: ran.append(n) or _run(fn, n))
    f = gc.compile(_chain)
    x_t = gc.tensor(xa.T)  # a transposed view: a flat view of it is not the array in its own order
    assert not x_t.numpy().flags.c_contiguous
    out = f(x_t, gc.tensor(ya)).numpy()
    assert ran == []
    np.testing.assert_allclose(out, _chain(gc.tensor(xa.T.copy()), gc.tensor(ya)).numpy(), rtol=1e-6)
    f(gc.tensor(xa.T.copy()), gc.tensor(ya))
    assert ran  # contiguous again: chunked


def test_fits_refuses_overlap_and_non_contiguous_arrays():
    a = np.zeros(1000, np.float32)
    b = np.ones(1000, np.float32)
    assert chunks.fits((a, b), (a,))
    assert not chunks.fits((a[:800], a[200:]), (a[:800],))  # the written array overlaps another read
    assert not chunks.fits((a.reshape(10, 100).T, b), ())
    lo, hi = a[:500], a[500:]
    assert chunks.fits((lo, hi), (lo,))  # disjoint halves of one buffer


@pytest.mark.parametrize("threads", [1, 2])
def test_run_chunks_covers_every_element_once_and_raises_errors(threads, monkeypatch):
    monkeypatch.setitem(chunks.state, "threads", threads)
    n = 5 * chunks.CHUNK + 7
    hits = np.zeros(n, np.int64)

    def fn(s, e):
        hits[s:e] += 1

    chunks.run_chunks(fn, n)
    assert (hits == 1).all()

    def boom(s, e):
        if s == 0:
            raise FloatingPointError("chunk 0")

    with pytest.raises(FloatingPointError, match="chunk 0"):
        chunks.run_chunks(boom, n)


def test_an_sgd_momentum_step_on_large_weights_matches_the_whole_array_step(monkeypatch):
    def run(chunked: bool):
        gc.manual_seed(0)
        model = nn.Sequential(nn.Linear(40, 700), nn.ReLU(), nn.Linear(700, 400))  # 280K-weight layers
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        with monkeypatch.context() as m:
            if not chunked:
                m.setattr(codegen, "_chunkable", lambda *a: False)

            step = gc.compile(train_step(model, opt, nn.MSELoss()))
            rng = np.random.default_rng(3)
            for _ in range(3):
                step(gc.tensor(rng.standard_normal((8, 40), dtype=np.float32)),
                     gc.tensor(rng.standard_normal((8, 400), dtype=np.float32)))
        exe = [e for es in step._cache.values() for e in es][-1]
        return {k: v.numpy().copy() for k, v in model.state_dict().items()}, exe.source

    got, src = run(True)
    want, src_whole = run(False)
    assert "chunks.run_chunks" in src and "chunks.run_chunks" not in src_whole
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_chunks_use_one_thread_when_blas_is_limited_to_one(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not importlib.import_module("graphc.backends.numpy.threads")._blas():
        pytest.skip("threadpoolctl cannot drive this numpy's BLAS: no thread policy to follow")
    seen = []
    monkeypatch.setattr(chunks, "run_chunks",
                        lambda fn, n, _run=chunks.run_chunks: seen.append(chunks.state["threads"]) or _run(fn, n))
    f = gc.compile(_chain)
    x = gc.tensor(np.ones(N, np.float32))
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        f(x, x)
    assert seen == [1] and chunks.state["threads"] == chunks.THREADS


def test_the_line_profiler_times_a_chunked_group_whole_and_leaves_results_alone(monkeypatch):
    """benchmarks/lineprofile.py rewrites generated code with a clock read around each line: a chunked group is
    timed once at its run_chunks line (the lines of its chunk function run per chunk, on two threads: timing them
    would report one chunk), and the rewritten code computes exactly what the executable does."""
    import re
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    from benchmarks.lineprofile import instrument, profile_step

    rng = np.random.default_rng(3)
    xa, ya = rng.standard_normal(N, dtype=np.float32), rng.standard_normal(N, dtype=np.float32)
    f = gc.compile(_chain)
    want = f(gc.tensor(xa), gc.tensor(ya)).numpy()
    exe = [e for es in f._cache.values() for e in es][0]
    fn, times, lines = instrument(exe.source, re.search(r"^def (\w+)\(", exe.source, re.M).group(1))
    out = fn(*exe._gather(exe._leaves((gc.tensor(xa), gc.tensor(ya)), {})))
    np.testing.assert_array_equal(out[0] if isinstance(out, tuple) else out, want)
    run_line = next(i for i, line in enumerate(lines) if "chunks.run_chunks(" in line)
    assert len(times[run_line]) == 1  # one call, one sample: the whole group
    inside = [i for i, line in enumerate(lines) if "[s:e]" in line]
    assert inside and not set(inside) & set(times)
    assert "fused group, chunked" in profile_step(exe, (gc.tensor(xa), gc.tensor(ya)), rounds=1)
