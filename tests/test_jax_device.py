"""Device-resident values of the jax backend: a compiled jax step leaves its results, parameters and optimizer
state on the device (Tensor._on_device), donates them to the next step, and copies a value to the host only
when Python reads it. Oracles: the numpy backend running the same steps from the same weights, and torch
for the optimizer."""
from __future__ import annotations

import copy

import numpy as np
import pytest

jax = pytest.importorskip("jax")

from steps import train_step  # noqa: E402

import graphc as gc  # noqa: E402
from graphc import nn, optim  # noqa: E402


def _model_and_step(backend: str, momentum: float = 0.9, ret_weight: bool = False):
    gc.manual_seed(0)
    model = gc.models.LeNet()
    opt = optim.SGD(model.parameters(), lr=1e-2, momentum=momentum)

    @gc.compile(backend=backend)
    def step(x, y):
        opt.zero_grad()
        loss = nn.MSELoss()(model(x), y)
        loss.backward()
        opt.step()
        return (loss, model.fc3.weight) if ret_weight else loss

    return model, opt, step


def _data(seed: int = 0, batch: int = 4):
    rng = np.random.default_rng(seed)
    return (gc.tensor(rng.random((batch, 1, 32, 32), dtype=np.float32)),
            gc.tensor(rng.random((batch, 10), dtype=np.float32)))


def _params(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_state_stays_on_the_device_and_matches_the_numpy_backend():
    m_np, _, s_np = _model_and_step("numpy")
    m_jx, opt_jx, s_jx = _model_and_step("jax")
    for i in range(4):
        x, y = _data(i)
        l_np, l_jx = s_np(x, y), s_jx(x, y)
        assert l_jx._dev is not None  # the loss too: copied only when read
        np.testing.assert_allclose(l_jx.item(), l_np.item(), rtol=1e-5)
    # between steps, parameters and momentum buffers are device arrays, not numpy arrays
    assert all(p._dev is not None for p in m_jx.parameters())
    assert all(st["momentum_buffer"]._dev is not None for st in opt_jx.state.values())
    shapes = {k: v.shape for k, v in m_jx.state_dict().items()}
    ref = _params(m_np)
    for k, v in _params(m_jx).items():
        assert v.shape == shapes[k]
        np.testing.assert_allclose(v, ref[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_reading_a_device_held_tensor_gives_a_writeable_array_of_its_dtype_once():
    model, _, step = _model_and_step("jax")
    step(*_data())
    step(*_data(1))
    p = model.fc1.weight
    dev = p._dev
    assert dev is not None and p.shape == tuple(dev.shape) and p.dtype == gc.float32  # no copy for metadata
    assert p._dev is dev
    a = p.detach().numpy()
    assert p._dev is None  # materialized: numpy is the value now
    assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.writeable
    np.testing.assert_array_equal(a, np.asarray(dev))
    assert p.detach().numpy() is p._data  # a second read copies nothing


def test_eager_ops_and_in_place_updates_on_device_held_parameters():
    """An eager update between steps lands in the next step, exactly as on the numpy backend."""
    m_np, _, s_np = _model_and_step("numpy")
    m_jx, _, s_jx = _model_and_step("jax")
    for model, step in ((m_np, s_np), (m_jx, s_jx)):
        step(*_data(0))
        step(*_data(1))
        with gc.no_grad():
            w = model.fc2.weight
            doubled = w * 2  # eager op on a device-held tensor
            w.add_(1.0)
            model.fc2.bias.copy_(gc.zeros(84))
        np.testing.assert_allclose(doubled.numpy(), (w.detach().numpy() - 1.0) * 2, rtol=1e-6, atol=1e-6)
        step(*_data(2))
    assert m_jx.fc2.weight._dev is not None  # back on the device after the step
    ref = _params(m_np)
    for k, v in _params(m_jx).items():
        np.testing.assert_allclose(v, ref[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_a_failing_call_leaves_device_held_state_unchanged():
    model, opt, step = _model_and_step("jax")
    step(*_data(0))
    step(*_data(1))
    before = {id(p): p._dev for p in model.parameters()}
    momentum = {id(p): st["momentum_buffer"]._dev for p, st in opt.state.items()}
    x, y = _data(2)
    exe = step.lower(x, y).compile()
    with pytest.raises(TypeError, match="compiled for"):
        exe(gc.ones(3, 1, 32, 32), y)  # the wrong batch for this executable
    for p in model.parameters():
        assert p._dev is before[id(p)] and not p._dev.is_deleted()
    for p, st in opt.state.items():
        assert st["momentum_buffer"]._dev is momentum[id(p)]
    step(x, y)  # and the next good step runs on them
    assert all(not p._dev.is_deleted() for p in model.parameters())


def test_donated_state_is_consumed_but_nothing_a_user_holds_is():
    model, opt, step = _model_and_step("jax", ret_weight=True)
    step(*_data(0))
    loss, w_ret = step(*_data(1))
    old_buf = opt.state[model.fc1.weight]["momentum_buffer"]._dev
    old_w = model.fc1.weight._dev
    step(*_data(2))
    # the momentum buffer's previous device array was donated to the step (XLA wrote the new value into it);
    # the weight's was not (other ops read it too, and XLA would copy it first: see program.build_programs) ...
    assert old_buf.is_deleted() and not old_w.is_deleted()
    # ... but the returned weight is its own array: still readable, and the value of the parameter back then
    assert w_ret._dev is not model.fc3.weight._dev and not w_ret._dev.is_deleted()
    ref_m, _, ref_step = _model_and_step("numpy", ret_weight=True)
    ref_step(*_data(0))
    _, ref_w = ref_step(*_data(1))
    np.testing.assert_allclose(w_ret.detach().numpy(), ref_w.detach().numpy(), rtol=1e-5, atol=1e-7)
    assert loss.item() > 0


def test_each_donated_buffer_takes_the_new_value_of_its_own_state():
    """jax pairs donated inputs with outputs by shape, in output order; a step's outputs put each parameter's .grad
    next to its new value, so left alone the momentum buffer's memory would go to the .grad, and XLA would copy
    every donated buffer to keep reading it. The program orders its outputs so each input aliases its own update."""
    import re

    model, opt, step = _model_and_step("jax")
    step(*_data(0))
    step(*_data(1))
    (exe,) = [e for es in step._cache.values() for e in es if e.outputs[-1].kind != "new_state"]
    prog = exe._fn
    assert prog.donate, "the momentum buffers are donated"
    text = prog.compile().as_text()
    pairs = {int(i): int(o) for o, i in re.findall(r"\{(\d+)\}: \((\d+), \{\}, may-alias\)", text)}
    assert sorted(pairs) == list(prog.donate)
    for i, o in pairs.items():  # input i's buffer holds output o (in the jitted order): the same state's update
        slot_in, slot_out = exe.inputs[i], exe.outputs[prog.order[o]]
        assert slot_out.kind == "update" and slot_out.ref is slot_in.ref, (slot_in.name, slot_out.name)
    entry = text[text.index("ENTRY"):]
    donated_names = {exe.inputs[i].name.replace(".", "_") for i in prog.donate}
    copied = set(re.findall(r"= \S+ copy\(%([\w.]+?)(?:\.\d+)?\)", entry))
    assert not copied & donated_names, copied & donated_names


def test_grads_left_by_a_step_are_not_donated_when_the_next_step_replaces_them():
    """A step without zero_grad accumulates into .grad: each step gives the parameter a new .grad tensor, and an
    old .grad that the caller kept must keep its value (it is not donated)."""
    results = {}
    for backend in ("numpy", "jax"):
        gc.manual_seed(0)
        lin = nn.Linear(3, 2)

        @gc.compile(backend=backend)
        def step(x):
            (lin(x) ** 2).sum().backward()
            return lin.weight.grad * 1.0

        x = gc.tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
        step(x)
        first = lin.weight.grad
        step(x)
        step(x)
        results[backend] = (first.numpy().copy(), lin.weight.grad.numpy().copy())
    for a, b in zip(results["numpy"], results["jax"]):
        np.testing.assert_allclose(b, a, rtol=1e-6)
    np.testing.assert_allclose(results["jax"][1], 3 * results["jax"][0], rtol=1e-6)


def test_device_held_tensors_copy_pickle_and_feed_numpy_backend_functions():
    model, _, step = _model_and_step("jax")
    step(*_data(0))
    step(*_data(1))
    w = model.fc3.weight
    assert w._dev is not None
    clone = copy.deepcopy(w)
    np.testing.assert_array_equal(clone.detach().numpy(), w.detach().numpy())
    model2, _, _ = _model_and_step("jax")
    step(*_data(2))  # w device-held again
    f = gc.compile(lambda a: (a * 3).sum())  # the numpy backend reads its value
    np.testing.assert_allclose(f(w.detach()).item(), (w.detach().numpy() * 3).sum(), rtol=1e-5)
    model2.load_state_dict(model.state_dict())
    for (k, a), b in zip(model2.state_dict().items(), model.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)


def test_anomaly_mode_runs_a_jax_step_on_device_held_state():
    m_np, _, s_np = _model_and_step("numpy")
    m_jx, _, s_jx = _model_and_step("jax")
    for i in range(2):
        s_np(*_data(i))
        s_jx(*_data(i))
    with gc.detect_anomaly():
        l_jx = s_jx(*_data(2))
    l_np = s_np(*_data(2))
    np.testing.assert_allclose(l_jx.item(), l_np.item(), rtol=1e-5)
    s_jx(*_data(3))
    s_np(*_data(3))
    ref = _params(m_np)
    for k, v in _params(m_jx).items():
        np.testing.assert_allclose(v, ref[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_a_compiled_backward_on_the_jax_backend_with_device_results():
    """Results that carry a compiled backward are device-held too; backward and .grad match torch."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    a0, b0 = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    f = gc.compile(lambda a, b: (a @ b).tanh(), backend="jax")
    a, b = gc.tensor(a0, requires_grad=True), gc.tensor(b0, requires_grad=True)
    out = f(a, b)
    ta, tb = torch.tensor(a0, requires_grad=True), torch.tensor(b0, requires_grad=True)
    tout = (ta @ tb).tanh()
    (out * out).sum().backward()
    (tout * tout).sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-6)


def test_numpy_and_jax_steps_take_turns_on_one_model():
    """A numpy-backend step writes numpy arrays over device-held state; the next jax step must use those, not the
    device arrays they replaced (the Tensor._dev invariant)."""
    gc.manual_seed(0)
    model = gc.models.LeNet()
    opt = optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)

    step = train_step(model, opt, nn.MSELoss())
    on_jax, on_numpy = gc.compile(step, backend="jax"), gc.compile(step)
    ref_model, _, ref_step = _model_and_step("numpy")
    for i, f in enumerate([on_jax, on_jax, on_numpy, on_jax, on_numpy, on_numpy, on_jax]):
        np.testing.assert_allclose(f(*_data(i)).item(), ref_step(*_data(i)).item(), rtol=1e-5, err_msg=str(i))
    ref = _params(ref_model)
    for k, v in _params(model).items():
        np.testing.assert_allclose(v, ref[k], rtol=1e-4, atol=1e-6, err_msg=k)


def _frozen_lenet_sum():
    gc.manual_seed(0)
    model = gc.models.LeNet()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, gc.compile(lambda x: model(x).sum(), backend="jax")


def test_frozen_parameters_move_to_the_device_once():
    """State a step reads but never replaces (a frozen backbone) goes to the device at the first call and stays:
    the second call copies nothing host->device (jax's transfer guard would raise)."""
    model, f = _frozen_lenet_sum()
    x = gc.Tensor._on_device(jax.device_put(_data()[0].numpy()), gc.float32)
    first = f(x).item()
    assert all(p._dev is not None for p in model.parameters())
    with jax.transfer_guard_host_to_device("disallow"):
        assert f(x).item() == first
    expect = gc.compile(lambda x: model(x).sum())(_data()[0]).item()  # numpy backend reads them back
    np.testing.assert_allclose(first, expect, rtol=1e-5)
    assert all(p._dev is None for p in model.parameters())


def test_frozen_state_shared_with_other_arrays_stays_on_the_host():
    """A parameter whose array someone else holds (from_numpy, a detached alias) keeps it: writes through the
    other holder must reach the next step, as they do on the numpy backend."""
    model, f = _frozen_lenet_sum()
    shared = model.fc3.bias.numpy()  # the caller keeps the array
    alias = model.fc2.bias.detach()
    x = _data()[0]
    f(x)
    assert model.fc3.bias._dev is None and model.fc2.bias._dev is None and model.fc1.bias._dev is not None
    shared += 1.0
    alias.add_(2.0)
    got = f(x).item()
    np.testing.assert_allclose(got, gc.compile(lambda x: model(x).sum())(x).item(), rtol=1e-5)
    assert shared is model.fc3.bias.numpy() and np.all(model.fc2.bias.numpy() == alias.numpy())


def _grads(model) -> dict[str, np.ndarray]:
    return {n: p.grad.numpy().copy() for n, p in model.named_parameters()}


def test_grads_stay_in_the_layout_xla_computed_them_in_and_read_back_right():
    """A step's .grad outputs are nobody's input in the step, so XLA keeps a convolution's weight gradient in
    its own (kh, kw, in, out) layout rather than transposing it for the output. Reading it, and feeding it to
    programs compiled for row-major inputs (a step that accumulates into .grad, another compiled function),
    must give torch's (out, in, kh, kw) values: the numpy backend is the oracle."""
    results = {}
    for backend in ("numpy", "jax"):
        gc.manual_seed(0)
        model = gc.models.LeNet()
        opt = optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
        step = gc.compile(train_step(model, opt, nn.MSELoss()), backend=backend)

        @gc.compile(backend=backend)
        def accumulate(x, y):  # no zero_grad: backward adds to the .grads the last step left
            nn.MSELoss()(model(x), y).backward()

        norm = gc.compile(lambda: sum((p.grad ** 2).sum() for p in model.parameters()), backend=backend)
        for i in range(3):
            step(*_data(i))
        if backend == "jax":
            layouts = [p.grad._dev.format.layout.major_to_minor for p in model.parameters()]
            if jax.devices()[0].platform == "cpu":
                assert any(m != tuple(range(len(m))) for m in layouts)  # the feature is on
        results[backend] = [norm().item()]
        accumulate(*_data(3))
        accumulate(*_data(4))
        results[backend].append(norm().item())
        results[backend].append(_grads(model))
    for k in (0, 1):
        np.testing.assert_allclose(results["jax"][k], results["numpy"][k], rtol=1e-4)
    for n, g in results["numpy"][2].items():
        np.testing.assert_allclose(results["jax"][2][n], g, rtol=1e-4, atol=1e-7, err_msg=n)


def test_a_value_returned_twice_is_row_major_where_jax_says_so():
    """A first step's momentum buffer is its .grad, one value returned twice; XLA would give both outputs the
    free layout while jax labels the buffer row-major, and the next step would read it transposed. The
    program checks the layouts it got and recompiles without free layouts when one is wrong."""
    from graphc.backends.jax.program import JaxProgram

    _, _, step = _model_and_step("jax")
    x, y = _data(0)
    step(x, y)
    exe = next(iter(step._cache.values()))[0]
    g = exe.graph
    shared = [k for k, o in enumerate(exe.outputs) if o.kind == "grad"
              and sum(v is g.outputs[k] for v in g.outputs) > 1]
    assert shared  # the momentum buffers of the first step
    arrays = [np.asarray(a) for a in exe._gather(exe._leaves((x, y), {}))]
    ref = JaxProgram(g, "step")(*arrays)
    prog = JaxProgram(g, "step", free_layout=shared)
    assert prog.free_layout
    prog.compile()
    assert not prog.free_layout  # checked, then rebuilt without
    # a program compiled for row-major inputs reads each output labelled row-major (every one but the .grads
    # that were to be free) as its label says: the momentum buffers are the .grads' values
    keep = [k for k, r in enumerate(ref) if k not in shared and r.dtype == np.float32]
    run = prog.run(*arrays)
    outs = [run[k] for k in keep]
    reread = jax.jit(lambda *a: [v + 0 for v in a]).lower(*(jax.ShapeDtypeStruct(o.shape, o.dtype) for o in outs))
    got = reread.compile()(*outs)
    want = [ref[k] for k in keep]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_item_reads_a_device_value_where_it_is():
    """`.item()` of a jax step's loss gives the numpy backend's number without a host copy of the tensor;
    a device value of more than one element is refused as torch refuses it."""
    _, _, s_np = _model_and_step("numpy")
    _, _, s_jx = _model_and_step("jax")
    x, y = _data()
    want, loss = s_np(x, y).item(), s_jx(x, y)
    assert loss._dev is not None
    got = loss.item()
    assert isinstance(got, float) and loss._dev is not None  # still on the device: nothing was materialized
    np.testing.assert_allclose(got, want, rtol=1e-5)
    pair = gc.compile(lambda t: t * 2, backend="jax")(gc.ones(2))
    assert pair._dev is not None
    with pytest.raises(RuntimeError, match="a Tensor with 2 elements cannot be converted to Scalar"):
        pair.item()


def test_a_jax_program_keeps_freed_buffers_in_the_process(monkeypatch):
    """XLA's CPU buffers come from malloc: building a jax program tunes it as the numpy backend does
    (graphc/backends/allocator.py), unless GRAPHC_MALLOC=off."""
    from graphc.backends import allocator

    calls = []
    monkeypatch.setattr(allocator, "_done", None)
    monkeypatch.setenv("GRAPHC_MALLOC", "off")
    real = allocator.keep_freed_memory
    monkeypatch.setattr("graphc.backends.jax.program.keep_freed_memory", lambda: calls.append(real()) or calls[-1])
    gc.compile(lambda t: t + 1, backend="jax")(gc.ones(3))
    assert calls == [False]  # asked once, and turned off by the environment
