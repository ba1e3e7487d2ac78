"""Donated state: a compiled training step writes new parameters, optimizer state and accumulated grads
into the old buffers (graphc/passes/memory.py), as torch's in-place optimizers do, and still changes
nothing when it fails. The oracle is the same step run eagerly (itself checked against torch in
test_optim.py / test_train_step.py)."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import nn
from graphc.backends.numpy.registry import KERNELS


def _mlp():
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32))


def _convnet():
    """Weights of at least 16 KiB (gradients smaller than that are not lent: MIN_INPLACE_BYTES)."""
    return nn.Sequential(nn.Conv2d(16, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(32 * 6 * 6, 4))


def _model_and_step(seed: int = 0, zero_grad: bool = True, compiled: bool = True, make_model=_mlp):
    gc.manual_seed(seed)
    model = make_model()
    opt = gc.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def step(x, y):
        if zero_grad:
            opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    return model, opt, (gc.compile(step) if compiled else step)


def _data(n: int = 3):
    rng = np.random.default_rng(1)
    return [(gc.tensor(rng.standard_normal((16, 64), dtype=np.float32)),
             gc.tensor(rng.standard_normal((16, 32), dtype=np.float32))) for _ in range(n)]


def _momenta(opt) -> list[np.ndarray]:
    return [opt.state[p]["momentum_buffer"].numpy() for g in opt.param_groups for p in g["params"]]


@pytest.mark.parametrize("zero_grad", [True, False])
def test_compiled_step_updates_state_in_its_own_buffers_and_matches_eager(zero_grad):
    model, opt, step = _model_and_step(zero_grad=zero_grad)
    emodel, eopt, estep = _model_and_step(zero_grad=zero_grad, compiled=False)
    batches = _data()
    step(*batches[0])
    estep(*batches[0])
    arrays = [p._data for p in model.parameters()]
    momenta = _momenta(opt)
    grads = [p.grad for p in model.parameters()]
    views = [p.detach() for p in model.parameters()]
    for x, y in batches[1:]:
        step(x, y)
        estep(x, y)
    params = list(model.parameters())
    assert all(p._data is a for p, a in zip(params, arrays))  # written in place, as torch's SGD does
    assert all(m is m2 for m, m2 in zip(_momenta(opt), momenta))
    assert all(np.array_equal(v.numpy(), p.detach().numpy()) for v, p in zip(views, params))  # views see it
    if not zero_grad:  # the last accumulation runs after every heavy kernel: into the same .grad tensor
        assert params[0].grad is grads[0]
    for p, q in zip(params, emodel.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-6)
    for m, em in zip(_momenta(opt), _momenta(eopt)):
        np.testing.assert_allclose(m, em, rtol=1e-5, atol=1e-6)


def test_generated_code_writes_the_update_into_the_parameter():
    model, opt, step = _model_and_step()
    x, y = _data(1)[0]
    step(x, y)
    exe = step.lower(x, y).compile()
    assert len(exe._donated) == 2 * len(list(model.parameters()))  # weights and momentum buffers
    assert exe.lowered.memory_analysis()["donated_inputs"] == len(exe._donated)
    src = exe.source
    # names of the generated function's parameters, in input order
    params = src[src.index("def step(") + 9:src.index("):", src.index("def step("))].split(", ")
    for j in exe._donated:
        name = params[j]
        assert f", out={name})" in src, name
    # the momentum buffer's whole update runs in its own buffer: buf *= momentum; buf += grad
    buf = next(params[j] for j in exe._donated if exe.inputs[j].kind == "state")
    assert f"np.multiply({buf}, " in src and src.count(f"out={buf})") == 2


def test_a_step_that_fails_changes_nothing(monkeypatch):
    """The failure strikes in the backward pass, after the forward's work and before any donated write."""
    calls = {"n": 0, "fail": False}
    matmul = KERNELS["matmul"]

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["fail"]:
            raise MemoryError("injected")
        return matmul(*a, **k)

    monkeypatch.setitem(KERNELS, "matmul", flaky)
    model, opt, step = _model_and_step()
    batches = _data()
    step(*batches[0])
    step(*batches[1])  # the steady-state graph, with donated momentum buffers
    before = [p.detach().numpy().copy() for p in model.parameters()]
    momenta = [m.copy() for m in _momenta(opt)]
    grads = [p.grad.numpy().copy() for p in model.parameters()]
    calls["fail"] = True
    with pytest.raises(MemoryError, match="injected"):
        step(*batches[2])
    for p, b, g in zip(model.parameters(), before, grads):
        np.testing.assert_array_equal(p.detach().numpy(), b)
        np.testing.assert_array_equal(p.grad.numpy(), g)
    for m, b in zip(_momenta(opt), momenta):
        np.testing.assert_array_equal(m, b)


def test_parameters_sharing_memory_are_not_overwritten_through_each_other():
    """Two parameters over one array (or a view of another input) get a private copy for the step: the
    generated code computes both updates from the old values, as it would without donation."""
    gc.manual_seed(0)
    w = np.random.default_rng(0).standard_normal((8, 8), dtype=np.float32)
    a, b = nn.Parameter(gc.from_numpy(w)), nn.Parameter(gc.from_numpy(w))
    assert np.shares_memory(a._data, b._data)
    opt = gc.optim.SGD([a, b], lr=0.1, momentum=0.9)
    x = gc.ones(8)

    @gc.compile
    def step():
        opt.zero_grad()
        ((a @ x) * 2 + (b @ x) * 3).sum().backward()
        opt.step()

    step()
    step()
    # each saw its own gradient twice (momentum 0.9): a -= 0.1 * (1 + 1.9) * 2, b likewise with 3
    np.testing.assert_allclose(a.detach().numpy(), w - 0.1 * 2.9 * 2, rtol=1e-6)
    np.testing.assert_allclose(b.detach().numpy(), w - 0.1 * 2.9 * 3, rtol=1e-6)
    assert not np.shares_memory(a._data, b._data)


def test_returned_results_never_share_memory_with_state():
    """A .grad and the momentum buffer cloned from it are one value in the graph: two arrays after the call."""
    model, opt, step = _model_and_step()
    step(*_data(1)[0])
    for p in model.parameters():
        assert not np.shares_memory(p.grad.numpy(), opt.state[p]["momentum_buffer"].numpy())


def _conv_model_and_step(compiled: bool = True):
    return _model_and_step(compiled=compiled, make_model=_convnet)


def _conv_data(n: int = 4):
    rng = np.random.default_rng(2)
    return [(gc.tensor(rng.standard_normal((5, 16, 8, 8), dtype=np.float32)),
             gc.tensor(rng.standard_normal((5, 4), dtype=np.float32))) for _ in range(n)]


def test_new_gradients_are_written_into_the_old_grad_buffers():
    """After zero_grad() the old .grad is garbage: a convolution's weight gradient takes its buffer (torch frees it
    instead, so both hold one gradient's memory at a time), and every value stays the eager step's."""
    model, opt, step = _conv_model_and_step()
    emodel, _, estep = _conv_model_and_step(compiled=False)
    batches = _conv_data()
    for x, y in batches[:2]:
        step(x, y)
        estep(x, y)
    weights = [model[0].weight, model[2].weight, model[5].weight]  # two convolutions and a linear layer
    # (holding the gradients here would keep them from being lent: their version counts the refills instead)
    versions = [p.grad._version for p in weights]
    exe = step.lower(*batches[2]).compile()
    assert exe.lowered.memory_analysis()["grad_buffers"] == 3
    for name in ("grad_0_weight_buffer", "grad_2_weight_buffer", "grad_5_weight_buffer"):
        assert f"out={name})" in exe.source
    for x, y in batches[2:]:
        step(x, y)
        estep(x, y)
    for p, v in zip(weights, versions):
        assert p.grad._version == v + 2  # the same tensor and array, refilled by each step
    assert model[5].bias.grad._version == 0  # a view of a sum: a new tensor each step
    for p, q in zip(model.parameters(), emodel.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_small_gradients_are_not_lent():
    """Below MIN_INPLACE_BYTES a lent buffer saves nothing worth the .grad a failing call would lose."""
    from graphc.passes.memory import MIN_INPLACE_BYTES

    model, opt, step = _model_and_step(make_model=lambda: nn.Sequential(nn.Linear(64, 80), nn.Linear(80, 40)))
    x, y = _data(1)[0][0], gc.randn(16, 40)
    step(x, y)
    step(x, y)
    w1, w2 = model[0].weight, model[1].weight
    assert w1.grad.numpy().nbytes >= MIN_INPLACE_BYTES > w2.grad.numpy().nbytes
    exe = step.lower(x, y).compile()
    assert exe.lowered.memory_analysis()["grad_buffers"] == 1 and "out=grad_0_weight_buffer)" in exe.source


def test_a_gradient_someone_can_see_is_never_overwritten():
    """A .grad the user kept, one over a from_numpy array, or one with a weak reference keeps its value: the step
    gives the parameter a new gradient tensor, as torch's zero_grad() and backward() do."""
    import weakref

    model, opt, step = _conv_model_and_step()
    batches = _conv_data()
    step(*batches[0])
    step(*batches[1])
    kept = model[0].weight.grad
    kept_value = kept.numpy().copy()
    shared = model[2].weight.grad.numpy().copy()
    model[2].weight.grad = gc.from_numpy(shared)
    shared_value = shared.copy()
    step(*batches[2])
    assert model[0].weight.grad is not kept and model[2].weight.grad._data is not shared
    np.testing.assert_array_equal(kept.numpy(), kept_value)
    np.testing.assert_array_equal(shared, shared_value)
    del kept
    watched = model[0].weight.grad
    ref, before = weakref.ref(watched), watched.numpy().copy()
    del watched
    step(*batches[3])
    assert model[0].weight.grad._version == 0  # a new tensor: the watched one was not refilled
    if ref() is not None:  # (else it is gone, unchanged)
        np.testing.assert_array_equal(ref().numpy(), before)


def test_a_failing_step_leaves_the_gradients_it_was_writing_cleared(monkeypatch):
    """A step that fails after writing a new gradient into an old .grad's buffer cannot give the old value back:
    the .grads it was lent are None, as the step's zero_grad() left them; parameters, optimizer state and every
    other .grad are unchanged, and the next step computes what the eager step computes."""
    calls = {"n": 0, "fail_at": None}
    weight_grad = KERNELS["conv2d_weight_grad"]

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == calls["fail_at"]:
            raise MemoryError("injected")
        return weight_grad(*a, **k)

    flaky.supports_out = True
    monkeypatch.setitem(KERNELS, "conv2d_weight_grad", flaky)
    model, opt, step = _conv_model_and_step()
    emodel, _, estep = _conv_model_and_step(compiled=False)
    batches = _conv_data(5)
    for x, y in batches[:3]:
        step(x, y)
        estep(x, y)
    before = [p.detach().numpy().copy() for p in model.parameters()]
    momenta = [m.copy() for m in _momenta(opt)]
    bias_grads = [m.bias.grad.numpy().copy() for m in (model[0], model[2], model[5])]
    calls["fail_at"] = calls["n"] + 2  # the second convolution's weight gradient: the fc's and one conv's are written
    with pytest.raises(MemoryError, match="injected"):
        step(*batches[3])
    assert all(m.weight.grad is None for m in (model[0], model[2], model[5]))  # the lent ones
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.detach().numpy(), b)
    for m, b in zip(_momenta(opt), momenta):
        np.testing.assert_array_equal(m, b)
    for m, g in zip((model[0], model[2], model[5]), bias_grads):  # sums, never lent: unchanged
        np.testing.assert_array_equal(m.bias.grad.numpy(), g)
    step(*batches[4])
    estep(*batches[4])
    for p, q in zip(model.parameters(), emodel.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6)
