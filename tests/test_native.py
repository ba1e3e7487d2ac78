"""Fused elementwise groups as C loops built by the machine's compiler (graphc/backends/numpy/native.py).

The C loop must give numpy's numbers bit for bit (the numpy lines run until it is built, and wherever it
cannot be), take over only arrays it was built for, and leave the numpy lines in charge when there is no
compiler or the build fails."""
from __future__ import annotations

import importlib
import shutil

import numpy as np
import pytest
from steps import train_step

import graphc as gc
from graphc import nn, optim

native = importlib.import_module("graphc.backends.numpy.native")
chunks = importlib.import_module("graphc.backends.numpy.chunks")
lanes = importlib.import_module("graphc.backends.numpy.lanes")

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) on this machine")
UFUNC = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "neg": np.negative,
         "sqrt": np.sqrt}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Every test builds into a cache of its own, so a build is really run (and a broken one stays local)."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_builds", {})


def _random_program(rng, n_arrays: int, n_scalars: int, n_ops: int):
    """A program over array slots (the first written ones start as inputs too), scalar slots and temporaries,
    as codegen builds them: every op reads slots already holding a value."""
    kinds = [native.ARRAY] * n_arrays + [native.SCALAR] * n_scalars
    have = list(range(n_arrays + n_scalars))
    prog = []
    for _ in range(n_ops):
        op = rng.choice(list(UFUNC))
        a = have[-1] if rng.random() < 0.5 else int(rng.choice(have))  # chains, mostly
        b = int(rng.choice(have)) if op not in ("neg", "sqrt") else -1
        if kinds[a] == native.SCALAR and (b < 0 or kinds[b] == native.SCALAR):
            a = 0  # an op of scalars only has a scalar result: never in a chunked group
        if rng.random() < 0.4:
            d = int(rng.integers(n_arrays))  # into an array (in place, or an output of the group)
        else:
            d = len(kinds)
            kinds.append(native.TEMP)
            have.append(d)
        prog.append((str(op), d, a, b))
    temps = [j for j, k in enumerate(kinds) if k == native.TEMP]
    for j in range(n_arrays):  # every array sees some temporaries: none is computed for nothing
        if temps:
            prog.append(("sub" if j % 2 else "add", j, int(rng.choice(temps)), j))
    return kinds, prog


def _numpy_reference(kinds, prog, values):
    vals = [v.copy() if isinstance(v, np.ndarray) else v for v in values]
    for op, d, a, b in prog:
        args = [vals[a]] + ([vals[b]] if b >= 0 else [])
        with np.errstate(all="ignore"):
            res = UFUNC[op](*args)
        if kinds[d] == native.ARRAY:
            vals[d][...] = res
        else:
            vals[d] = res
    return vals


@needs_cc
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("seed", range(6))
def test_random_programs_give_numpys_bits(dtype, seed):
    rng = np.random.default_rng(seed)
    n = 3000 + seed  # not a multiple of anything
    kinds, prog = _random_program(rng, n_arrays=3, n_scalars=2, n_ops=8)
    arrays = [rng.standard_normal(n).astype(dtype) for _ in range(3)]
    arrays[0][:4] = [np.nan, np.inf, -np.inf, 0.0]  # and -0.0, tiny and huge values below
    arrays[1][:4] = [-0.0, 1e-38, 3e38, -2.5]
    scalars = [np.dtype(dtype).type(rng.standard_normal()) for _ in range(2)]
    values = arrays + scalars + [None] * (len(kinds) - 5)
    want = _numpy_reference(kinds, prog, values)
    group = native.Group(dtype, kinds, prog, n)
    assert group.ready(wait=True), group.status()
    got = [a.copy() for a in arrays]
    with np.errstate(all="ignore"):
        assert group(*got, *scalars, *[None] * (len(kinds) - 5))
    for j in range(3):
        np.testing.assert_array_equal(got[j], want[j], err_msg=f"slot {j} of {prog}")
        num = ~np.isnan(want[j])
        np.testing.assert_array_equal(np.signbit(got[j][num]), np.signbit(want[j][num]))  # -0.0 is not 0.0


@needs_cc
@pytest.mark.parametrize("threads", [1, 2])
def test_every_part_is_computed_on_one_lane_or_two(threads, monkeypatch):
    monkeypatch.setitem(chunks.state, "threads", threads)
    monkeypatch.setattr(native, "MIN_SPLIT", 1000)
    assert lanes.wait()  # two threads really take parts
    n = 100_003
    rng = np.random.default_rng(1)
    m, g, w = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    mu, lr = np.float32(0.9), np.float32(-0.01)
    want_m = m * mu + g
    want_w = w + want_m * lr
    group = native.Group("float32", [0, 0, 0, 1, 1, 2],
                         [("mul", 0, 0, 3), ("add", 0, 0, 1), ("mul", 5, 0, 4), ("add", 2, 2, 5)], n)
    assert group.ready(wait=True), group.status()
    assert group(m, g, w, mu, lr, None)
    np.testing.assert_array_equal(m, want_m)
    np.testing.assert_array_equal(w, want_w)


@needs_cc
def test_arrays_it_was_not_built_for_are_declined():
    n = 4096
    group = native.Group("float32", [0, 0, 2], [("add", 2, 0, 1), ("mul", 0, 2, 1)], n)
    assert group.ready(wait=True)
    a, b = np.ones(n, np.float32), np.ones(n, np.float32)
    assert not group(a.astype(np.float64), b, None)  # another dtype
    assert not group(np.ones(2 * n, np.float32)[::2], b, None)  # not contiguous
    assert not group(np.ones(n + 1, np.float32), np.ones(n + 1, np.float32), None)  # another size
    assert (a == 1).all()
    assert group(a, b, None) and (a == 2).all()


def _step(monkeypatch, native_on: bool):
    """Three SGD-momentum steps of a model with large weights: the parameters afterwards, and the generated code."""
    monkeypatch.setenv("GRAPHC_NATIVE", "1" if native_on else "0")
    gc.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 700), nn.ReLU(), nn.Linear(700, 400))  # 280K-weight layers
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    step = gc.compile(train_step(model, opt, nn.MSELoss()))
    rng = np.random.default_rng(3)
    for _ in range(4):
        step(gc.tensor(rng.standard_normal((8, 40), dtype=np.float32)),
             gc.tensor(rng.standard_normal((8, 400), dtype=np.float32)))
        native.wait_all()  # later steps run the C loops
    exe = [e for es in step._cache.values() for e in es][-1]
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}, exe.source


@needs_cc
def test_an_sgd_step_with_c_loops_matches_the_numpy_step_bit_for_bit(monkeypatch):
    ran = []
    real = native.Group.__call__
    monkeypatch.setattr(native.Group, "__call__", lambda self, *a: ran.append(real(self, *a)) or ran[-1])
    got, src = _step(monkeypatch, True)
    assert "native.Group(" in src and any(ran), native.status()
    want, src_numpy = _step(monkeypatch, False)
    assert "native" not in src_numpy
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.parametrize("cc", ["/nonexistent/cc", "false"])
def test_without_a_working_compiler_the_numpy_lines_run(cc, monkeypatch):
    monkeypatch.setenv("CC", cc)  # none on PATH; one that fails every build
    ran = []
    real = native.Group.__call__
    monkeypatch.setattr(native.Group, "__call__", lambda self, *a: ran.append(real(self, *a)) or ran[-1])
    got, src = _step(monkeypatch, True)
    assert "native.Group(" in src and ran and not any(ran)
    assert not native.wait_all()
    assert "not built" in native.status()
    want, _ = _step(monkeypatch, False)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_c_source_reads_each_array_once_and_writes_what_it_changed():
    src = native.c_source("float32", [0, 0, 0, 1, 1, 2],
                          [("mul", 0, 0, 3), ("add", 0, 0, 1), ("mul", 5, 0, 4), ("add", 2, 2, 5)])
    body = src.split("for (long i = s; i < e; i++) {")[1]
    assert body.count("a0[i]") == 2 and body.count("a1[i]") == 1 and body.count("a2[i]") == 2
    assert "a1[i] =" not in body  # read-only
    assert "const float *restrict a1" in src and "r5 = r0 * r4;" in src


pool = importlib.import_module("graphc.backends.numpy.pool")


@needs_cc
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,stride,hw", [((2, 2), (2, 2), (30, 30)), ((2, 2), (2, 2), (13, 13)),
                                               ((3, 3), (2, 2), (13, 11)), ((3, 3), (1, 1), (9, 9)),
                                               ((2, 3), (1, 2), (7, 9)), ((1, 1), (3, 3), (8, 8)),
                                               ((3, 2), (3, 1), (10, 5))])
def test_the_c_max_pool_gives_the_numpy_kernels_values_and_indices(dtype, kernel, stride, hw, monkeypatch):
    """Ties (rounded values: the first maximum wins), NaN (the index moves to every NaN, as in torch), -inf
    windows (the first element wins), on one and two threads."""
    rng = np.random.default_rng(sum(kernel) + 10 * sum(stride))
    xc = rng.standard_normal((5, 6) + hw).astype(dtype)
    flat = xc.reshape(-1)
    flat[rng.choice(flat.size, 40, replace=False)] = np.nan
    xc[1, 2] = -np.inf
    xc[2] = np.round(xc[2])
    x = xc.transpose(1, 0, 2, 3)  # CNHW memory, as convolutions leave activations
    kw = dict(kernel_size=kernel, stride=stride, padding=(0, 0))
    monkeypatch.setattr(pool, "_c_lib", [])
    monkeypatch.setenv("GRAPHC_NATIVE", "0")
    want = pool.max_pool2d_with_indices(x, **kw)
    monkeypatch.setenv("GRAPHC_NATIVE", "1")
    assert pool._c_max_pool(x, kernel, stride, (0, 0), want[0].shape[2:]) is None  # the build has only started
    assert native.wait_all(), native.status()
    assert lanes.wait()  # two threads really take parts
    monkeypatch.setattr(pool, "C_SPLIT", 1)  # split the planes between the threads whenever two are allowed
    for threads in (1, 2):
        monkeypatch.setitem(chunks.state, "threads", threads)
        got = pool._c_max_pool(x, kernel, stride, (0, 0), want[0].shape[2:])
        assert got is not None
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert got[1].dtype == np.int64 and got[0].transpose(1, 0, 2, 3).flags.c_contiguous


@needs_cc
def test_the_c_max_pool_leaves_padding_and_other_layouts_to_numpy(monkeypatch):
    monkeypatch.setattr(pool, "_c_lib", [])
    pool._c_max_pool(np.zeros((1, 1, 4, 4), np.float32), (2, 2), (2, 2), (0, 0), (2, 2))
    assert native.wait_all()
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)  # NCHW memory
    assert pool._c_max_pool(x, (2, 2), (2, 2), (0, 0), (4, 4)) is None
    xc = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    assert pool._c_max_pool(xc, (3, 3), (2, 2), (1, 1), (4, 4)) is None  # padding
    assert pool._c_max_pool(xc.astype(np.int32), (2, 2), (2, 2), (0, 0), (4, 4)) is None
    assert pool._c_max_pool(xc, (2, 2), (2, 2), (0, 0), (4, 4)) is not None


@needs_cc
def test_a_damaged_cache_entry_is_built_again():
    kinds, prog = [0, 0, 2], [("add", 2, 0, 1), ("mul", 0, 2, 1)]
    entry = native.cache_path(native.c_source("float32", kinds, prog))
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"not a library")  # a build cut short, a full disk
    group = native.Group("float32", kinds, prog, 64)
    assert group.ready(wait=True), group.status()
    a, b = np.ones(64, np.float32), np.full(64, 2, np.float32)
    assert group(a, b, None) and (a == 6).all()


@needs_cc
def test_a_forked_child_leaves_its_parents_build_alone(monkeypatch):
    group = native.Group("float32", [0, 0, 2], [("add", 2, 0, 1), ("mul", 0, 2, 1)], 64)
    build = group._build
    assert build.proc is not None
    monkeypatch.setattr(build, "pid", build.pid + 1)  # as a child of the building process sees it
    assert not group.ready(wait=True) and "forked" in group.status()


@needs_cc
def test_the_line_profiler_times_a_c_loop_at_its_call(monkeypatch):
    """benchmarks/lineprofile.py times a group's C loop once at its call, and the rewritten code still computes
    what the executable does (the numpy lines it skips are not timed)."""
    import re
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    from benchmarks.lineprofile import instrument, profile_step

    n = native.MIN_ELEMENTS + 5
    rng = np.random.default_rng(4)
    xa, ya = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
    f = gc.compile(lambda x, y: (x * 3.0 + y) * x - y * 0.5)
    args = (gc.tensor(xa), gc.tensor(ya))
    f(*args)
    assert native.wait_all(), native.status()
    want = f(*args).numpy()
    exe = [e for es in f._cache.values() for e in es][0]
    fn, times, lines = instrument(exe.source, re.search(r"^def (\w+)\(", exe.source, re.M).group(1))
    out = fn(*exe._gather(exe._leaves(args, {})))
    np.testing.assert_array_equal(out[0] if isinstance(out, tuple) else out, want)
    call = next(i for i, line in enumerate(lines) if line.strip().startswith("if not native_"))
    assert len(times[call]) == 1
    assert not any("run_chunks" in lines[i] for i in times)  # the C loop ran: the numpy chunks did not
    assert "fused group, C loop" in profile_step(exe, args, rounds=1)


def test_a_group_too_small_for_numpy_chunks_still_computes_when_its_c_loop_declines(monkeypatch):
    """Groups of 16K-256K elements are emitted for a C loop only; while it declines (here: no compiler) they run
    as numpy chunks, and give the whole-array lines' numbers."""
    monkeypatch.setenv("CC", "/nonexistent/cc")
    n = native.MIN_ELEMENTS + 5
    assert n < chunks.MIN_ELEMENTS
    rng = np.random.default_rng(5)
    xa, ya = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
    fn = lambda x, y: (x * 3.0 + y) * x - y * 0.5  # noqa: E731
    f = gc.compile(fn)
    got = f(gc.tensor(xa), gc.tensor(ya)).numpy()
    exe = [e for es in f._cache.values() for e in es][0]
    assert "native.Group(" in exe.source and "chunks.run_chunks(" in exe.source
    monkeypatch.setenv("GRAPHC_NATIVE", "0")
    g = gc.compile(fn)
    want = g(gc.tensor(xa), gc.tensor(ya)).numpy()
    assert "chunks.run_chunks(" not in [e for es in g._cache.values() for e in es][0].source  # whole-array lines
    np.testing.assert_array_equal(got, want)


elementwise = importlib.import_module("graphc.backends.numpy.elementwise")


@needs_cc
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["c", "cnhw"])
def test_select_c_gives_wheres_bits(dtype, layout, monkeypatch):
    """where(c, 0, x) and where(c, x, 0) (a ReLU's gradient) by select.c: numpy's bits for NaN, inf and -0.0, in
    place or into another array, split over two threads or not."""
    monkeypatch.setattr(elementwise, "_select", {})
    monkeypatch.setattr(elementwise, "SELECT_FROM", 64)
    rng = np.random.default_rng(3)
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1.5, -2.0, 3.0])
    x = rng.choice(special, (5, 4, 6, 7)).astype(dtype)
    c = rng.random((5, 4, 6, 7)) > 0.5
    if layout == "cnhw":
        x, c = (np.ascontiguousarray(a.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3) for a in (x, c))
    zero = np.asarray(dtype(0))
    assert not elementwise._c_select(c, x, np.empty_like(x), keep=False)  # the build has only started
    assert native.wait_all(), native.status()
    assert lanes.wait()  # two threads really take parts
    for split in (1 << 40, 128):
        monkeypatch.setattr(elementwise, "SELECT_SPLIT", split)
        for threads in (1, 2):
            monkeypatch.setitem(chunks.state, "threads", threads)
            for a, b in [(zero, x), (x, zero)]:
                want = np.where(c, a, b)
                out = np.empty_like(x)
                assert elementwise._c_select(c, x, out, keep=b is zero)
                np.testing.assert_array_equal(out.view(np.uint8), want.view(np.uint8))
                buf = x.copy(order="K")
                assert elementwise.where(c, a if a is zero else buf, buf if b is not zero else b, out=buf) is buf
                np.testing.assert_array_equal(buf.view(np.uint8), want.view(np.uint8))
    flat = x.copy(order="K").reshape(-1) if layout == "c" else None
    if flat is not None:  # out overlapping x one element on: numpy's ufuncs, same bits as np.where on a copy
        shifted_x, shifted_out = flat[:-1].reshape(-1), flat[1:].reshape(-1)
        want = np.where(c.reshape(-1)[:-1], zero, shifted_x.copy())
        assert not elementwise._c_select(c.reshape(-1)[:-1], shifted_x, shifted_out, keep=False)
        np.testing.assert_array_equal(elementwise.where(c.reshape(-1)[:-1], zero, shifted_x, out=shifted_out)
                                      .view(np.uint8), want.view(np.uint8))
    mixed = np.ascontiguousarray(c)  # another memory order than x's: numpy's ufuncs, same bits
    if layout == "cnhw":
        assert not elementwise._c_select(mixed, x, np.empty_like(x), keep=False)
    np.testing.assert_array_equal(elementwise.where(mixed, zero, x).view(np.uint8),
                                  np.where(mixed, zero, x).view(np.uint8))


@needs_cc
def test_pool_and_select_read_nothing_past_their_arrays(monkeypatch):
    """Inputs ending at the last readable byte (the next page unmapped): the 2x2 pooling's vectors that read past a
    row pair, and select.c, must stop at the array's end (a crash otherwise)."""
    from guarded import guarded

    monkeypatch.setattr(pool, "_c_lib", [])
    monkeypatch.setattr(elementwise, "_select", {})
    monkeypatch.setattr(elementwise, "SELECT_FROM", 64)
    rng = np.random.default_rng(4)
    for hw in ((30, 30), (13, 13), (6, 7)):
        xc = guarded(rng.standard_normal((3, 2) + hw).astype(np.float32))
        x = xc.transpose(1, 0, 2, 3)
        out_hw = (hw[0] // 2, hw[1] // 2)
        monkeypatch.setenv("GRAPHC_NATIVE", "0")
        want = pool.max_pool2d_with_indices(x, kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))
        monkeypatch.setenv("GRAPHC_NATIVE", "1")
        pool._c_max_pool(x, (2, 2), (2, 2), (0, 0), out_hw)
        assert native.wait_all()
        got = pool._c_max_pool(x, (2, 2), (2, 2), (0, 0), out_hw)
        assert got is not None
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    c = guarded(rng.random(1000) > 0.5)
    v = guarded(rng.standard_normal(1000).astype(np.float32))
    elementwise._c_select(c, v, np.empty_like(v), keep=False)
    assert native.wait_all()
    out = np.empty_like(v)
    assert elementwise._c_select(c, v, out, keep=False)
    np.testing.assert_array_equal(out, np.where(c, np.float32(0), v))


@needs_cc
@pytest.mark.parametrize("layout", ["cnhw", "nchw"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,stride,padding,hw", [((3, 3), (2, 2), (1, 1), (32, 32)),
                                                      ((3, 3), (1, 1), (0, 0), (9, 7)),
                                                      ((2, 3), (1, 2), (1, 1), (6, 11)),
                                                      ((2, 2), (2, 2), (0, 0), (30, 30)),
                                                      ((3, 2), (3, 2), (0, 0), (10, 7))])
def test_the_c_scatter_of_pool_gradients_gives_numpys_bits(dtype, kernel, stride, padding, hw, layout, monkeypatch):
    """Overlapping windows (ResNet's 3x3 at stride 2) share winners, so their gradients add up: pool.c's per-plane
    double sums against numpy's bincount, bit for bit (rounded maxima make many shared winners; inf and NaN in the
    gradient). Windows that do not overlap (LeNet's 2x2) are stored, -0.0 included, as numpy's assignment does.
    On one and two threads, with the gradient's planes in (C, N) or numpy's (N, C) order; an index outside its
    plane leaves the work to numpy."""
    from guarded import guarded

    rng = np.random.default_rng(sum(hw))
    xc = np.round(rng.standard_normal((4, 3) + hw)).astype(dtype)
    x = xc.transpose(1, 0, 2, 3)
    kw = dict(kernel_size=kernel, stride=stride, padding=padding)
    overlap = stride[0] < kernel[0] or stride[1] < kernel[1]
    _, idx = pool.max_pool2d_with_indices(x, **kw)
    gcnhw = rng.standard_normal((4, 3) + idx.shape[2:]).astype(dtype)
    gcnhw.reshape(-1)[:4] = [np.inf, np.nan, -np.inf, -0.0]
    if layout == "cnhw":
        g = guarded(gcnhw).transpose(1, 0, 2, 3)
    else:
        g = guarded(np.ascontiguousarray(gcnhw.transpose(1, 0, 2, 3)))
    idx = guarded(np.ascontiguousarray(idx.transpose(1, 0, 2, 3))).transpose(1, 0, 2, 3)
    monkeypatch.setattr(pool, "_c_lib", [])
    monkeypatch.setenv("GRAPHC_NATIVE", "0")
    want = pool.max_pool2d_indices_grad(g, idx, input_hw=hw, **kw)
    monkeypatch.setenv("GRAPHC_NATIVE", "1")
    pool._pool_lib()
    assert native.wait_all() and lanes.wait()
    monkeypatch.setattr(pool, "C_SPLIT", 1)
    for threads in (1, 2):
        monkeypatch.setitem(chunks.state, "threads", threads)
        assert pool._c_scatter(pool._cn(g), pool._cn(idx), hw, overlap) is not None
        got = pool.max_pool2d_indices_grad(g, idx, input_hw=hw, **kw)
        np.testing.assert_array_equal(got.view(np.uint8 if dtype == np.float32 else np.uint64),
                                      want.view(np.uint8 if dtype == np.float32 else np.uint64))
    bad = np.ascontiguousarray(pool._cn(idx))
    bad[0, 0, 0, 0] = hw[0] * hw[1]  # one past the plane
    assert pool._c_scatter(pool._cn(g), bad, hw, overlap) is None


def test_address_is_the_first_elements():
    """native.address, the fast pointer for C calls, against numpy's a.ctypes.data on every kind of array."""
    a = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    ro = a.copy()
    ro.flags.writeable = False
    views = (a, a[1:], a[:, 2:], a.transpose(2, 0, 1), a[::-1], ro, ro[1:], np.empty(0, np.float32), a.reshape(-1)[7:])
    for v in views:
        assert native.address(v) == v.ctypes.data
