"""Reliability (issue 9): no silent wrong results, nothing lost on failure, anomaly mode everywhere,
and compiled functions under load. The error messages themselves are in test_error_catalogue.py."""
from __future__ import annotations

import contextlib
import gc as pygc
import os
import sys
import threading
import zipfile

import numpy as np
import pytest
from steps import save_tiny_step

import graphc as gc
import graphc.nn.functional as F
from graphc import nn, optim
from graphc.io.artifact import ArtifactError

THIS = os.path.basename(__file__)


def _np(t):
    return t.detach().numpy().copy()


def _close(a, b, tol=1e-5):
    np.testing.assert_allclose(_np(a) if isinstance(a, gc.Tensor) else a, _np(b) if isinstance(b, gc.Tensor) else b,
                               rtol=tol, atol=tol)


# ---- 2. the cache never reuses a graph that no longer fits ----------------------------------------------------

def test_requires_grad_flip_recompiles_and_matches_eager():
    def f(x, w):
        return ((x @ w).tanh() * x.sum()).sum()

    cf = gc.compile(f)
    x, w = gc.randn(3, 4), gc.randn(4, 2)
    assert not cf(x, w).requires_grad
    w.requires_grad_()
    out = cf(x, w)
    assert out.requires_grad
    out.backward()
    g_compiled = _np(w.grad)
    w.grad = None
    f(x, w).backward()
    _close(g_compiled, w.grad)
    x.requires_grad_()  # now x too: a third graph, both gradients right
    w.grad = None
    cf(x, w).backward()
    gx, gw = _np(x.grad), _np(w.grad)
    x.grad = w.grad = None
    f(x, w).backward()
    _close(gx, x.grad)
    _close(gw, w.grad)
    info = cf.cache_info()
    assert info.entries == 3 and "w: requires_grad False -> True" in info.reasons[0]
    assert "x: requires_grad False -> True" in info.reasons[1]


def test_train_eval_flip_recompiles_and_matches_eager():
    gc.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    twin = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    twin.load_state_dict(model.state_dict())
    cm = gc.compile(model)
    x = gc.randn(3, 2, 6, 6)
    for mode in ("train", "eval", "train", "eval"):
        getattr(model, mode)()
        getattr(twin, mode)()
        _close(cm(x), twin(x))
        for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
            _close(a, b)  # running statistics updated in train mode only, by both
    info = cm.cache_info()
    assert info.entries == 2 and info.calls == 4
    assert any("training True -> False" in r for r in info.reasons)


def test_dtype_and_shape_changes_recompile_and_match_eager():
    def f(x):
        return (x.exp() / x.exp().sum(-1, keepdim=True)).amax(0)

    cf = gc.compile(f)
    for shape, dtype in [((3, 4), gc.float32), ((3, 4), gc.float64), ((5, 2), gc.float64), ((3, 4), gc.float32)]:
        x = gc.randn(*shape, dtype=dtype)
        out = cf(x)
        assert out.dtype == dtype and out.shape == (shape[1],)
        _close(out, f(x), 1e-6)
    assert cf.cache_info().entries == 3


def test_new_parameter_tensor_recompiles_and_matches_eager():
    gc.manual_seed(1)
    lin = nn.Linear(3, 2)
    cl = gc.compile(lin)
    x = gc.randn(4, 3)
    _close(cl(x), lin(x))
    lin.weight = nn.Parameter(gc.randn(2, 3))  # a new tensor object: must not read the old one
    _close(cl(x), lin(x))
    lin.bias = nn.Parameter(gc.randn(5)[:2])  # new tensor, same shape
    _close(cl(x), lin(x))
    with gc.no_grad():
        lin.weight.mul_(3)  # same tensor, new values: read at call time, no recompile needed
    _close(cl(x), lin(x))
    info = cl.cache_info()
    assert info.entries == 3
    assert info.reasons == ["weight: a different tensor object", "bias: a different tensor object"]


def test_new_parameter_tensor_in_a_training_step():
    gc.manual_seed(2)
    runs = []
    for compiled in (False, True):
        model = nn.Linear(3, 1)
        with gc.no_grad():
            model.weight.copy_(gc.tensor([[0.1, -0.2, 0.3]]))
            model.bias.zero_()
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)

        def step(x, y, model=model, opt=opt):
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            return loss

        run = gc.compile(step) if compiled else step
        x, y = gc.ones(8, 3), gc.full((8, 1), 2.0)
        run(x, y)
        new = nn.Parameter(gc.zeros(1, 3))  # swapped in both the model and the optimizer
        model.weight = new
        opt.param_groups[0]["params"][0] = new
        run(x, y)
        run(x, y)
        runs.append((_np(new), _np(model.bias)))
    _close(runs[1][0], runs[0][0])
    _close(runs[1][1], runs[0][1])
    assert not np.allclose(runs[1][0], 0)  # the update went to the new parameter, not the old one


def test_new_parameter_reached_through_a_trainer_object():
    class Trainer:
        def __init__(self):
            self.model = nn.Linear(3, 2)

        def predict(self, x):
            return self.model(x).tanh()

    t = Trainer()
    predict = gc.compile(t.predict)
    x = gc.randn(4, 3)
    _close(predict(x), t.predict(x))
    t.model.weight = nn.Parameter(gc.randn(2, 3))
    _close(predict(x), t.predict(x))
    t.model = nn.Linear(3, 2)  # a whole new module
    _close(predict(x), t.predict(x))
    assert predict.cache_info().entries == 3


def test_grad_mode_change_recompiles_and_matches_eager():
    def f(x):
        return (x.sin() * x).sum()

    cf = gc.compile(f)
    x = gc.randn(5, requires_grad=True)
    with gc.no_grad():
        out = cf(x)
    assert not out.requires_grad and out.grad_fn is None
    _close(out, f(x))
    out = cf(x)
    assert out.requires_grad
    out.backward()
    g = _np(x.grad)
    x.grad = None
    f(x).backward()
    _close(g, x.grad)
    with gc.no_grad():
        cf(x)
    assert cf.cache_info().entries == 2


# ---- 2b. in-place updates of saved tensors: torch's error, never a wrong gradient -------------------------------

INPLACE = "one of the variables needed for gradient computation has been modified by an inplace operation"


def test_inplace_on_saved_input_raises_in_eager():
    w, x = gc.randn(3, requires_grad=True), gc.randn(3)
    y = (w * x).sum()
    x.mul_(5)  # x was saved for w's gradient: the old answer would be silently wrong
    with pytest.raises(RuntimeError, match=INPLACE):
        y.backward()


def test_inplace_through_detach_or_view_is_seen():
    w = gc.randn(2, 3, requires_grad=True)
    y = w.exp()
    y.detach().add_(1)  # shares y's version counter, as in torch
    with pytest.raises(RuntimeError, match=INPLACE):
        y.sum().backward()
    a = gc.randn(2, 3)
    z = (w * a).sum()
    a.reshape(6).mul_(2)  # a view shares its base's version counter
    with pytest.raises(RuntimeError, match=INPLACE):
        z.backward()


def test_inplace_on_values_not_saved_still_works():
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    c = y + 1  # add saves nothing
    y.add_(1)
    c.sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]
    x.grad = None
    y = x * 2
    y.mul_(x)  # the in-place op's own saved value is kept
    y.mul_(x)
    y.sum().backward()
    _close(x.grad, 6 * x.detach() ** 2)
    x.grad = None
    w = gc.randn(4, 3, requires_grad=True)
    h = x.reshape(1, 2) @ gc.ones(2, 4)
    h2 = (h @ w).relu_()  # ReLU(inplace=True) after a matmul, as in ResNets
    h2.sum().backward()
    assert x.grad is not None and w.grad is not None


def test_inplace_relu_model_trains_eager_and_compiled():
    gc.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(inplace=True), nn.Flatten(),
                          nn.Linear(12, 2))
    x = gc.randn(2, 1, 4, 4)
    model(x).sum().backward()
    eager = [_np(p.grad) for p in model.parameters()]
    model.zero_grad()
    gc.compile(model)(x).sum().backward()
    for g, p in zip(eager, model.parameters()):
        _close(g, p.grad, 1e-4)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_inplace_through_a_view_reaches_the_base(compiled):
    def f(x, w):
        y = x * w  # has autograd history when w requires grad
        y[0].mul_(2)
        y.reshape(-1)[1:3].add_(10)
        y.t()[2].sub_(100)
        z = x.clone()
        z[0][1].zero_()  # a 0-d view (numpy's x[0] copies; the base still sees the write)
        return y, z

    run = gc.compile(f) if compiled else f
    x = gc.arange(6).float().reshape(2, 3)
    w = gc.ones(2, 3, requires_grad=True)
    y, z = run(x, w)
    assert y.tolist() == [[0.0, 12.0, -86.0], [3.0, 4.0, -95.0]]  # torch's values
    assert z.tolist() == [[0.0, 0.0, 2.0], [3.0, 4.0, 5.0]]
    y.sum().backward()
    assert w.grad.tolist() == [[0.0, 2.0, 4.0], [3.0, 4.0, 5.0]]  # d/dw of (2*x*w) in row 0


def test_inplace_on_input_saved_by_compiled_function_raises():
    f = gc.compile(lambda w, x: (w * x).sum())
    w, x = gc.randn(3, requires_grad=True), gc.randn(3)
    loss = f(w, x)
    x.mul_(2)
    with pytest.raises(RuntimeError, match=INPLACE):
        loss.backward()
    loss = f(w, x)  # untouched inputs: fine
    loss.backward()
    _close(w.grad, x)


# ---- 3. nothing lost ---------------------------------------------------------------------------------------------

class BoomError(Exception):
    pass


def _snapshot(model, opt):
    params = {k: _np(v) for k, v in model.state_dict().items()}
    grads = {k: None if p.grad is None else _np(p.grad) for k, p in model.named_parameters()}
    state = [{k: _np(v) if isinstance(v, gc.Tensor) else v for k, v in st.items()} for st in opt.state.values()]
    return params, grads, state


def _same(a, b):
    pa, ga, sa = a
    pb, gb, sb = b
    assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert all((ga[k] is None) == (gb[k] is None) and (ga[k] is None or np.array_equal(ga[k], gb[k])) for k in ga)
    assert len(sa) == len(sb)
    for x, y in zip(sa, sb):
        assert x.keys() == y.keys()
        for k in x:
            assert np.array_equal(np.asarray(x[k]), np.asarray(y[k]))


def _training(opt_cls, **kw):
    gc.manual_seed(4)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8) if hasattr(nn, "BatchNorm1d") else nn.ReLU(),
                          nn.ReLU(), nn.Linear(8, 2))
    opt = opt_cls(model.parameters(), **kw)

    @gc.compile
    def step(x, y):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return model, opt, step


@contextlib.contextmanager
def _failing_kernel(monkeypatch, compiled, op, nth):
    """Make the nth call of a numpy kernel raise, in code generated from now on and in code already generated."""
    from graphc.backends.numpy import KERNELS

    real, calls = KERNELS[op], []

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == nth:
            raise BoomError(f"kernel {op} failed")
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setitem(KERNELS, op, failing)
        for exes in compiled._cache.values():
            for exe in exes if isinstance(exes, list) else [exes]:
                for fn in (exe._fn, exe._bwd):
                    for ns in _kernel_namespaces(fn):
                        m.setattr(ns, op, failing)
        yield


def _kernel_namespaces(fn, depth=0):
    """The `k` kernel namespace(s) generated code reads, looking through wrappers (closures, __wrapped__)."""
    if fn is None or depth > 3:
        return []
    found = [fn.__globals__["k"]] if "k" in getattr(fn, "__globals__", {}) else []
    inner = [getattr(fn, "__wrapped__", None)] + [c.cell_contents for c in (getattr(fn, "__closure__", None) or ())
                                                  if callable(c.cell_contents)]
    for f in inner:
        found += _kernel_namespaces(f, depth + 1)
    return found


@pytest.mark.parametrize("opt_cls,kw", [(optim.SGD, {"lr": 0.1, "momentum": 0.9}), (optim.Adam, {"lr": 0.01})],
                         ids=["sgd-momentum", "adam"])
@pytest.mark.parametrize("when", ["first-call", "later-call"])
def test_failing_compiled_step_changes_nothing(opt_cls, kw, when, monkeypatch):
    model, opt, step = _training(opt_cls, **kw)
    x, y = gc.randn(5, 4), gc.randn(5, 2)
    if when == "later-call":
        step(x, y)
        step(x, y)
    before = _snapshot(model, opt)

    with _failing_kernel(monkeypatch, step, "matmul", 3):  # the third matmul: mid-way through the backward
        with pytest.raises(BoomError):
            step(x, y)
    _same(before, _snapshot(model, opt))
    step(x, y)  # and it still trains afterwards
    assert not np.array_equal(before[0]["0.weight"], _np(model[0].weight))


def test_anomaly_in_a_compiled_step_changes_nothing():
    model, opt, step = _training(optim.Adam, lr=0.01)
    x, y = gc.randn(5, 4), gc.randn(5, 2)
    step(x, y)
    before = _snapshot(model, opt)
    bad = gc.tensor(np.full((5, 4), np.nan, np.float32))
    with gc.detect_anomaly(), pytest.raises(RuntimeError, match="detect_anomaly: op '") as e:
        step(bad, y)
    assert f"{THIS}:" in str(e.value)
    _same(before, _snapshot(model, opt))


def test_failed_load_state_dict_changes_nothing():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4) if hasattr(nn, "BatchNorm1d") else nn.ReLU())
    before = {k: _np(v) for k, v in model.state_dict().items()}
    good = {k: np.full(v.shape, 7.0, np.float32) for k, v in before.items()}
    bad_cases = [
        {k: v for k, v in good.items() if k != "0.bias"},  # missing
        {**good, "extra": np.zeros(1)},  # unexpected
        {**good, "0.weight": np.zeros((4, 4))},  # mis-shaped, after good keys in order
        {**good, "0.bias": np.array(["a", "b", "c", "d"])},  # cannot be converted
    ]
    for sd in bad_cases:
        with pytest.raises(RuntimeError, match="Error\\(s\\) in loading state_dict"):
            model.load_state_dict(sd)
        for k, v in model.state_dict().items():
            assert np.array_equal(_np(v), before[k]), k
    with pytest.raises(RuntimeError, match="size mismatch"):  # even with strict=False, as torch
        model.load_state_dict({"0.weight": np.zeros((4, 4)), "0.bias": np.ones(4)}, strict=False)
    assert np.array_equal(_np(model[0].bias), before["0.bias"])
    model.load_state_dict(good)
    assert np.all(_np(model[0].weight) == 7.0)


def _save_step(path):
    return save_tiny_step(path)


def test_failed_gc_load_changes_nothing(tmp_path):
    path = tmp_path / "step.graphc"
    _save_step(path)
    good = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        items = {n: z.read(n) for n in z.namelist()}
    items["state.npz"] = items["state.npz"][:-10] + b"0123456789"
    bad = tmp_path / "bad.graphc"
    with zipfile.ZipFile(bad, "w") as z:
        for n, v in items.items():
            z.writestr(n, v)
    bad_bytes = bad.read_bytes()
    with pytest.raises(ArtifactError, match="sha256"):
        gc.load(str(bad))
    assert bad.read_bytes() == bad_bytes and path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.graphc", "step.graphc"]
    loaded = gc.load(str(path))  # and a good file still loads and runs
    assert np.isfinite(loaded(gc.randn(8, 4), gc.randn(8, 3)).item())


@pytest.mark.parametrize("interrupt", [BoomError, KeyboardInterrupt])
def test_interrupted_save_leaves_no_partial_file(tmp_path, monkeypatch, interrupt):
    path = tmp_path / "step.graphc"
    exe = _save_step(path)
    old = path.read_bytes()
    real = zipfile.ZipFile.writestr
    written = []

    def dying_writestr(self, name, data, *a, **k):
        written.append(name)
        if len(written) == 3:  # after the manifest and one member: the file on disk is half-written
            raise interrupt()
        return real(self, name, data, *a, **k)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", dying_writestr)
    with pytest.raises(interrupt):
        exe.save(str(path))  # over an existing artifact: it survives untouched
    written.clear()
    with pytest.raises(interrupt):
        exe.save(str(tmp_path / "new.graphc"))  # a new name: nothing appears under it
    monkeypatch.setattr(zipfile.ZipFile, "writestr", real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step.graphc"]  # no temp file left either
    assert path.read_bytes() == old
    gc.load(str(path))


# ---- 4. anomaly mode ---------------------------------------------------------------------------------------------

def _line_of(fn, text):
    import inspect

    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, ln in enumerate(lines) if text in ln)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_anomaly_forward_names_op_phase_and_line(compiled):
    class Head(nn.Module):
        def forward(self, x):
            return (x - 2).log()  # NaN here

    model = nn.Sequential(nn.ReLU(), Head())
    run = gc.compile(model) if compiled else model
    with gc.detect_anomaly(), pytest.raises(RuntimeError) as e:
        run(gc.ones(3))
    msg = str(e.value)
    assert "op 'log' produced NaN/Inf" in msg and "forward phase" in msg and "in module 1" in msg
    assert f"{THIS}:{_line_of(Head.forward, 'NaN here')}" in msg
    run(gc.ones(3))  # outside anomaly mode: NaN, no error, no warning
    last = e.traceback[-1]
    assert os.path.basename(str(last.path)) == THIS


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_anomaly_backward_names_phase_and_line(compiled):
    def f(x):
        return x.sqrt().sum()  # inf gradient at 0

    x = gc.tensor([0.0, 4.0], requires_grad=True)
    run = gc.compile(f) if compiled else f
    with gc.detect_anomaly(), pytest.raises(RuntimeError) as e:
        run(x).backward()
    msg = str(e.value)
    assert "backward phase" in msg and f"{THIS}:{_line_of(f, 'inf gradient')}" in msg
    assert ("SqrtBackward0" in msg) if not compiled else ("op 'div'" in msg)
    assert x.grad is None


def test_anomaly_in_compiled_step_backward_phase():
    w = gc.tensor([0.0, 1.0], requires_grad=True)

    @gc.compile
    def step(x):
        loss = (w.sqrt() * x).sum()  # the backward of this sqrt divides by zero
        loss.backward()
        return loss

    with gc.detect_anomaly(), pytest.raises(RuntimeError) as e:
        step(gc.ones(2))
    assert "backward phase of a compiled graph" in str(e.value)
    assert f"{THIS}:{_line_of(step.fn, 'divides by zero')}" in str(e.value)
    assert w.grad is None
    step(gc.ones(2))  # without anomaly mode it runs (inf gradient, as eager)
    assert np.isinf(_np(w.grad)[0])


def test_anomaly_reports_the_first_bad_op_only():
    def f(x):
        y = x.log()  # first
        return (y * 0).exp()  # nan again, later

    for run in (f, gc.compile(f)):
        with gc.detect_anomaly(), pytest.raises(RuntimeError, match="op 'log'"):
            run(gc.tensor([-1.0, 1.0]))


# ---- 6. under load -----------------------------------------------------------------------------------------------

def test_threads_share_one_compiled_function():
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh() if hasattr(nn, "Tanh") else nn.ReLU(), nn.Linear(32, 4))
    cm = gc.compile(model)
    xs = [gc.randn(8, 16) for _ in range(8)]
    want = [_np(model(x)) for x in xs]
    out: list = [None] * 8
    barrier = threading.Barrier(8)

    def worker(i):
        barrier.wait()
        for _ in range(20):
            out[i] = _np(cm(xs[i]))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, inside tracing too
    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    for o, w in zip(out, want):
        _close(o, w)
    info = cm.cache_info()
    assert info.builds == 1 and info.entries == 1 and info.calls == 160


def test_two_compiled_functions_over_one_model_build_concurrently():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    x = gc.randn(4, 8)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(5):
            fns = [gc.compile(lambda x, k=k: model(x) * k) for k in range(4)]
            out: list = [None] * 4
            barrier = threading.Barrier(4)

            def worker(i, fns=fns, out=out, barrier=barrier):
                barrier.wait()
                try:
                    out[i] = _np(fns[i](x))
                except Exception as exc:  # noqa: BLE001
                    out[i] = exc

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            base = _np(model(x))
            for k, o in enumerate(out):
                assert not isinstance(o, Exception), o
                _close(o, base * k)
    finally:
        sys.setswitchinterval(old)


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return None


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc to read RSS")
def test_repeated_compiled_calls_do_not_grow_memory():
    w = gc.randn(32, 32, requires_grad=True)
    f = gc.compile(lambda x: (x @ w).tanh().sum())
    x = gc.randn(8, 32)
    for _ in range(200):  # warm up: caches, allocator pools
        f(x).backward()
    pygc.collect()
    before = _rss_mb()
    for _ in range(10_000):
        f(x).backward()  # forward, compiled backward, gradient accumulation
    pygc.collect()
    grown = _rss_mb() - before
    assert grown < 20, f"RSS grew by {grown:.1f} MB over 10,000 calls"
    assert f.cache_info().entries == 2  # w.grad None, then w.grad present
