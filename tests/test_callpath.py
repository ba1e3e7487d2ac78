"""The steady-state call path (graphc/callpath.py and the one-function backward walk in passes/autodiff.py):
after the first call, a compiled function that reaches no module, optimizer or captured tensor is found by a
fingerprint of its arguments. Every test below checks that this shortcut gives what the full path gives:
values and gradients against PyTorch (or float64 finite differences), recompiles when the arguments or the
function's reach change, version counters, .grad accumulation, retain_graph, anomaly mode and errors that
end at the user's line."""
from __future__ import annotations

import importlib
import threading

import numpy as np
import pytest
from error_catalogue import FILENAME, Case, run_case

import graphc as gc
from graphc import callpath, nn

torch = pytest.importorskip("torch")
gcompile = importlib.import_module("graphc.compile")  # (gc.compile is the function)

A0, B0 = np.array([2.0, 3.0], np.float32), np.array([6.0, 4.0], np.float32)


def _seed_q(a, b):
    return 3 * a ** 3 - b ** 2


def _torch_q(a0, b0, gradient):
    a, b = torch.tensor(a0, requires_grad=True), torch.tensor(b0, requires_grad=True)
    q = 3 * a ** 3 - b ** 2
    q.backward(gradient=torch.tensor(gradient))
    return q.detach().numpy(), a.grad.numpy(), b.grad.numpy()


def _close(a, b, tol=1e-5):
    np.testing.assert_allclose(a.detach().numpy() if isinstance(a, gc.Tensor) else a,
                               b.detach().numpy() if isinstance(b, gc.Tensor) else b, rtol=tol, atol=tol)


@pytest.fixture
def describes(monkeypatch):
    """How many calls went down the full path (built a cache key)."""
    count = [0]
    real = gcompile._describe

    def counting(*a, **k):
        count[0] += 1
        return real(*a, **k)

    monkeypatch.setattr(gcompile, "_describe", counting)
    monkeypatch.setattr(callpath, "VERIFY", False)  # (verifying computes the full key on every reuse)
    return count


def test_steady_calls_skip_the_cache_key_and_match_torch(describes):
    q = gc.compile(_seed_q)
    a, b = gc.tensor(A0, requires_grad=True), gc.tensor(B0, requires_grad=True)
    ones = gc.ones(2)
    want_q, want_a, want_b = _torch_q(A0, B0, np.ones(2, np.float32))
    for _ in range(4):
        a.grad = b.grad = None
        out = q(a, b)
        out.backward(gradient=ones)
        _close(out, want_q)
        _close(a.grad, want_a)
        _close(b.grad, want_b)
    assert describes[0] == 1  # only the first call built a key
    info = q.cache_info()
    assert info.builds == 1 and info.calls == 4


def test_a_function_with_a_module_reuses_its_key_until_the_module_changes(describes):
    lin = nn.Linear(3, 2)
    f = gc.compile(lambda x: lin(x).sum())
    x = gc.randn(4, 3)
    for _ in range(4):
        f(x).backward()
    # the first call's backward gave the parameters gradients (a change to the key); later ones accumulate
    assert describes[0] == 2
    lin.weight = nn.Parameter(gc.randn(2, 3))  # a new parameter tensor: the full path sees it
    lin.weight.grad = None
    f(x).backward()
    tw = torch.tensor(lin.weight.detach().numpy(), requires_grad=True)
    tb = torch.tensor(lin.bias.detach().numpy())
    (torch.tensor(x.numpy()) @ tw.T + tb).sum().backward()
    _close(lin.weight.grad, tw.grad.numpy())


@pytest.mark.parametrize("change", ["shape", "dtype", "requires_grad"])
def test_changing_an_argument_recompiles_and_matches_torch(change):
    q = gc.compile(_seed_q)
    a, b = gc.tensor(A0, requires_grad=True), gc.tensor(B0, requires_grad=True)
    q(a, b).backward(gradient=gc.ones(2))
    a0 = {"shape": np.array([1.0, -2.0, 0.5], np.float32), "dtype": A0.astype(np.float64), "requires_grad": A0}[change]
    b0 = {"shape": np.array([0.25, 4.0, -1.0], np.float32), "dtype": B0.astype(np.float64), "requires_grad": B0}[change]
    a2 = gc.tensor(a0, requires_grad=change != "requires_grad")
    b2 = gc.tensor(b0, requires_grad=True)
    out = q(a2, b2)
    assert q.cache_info().builds == 2
    assert out.dtype == a2.dtype and out.shape == a0.shape
    ta, tb = torch.tensor(a0, requires_grad=change != "requires_grad"), torch.tensor(b0, requires_grad=True)
    tq = 3 * ta ** 3 - tb ** 2
    _close(out, tq.detach().numpy())
    out.backward(gradient=gc.ones(*a0.shape, dtype=a2.dtype))
    tq.backward(gradient=torch.ones(a0.shape, dtype=tq.dtype))
    _close(b2.grad, tb.grad.numpy())
    if change == "requires_grad":
        assert a2.grad is None and ta.grad is None
    else:
        assert a2.grad.dtype == a2.dtype
        _close(a2.grad, ta.grad.numpy())
    assert q(a, b).shape == (2,) and q.cache_info().builds == 2  # the first graph is still there


def test_swapped_and_new_tensors_are_read_at_each_call():
    q = gc.compile(_seed_q)
    a, b = gc.tensor(A0, requires_grad=True), gc.tensor(B0, requires_grad=True)
    q(a, b)
    out = q(b, a)
    out.backward(gradient=gc.tensor([1.0, 2.0]))
    want_q, want_b, want_a = _torch_q(B0, A0, np.array([1.0, 2.0], np.float32))
    _close(out, want_q)
    _close(a.grad, want_a)
    _close(b.grad, want_b)
    c = gc.tensor([-1.0, 0.5], requires_grad=True)
    _close(q(c, b), 3 * np.array([-1.0, 0.5]) ** 3 - B0 ** 2)


def test_inplace_update_of_an_input_between_calls_is_seen():
    q = gc.compile(_seed_q)
    a, b = gc.tensor(A0), gc.tensor(B0)
    q(a, b)
    a.mul_(2)
    _close(q(a, b), 3 * (2 * A0) ** 3 - B0 ** 2)
    a.data = gc.tensor([1.0, 1.0])
    _close(q(a, b), 3 - B0 ** 2)


def test_inplace_update_between_call_and_backward_raises_and_changes_nothing():
    q = gc.compile(_seed_q)
    a, b = gc.tensor(A0, requires_grad=True), gc.tensor(B0, requires_grad=True)
    q(a, b).backward(gradient=gc.ones(2))  # b is saved for the backward: its version is watched
    a.grad = b.grad = None
    out = q(a, b)
    with gc.no_grad():
        b.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward(gradient=gc.ones(2))
    assert a.grad is None and b.grad is None
    out = q(a, b)  # a new call saves the new version
    out.backward(gradient=gc.ones(2))
    _close(b.grad, -2 * (B0 + 1))


def test_gradients_accumulate_across_backward_calls_and_retain_graph():
    q = gc.compile(_seed_q)
    a, b = gc.tensor(A0, requires_grad=True), gc.tensor(B0, requires_grad=True)
    g = gc.tensor([1.0, -3.0])
    _, want_a, want_b = _torch_q(A0, B0, g.numpy())
    q(a, b).backward(gradient=g)
    first = a.grad
    q(a, b).backward(gradient=g)
    assert a.grad is first  # accumulated into the existing .grad tensor, as torch does
    _close(a.grad, 2 * want_a)
    out = q(a, b)
    out.backward(gradient=g, retain_graph=True)
    out.backward(gradient=g)
    _close(a.grad, 4 * want_a)
    _close(b.grad, 4 * want_b)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        out.backward(gradient=g)
    _close(a.grad, 4 * want_a)


def test_a_grad_shared_by_two_inputs_is_copied_into_each():
    """The compiled backward may return one array for two gradients (here both are the cotangent)."""
    f = gc.compile(lambda a, b: a + b)
    a, b = gc.tensor(A0, requires_grad=True), gc.tensor(B0, requires_grad=True)
    g = gc.tensor([1.0, 2.0])
    f(a, b).backward(gradient=g)
    a.grad.add_(10)
    _close(b.grad, [1.0, 2.0])
    _close(g, [1.0, 2.0])


def test_retain_grad_on_the_result_and_grad_mode():
    q = gc.compile(_seed_q)
    a, b = gc.tensor(A0, requires_grad=True), gc.tensor(B0, requires_grad=True)
    q(a, b)
    out = q(a, b)
    out.retain_grad()
    out.backward(gradient=gc.tensor([2.0, 5.0]))
    _close(out.grad, [2.0, 5.0])
    with gc.no_grad():
        plain = q(a, b)
    assert plain.grad_fn is None and not plain.requires_grad
    assert q(a, b).grad_fn is not None
    f = gc.compile(lambda x: x * 2 if gc.is_grad_enabled() else x * 3)  # grad mode decides at trace time
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    _close(f(x), [2.0, 4.0])
    with gc.no_grad():
        _close(f(x), [3.0, 6.0])
    _close(f(x), [2.0, 4.0])


def test_the_backward_walk_of_one_function_matches_the_general_walk():
    """One eager op with leaf inputs takes the short walk; autograd.grad (inputs=) takes the general one."""
    x = gc.tensor([0.5, -1.5, 2.0], dtype=gc.float64, requires_grad=True)
    w = gc.tensor([3.0, 0.25, -2.0], dtype=gc.float64, requires_grad=True)
    g = gc.tensor([1.0, 2.0, -1.0], dtype=gc.float64)
    y = x * w
    (gx, gw) = gc.autograd.grad(y, [x, w], g, retain_graph=True)
    y.backward(g)
    _close(x.grad, gx)
    _close(w.grad, gw)
    _close(x.grad, w.detach().numpy() * g.numpy())
    from graphc.passes.autodiff import last_stats

    assert last_stats == {"nodes_executed": 1, "leaves": 2}


def test_compiled_gradients_match_finite_differences_in_float64():
    f = gc.compile(lambda x, y: (x * y).sin() + x.exp() * 0.5)
    x0, y0 = np.array([0.3, -1.2, 2.0]), np.array([1.5, 0.7, -0.4])
    g0 = np.array([1.0, -2.0, 0.5])
    for _ in range(2):  # the second call is a memo hit
        x, y = gc.tensor(x0, requires_grad=True), gc.tensor(y0, requires_grad=True)
        f(x, y).backward(gradient=gc.tensor(g0))
    eps = 1e-6

    def val(xv, yv):
        return (np.sin(xv * yv) + np.exp(xv) * 0.5) @ g0

    fd_x = [(val(x0 + eps * e, y0) - val(x0 - eps * e, y0)) / (2 * eps) for e in np.eye(3)]
    fd_y = [(val(x0, y0 + eps * e) - val(x0, y0 - eps * e)) / (2 * eps) for e in np.eye(3)]
    _close(x.grad, fd_x, 1e-6)
    _close(y.grad, fd_y, 1e-6)


def test_nested_outputs_and_static_results_through_the_plan():
    f = gc.compile(lambda a, b: (a * b, {"s": a + b, "n": 3}))
    a, b = gc.tensor(A0, requires_grad=True), gc.tensor(B0)
    for _ in range(2):
        p, d = f(a, b)
    _close(p, A0 * B0)
    _close(d["s"], A0 + B0)
    assert d["n"] == 3 and p.requires_grad and not b.requires_grad
    (p.sum() + d["s"].sum()).backward()
    _close(a.grad, B0 + 1)


def test_rebinding_a_global_to_a_module_is_seen():
    """The memo holds while the function reaches the same objects; a global rebound to a module is new state."""
    ns: dict = {}
    exec("def f(x):\n    return helper(x)\n", ns)  # noqa: S102  (a function with its own globals)
    ns["helper"] = lambda x: x * 2
    f = gc.compile(ns["f"])
    x = gc.tensor([1.0, 2.0, 3.0])
    _close(f(x), [2.0, 4.0, 6.0])
    _close(f(x), [2.0, 4.0, 6.0])
    lin = nn.Linear(3, 1)
    ns["helper"] = lin
    out = f(x)
    _close(out, x.numpy() @ lin.weight.detach().numpy().T + lin.bias.detach().numpy())
    out.sum().backward()
    _close(lin.weight.grad, [x.numpy()])
    assert f.cache_info().builds == 2


def test_a_captured_tensor_is_never_memoized():
    w = gc.tensor([1.0, 2.0])
    f = gc.compile(lambda x: x * w)
    x = gc.tensor([3.0, 4.0])
    _close(f(x), [3.0, 8.0])
    w.mul_(2)  # read at call time
    _close(f(x), [6.0, 16.0])
    other = gc.tensor([5.0, 5.0])

    def g(x):
        return x * other

    cg = gc.compile(g)
    _close(cg(x), [15.0, 20.0])
    other = gc.tensor([-1.0, 1.0])  # the closure cell now holds another tensor  # noqa: F841
    _close(cg(x), [-3.0, 4.0])


def test_an_argument_updated_in_place_inside_is_written_back_each_call():
    def bump(x):
        x.add_(1)
        return x * 2

    f = gc.compile(bump)
    x = gc.tensor([1.0, 2.0])
    for k in range(1, 4):
        v = x._version
        _close(f(x), 2 * (np.array([1.0, 2.0]) + k))
        _close(x, np.array([1.0, 2.0]) + k)
        assert x._version == v + 1


def test_anomaly_mode_on_a_memoized_function():
    f = gc.compile(lambda x: x.log() * 2)
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    f(x)
    f(x)
    with gc.detect_anomaly(), pytest.raises(RuntimeError, match="op 'log'"):
        f(gc.tensor([-1.0, 2.0], requires_grad=True))
    g = gc.compile(lambda x: x.sqrt())
    z = gc.tensor([0.0, 4.0], requires_grad=True)
    g(z).backward(gradient=gc.ones(2))
    z.grad = None
    with gc.detect_anomaly(), pytest.raises(RuntimeError, match="backward phase"):
        g(z).backward(gradient=gc.ones(2))
    assert z.grad is None
    with gc.detect_anomaly(), pytest.raises(RuntimeError, match="SqrtBackward0"):
        z.sqrt().backward(gradient=gc.ones(2))  # one eager op: the short backward walk checks it too
    assert z.grad is None


def test_threads_calling_one_memoized_function():
    q = gc.compile(_seed_q)
    q(gc.tensor(A0, requires_grad=True), gc.tensor(B0, requires_grad=True))
    errors: list = []

    def work(k):
        try:
            rng = np.random.default_rng(k)
            for _ in range(50):
                a0, b0 = rng.standard_normal(2).astype(np.float32), rng.standard_normal(2).astype(np.float32)
                a, b = gc.tensor(a0, requires_grad=True), gc.tensor(b0, requires_grad=True)
                q(a, b).backward(gradient=gc.ones(2))
                np.testing.assert_allclose(a.grad.numpy(), 9 * a0 ** 2, rtol=1e-5)
                np.testing.assert_allclose(b.grad.numpy(), -2 * b0, rtol=1e-5)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert q.cache_info().calls == 201 and q.cache_info().builds == 1


_Q = "q = gc.compile(lambda a, b: 3 * a ** 3 - b ** 2)\na, b = gc.randn(2, requires_grad=True), gc.randn(2)\n"


@pytest.mark.parametrize("case", [
    Case("twice", "", "", _Q + "out = q(a, b)\nout = q(a, b)\nout.backward(gc.ones(2))\n"
         "out.backward(gc.ones(2))  # <-\n",
         "RuntimeError", ["backward through the graph a second time"], located=False),
    Case("inplace", "", "", _Q + "b.requires_grad_()\nq(a, b)\nout = q(a, b)\nwith gc.no_grad():\n    b.add_(1)\n"
         "out.backward(gc.ones(2))  # <-\n",
         "RuntimeError", ["modified by an inplace operation"], located=False),
    Case("grad-shape", "", "", _Q + "q(a, b)\nq(a, b).backward(gc.ones(3))  # <-\n",
         "RuntimeError", ["Mismatch in shape"], located=False),
    Case("non-scalar", "", "", _Q + "q(a, b)\nq(a, b).backward()  # <-\n",
         "RuntimeError", ["grad can be implicitly created only for scalar outputs"], located=False),
], ids=lambda c: c.key)
def test_errors_on_the_short_path_end_at_the_user_line(case):
    out = run_case(case)
    assert out.exc is not None and type(out.exc).__name__ == case.error, out.text
    assert all(f in str(out.exc) for f in case.expect), out.text
    assert [f.filename for f in out.frames] == [FILENAME], out.text
    assert out.frames[-1].lineno == case.line, out.text


def test_compiled_code_is_quiet_and_leaves_the_callers_error_state_alone():
    """log(-1) is nan without a warning (as eager and torch); the caller's np.errstate holds before and after,
    also when the compiled call raises."""
    import warnings

    f = gc.compile(lambda x: x.log() * 2)
    x = gc.tensor([-1.0, 1.0], requires_grad=True)
    before = np.geterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            for _ in range(2):
                out = f(x)
                out.backward(gradient=gc.ones(2))
            assert np.isnan(out.detach().numpy()[0])
            with pytest.raises(FloatingPointError):
                np.log(np.float32(-1.0))
            with pytest.raises(RuntimeError, match="Mismatch in shape"):
                f(x).backward(gradient=gc.ones(3))
            assert np.geterr()["invalid"] == "raise"
    assert np.geterr() == before
    _close(x.grad[1:], [4.0])
