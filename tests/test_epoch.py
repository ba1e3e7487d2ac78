"""The call path's reuse of the last cache key (graphc/callpath.py) while graphc.epoch.EPOCH has not moved.

Every test here switches GRAPHC_VERIFY_CALLS off (the `fast` fixture), so a reused answer is NOT checked
against the full key: what is tested is the fast path itself, by its results. The oracle is the same step run
eagerly (uncompiled) on a twin model and optimizer built from the same seed, with the same change applied;
on the jax backend, the numpy backend running the same step on a twin. Each change below is also shown to
matter (the result differs from a run without it), and for each change that only EPOCH or HYPERS can reveal,
a fast path blind to both is shown to fail the same comparison.

Found by these tests and fixed: optimizer state tensors replaced by others of the same type (state cleared and
made again, a buffer assigned, load_state_dict) reused the executable bound to the old ones (the cache key now
names state tensors by identity); a plain dict put where an observed container was (param_groups[0] = {...},
model._modules = {...}) was written unobserved (such dicts are converted on the way in).
"""
from __future__ import annotations

import numpy as np
import pytest
from steps import train_step

import graphc as gc
from graphc import callpath, epoch, nn, optim

N_BEFORE, N_AFTER = 4, 3  # calls before the change (the fast path is in use from the third), calls after it


@pytest.fixture
def fast(monkeypatch):
    """Reused answers are not checked against the full key: the fast path alone decides."""
    monkeypatch.setattr(callpath, "VERIFY", False)


def _blind(monkeypatch):
    """Make the fast path ignore EPOCH and HYPERS (as if a change had not moved them): what a missed change does."""
    real = callpath.Entry.holds

    def holds(self, now):
        if self.epoch is not None:
            self.epoch = epoch.EPOCH[0]
        self.hypers = epoch.HYPERS[0]
        return real(self, now)

    monkeypatch.setattr(callpath.Entry, "holds", holds)


def _mlp():
    """Linear-BatchNorm-ReLU-Linear: BatchNorm makes train and eval differ deterministically."""
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _convnet():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _make(build=_mlp, seed=0, lr=0.1, momentum=0.9):
    """A model, its SGD optimizer and an uncompiled training step over them; the same seed gives twins."""
    gc.manual_seed(seed)
    model = build()
    opt = optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    return model, opt, train_step(model, opt, lambda pred, y: ((pred - y) ** 2).mean())


def _batches(n, x_shape=(6, 4), y_shape=(6, 3), seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(y_shape).astype(np.float32))
            for _ in range(n)]


def _snapshot(loss, model, opt=None):
    """The loss, every parameter and buffer and (given opt) every optimizer state tensor after a step, as numpy
    copies."""
    out = {"loss": np.array(loss.item()), **{k: v.detach().numpy().copy() for k, v in model.state_dict().items()}}
    if opt is not None:
        for i, st in opt.state_dict()["state"].items():
            out.update({f"opt.state[{i}].{k}": v.numpy().copy() for k, v in st.items() if isinstance(v, gc.Tensor)})
    return out


def _same(got, want, rtol=1e-5, atol=1e-6):
    """Assert two runs' snapshots agree, step by step."""
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.keys() == w.keys(), f"step {i}"
        for k in g:
            np.testing.assert_allclose(g[k], w[k], rtol=rtol, atol=atol, err_msg=f"step {i}: {k}")


def _agree(got, want):
    try:
        _same(got, want)
    except AssertionError:
        return False
    return True


def _train(mutate, compiled, setup=None):
    """N_BEFORE steps, `mutate(model, opt)`, N_AFTER steps; the snapshots after the change. `setup(model, opt)`
    runs before the third step. Compiled: the fast path must be in use right before the change."""
    model, opt, step = _make()
    fn = gc.compile(step) if compiled else step
    out = []
    for i, (x, y) in enumerate(_batches(N_BEFORE + N_AFTER)):
        args = (gc.tensor(x), gc.tensor(y))
        if i == 2 and setup is not None:
            setup(model, opt)
        if i == N_BEFORE:
            if compiled:
                assert fn._fast.lookup(args) is not None
            if mutate is not None:
                mutate(model, opt)
        loss = fn(*args)
        if i >= N_BEFORE:
            out.append(_snapshot(loss, model, opt))
    return out


# ---- changes between steps --------------------------------------------------------------------------

def _freeze(model, opt):
    model[0].weight.requires_grad = False


def _replace_layer(model, opt):
    gc.manual_seed(7)  # the same new weights in every run
    model._modules["3"] = nn.Linear(8, 3)


def _drop_relu(model, opt):
    del model[2]


def _eval(model, opt):
    model.eval()


def _bn_momentum(model, opt):
    model[1].momentum = 0.5  # a plain module setting, traced as a constant


def _nesterov(model, opt):
    opt.param_groups[0]["nesterov"] = True


def _no_momentum(model, opt):
    opt.param_groups[0]["momentum"] = 0.0  # a number, but the step decides on `momentum != 0`


def _weight_decay(model, opt):
    opt.param_groups[0]["weight_decay"] = 0.01  # a number, but the step decides on `weight_decay != 0`


def _lr(model, opt):
    opt.param_groups[0]["lr"] = 0.01  # a graph input: no retrace, but the new value must be used


def _pop_param(model, opt):
    opt.param_groups[0]["params"].pop()  # the last layer's bias is no longer updated


def _clear_state(model, opt):
    opt.state.clear()  # momentum restarts


def _zero_momentum_buffer(model, opt):
    p = model[0].weight
    opt.state[p]["momentum_buffer"] = gc.zeros_like(opt.state[p]["momentum_buffer"])


def _load_halved_state(model, opt):
    sd = opt.state_dict()  # (its per-parameter dicts are copies: replacing their entries changes nothing)
    for st in sd["state"].values():
        st["momentum_buffer"] = st["momentum_buffer"].numpy() * 0.5
    opt.load_state_dict(sd)  # new state tensors


def _replace_bias(model, opt):
    model[0].bias = nn.Parameter(gc.zeros(8))  # the optimizer still holds (and updates) the old bias


def _set_data(model, opt):
    gc.manual_seed(11)
    model[0].weight.data = gc.randn(8, 4)


def _scale_in_place(model, opt):
    with gc.no_grad():
        model[0].weight.mul_(0.5)


# name -> (change, whether only EPOCH/HYPERS reveal it: a fast path blind to them gives a stale result)
MUTATIONS = {
    "freeze_layer": (_freeze, True),
    "replace_layer_in_modules_dict": (_replace_layer, True),
    "delete_sequential_item": (_drop_relu, True),
    "eval_mode": (_eval, True),
    "batchnorm_momentum_setting": (_bn_momentum, True),
    "nesterov": (_nesterov, True),
    "momentum_to_zero": (_no_momentum, True),
    "weight_decay_from_zero": (_weight_decay, True),
    "lr": (_lr, False),  # read at every call on the numpy backend
    "pop_param_from_group": (_pop_param, True),
    "clear_optimizer_state": (_clear_state, True),
    "replace_momentum_buffer": (_zero_momentum_buffer, True),
    "load_optimizer_state": (_load_halved_state, True),
    "replace_parameter": (_replace_bias, True),
    "data_setter": (_set_data, False),  # the step reads the parameter's array at every call
    "in_place_under_no_grad": (_scale_in_place, False),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_a_change_between_steps_is_seen_by_the_next_steps(name, fast):
    """Compiled steps after the change match eager steps with the same change; the change matters."""
    mutate = MUTATIONS[name][0]
    got = _train(mutate, compiled=True)
    _same(got, _train(mutate, compiled=False))
    assert not _agree(got, _train(None, compiled=False)), "the change should change the result"


@pytest.mark.parametrize("name", [n for n, (_, blind) in MUTATIONS.items() if blind])
def test_a_fast_path_blind_to_the_change_would_fail(name, fast, monkeypatch):
    """The test above can fail: when EPOCH and HYPERS are ignored, the stale executable's results differ from
    eager ones (or the stale executable cannot run at all)."""
    mutate = MUTATIONS[name][0]
    want = _train(mutate, compiled=False)
    _blind(monkeypatch)
    try:
        got = _train(mutate, compiled=True)
    except Exception:  # noqa: BLE001 - a stale graph failing outright is also a detected miss
        return
    assert not _agree(got, want)


# ---- observed containers replaced by plain ones, then written --------------------------------------------
# graphc.epoch observes writes through the containers it installed, so a plain dict put in place of one
# (opt.param_groups[0] = {...}, model._modules = {...}) is converted on the way in; a later write into it must
# still be seen (each case raised under GRAPHC_VERIFY_CALLS=1 before that conversion).

_NEW = {}


def _plain_group(model, opt):
    opt.param_groups[0] = dict(opt.param_groups[0])  # (this write itself is seen)


def _plain_module_dicts(model, opt):
    gc.manual_seed(7)  # made here: building a module or parameter moves EPOCH by itself
    _NEW["layer"], _NEW["weight"] = nn.Linear(8, 3), nn.Parameter(gc.zeros(8, 4))
    model._modules = dict(model._modules)
    model[0]._parameters = dict(model[0]._parameters)


def _new_layer(model, opt):
    model._modules["3"] = _NEW["layer"]


def _new_weight(model, opt):
    model[0]._parameters["weight"] = _NEW["weight"]


PLAIN = {
    "plain_param_group_then_nesterov": (_plain_group, _nesterov),
    "plain_param_group_then_momentum_to_zero": (_plain_group, _no_momentum),
    "plain_modules_dict_then_new_layer": (_plain_module_dicts, _new_layer),
    "plain_parameters_dict_then_new_weight": (_plain_module_dicts, _new_weight),
}


@pytest.mark.parametrize("name", list(PLAIN))
def test_a_write_into_a_container_that_replaced_an_observed_one_is_seen(name, fast):
    """A param group or a module's dict replaced by a plain dict (the fast path is in use again afterwards), then
    written: the next steps must match eager ones."""
    setup, mutate = PLAIN[name]
    got = _train(mutate, compiled=True, setup=setup)
    _same(got, _train(mutate, compiled=False, setup=setup))
    assert not _agree(got, _train(None, compiled=False, setup=setup)), "the change should change the result"


# ---- a plain object's attribute -----------------------------------------------------------------------

class _Cfg:
    pass


def _cfg_run(compiled, swap):
    """A step reaching its model and optimizer through a config object; after N_BEFORE steps, `swap` rebinds
    cfg.model and cfg.opt to a second (differently initialized) pair."""
    model_a, opt_a, _ = _make(seed=0)
    model_b, opt_b, _ = _make(seed=3)
    cfg = _Cfg()
    cfg.model, cfg.opt = model_a, opt_a

    def step(x, y):
        cfg.opt.zero_grad()
        loss = ((cfg.model(x) - y) ** 2).mean()
        loss.backward()
        cfg.opt.step()
        return loss

    fn = gc.compile(step) if compiled else step
    out = []
    for i, (x, y) in enumerate(_batches(N_BEFORE + N_AFTER)):
        args = (gc.tensor(x), gc.tensor(y))
        if i == N_BEFORE:
            if compiled:
                assert fn._fast.lookup(args) is not None
            if swap:
                cfg.model, cfg.opt = model_b, opt_b
        loss = fn(*args)
        if i >= N_BEFORE:
            out.append({**_snapshot(loss, cfg.model), **{f"a.{k}": v for k, v in _snapshot(loss, model_a).items()
                                                          if k != "loss"}})
    return out


def test_rebinding_a_config_attribute_is_followed(fast):
    """cfg.model = model_b between calls: the steps train model_b (and leave model_a alone), as eagerly."""
    got = _cfg_run(compiled=True, swap=True)
    _same(got, _cfg_run(compiled=False, swap=True))
    assert not _agree(got, _cfg_run(compiled=False, swap=False))


# ---- the jax backend -------------------------------------------------------------------------------------

def _conv_batches(n, seed=2):
    return _batches(n, (4, 1, 8, 8), (4, 3), seed)


def _params(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_jax_steps_match_numpy_keep_held_grads_and_follow_lr(fast):
    """On the jax backend: a .grad the user holds is never overwritten by the next step (whether or not it
    was read); losses and parameters match the numpy backend, before and after an lr change."""
    pytest.importorskip("jax")
    m_jx, opt_jx, step_jx = _make(_convnet, lr=0.1)
    m_np, opt_np, step_np = _make(_convnet, lr=0.1)
    s_jx, s_np = gc.compile(step_jx, backend="jax"), gc.compile(step_np)
    batches = [(gc.tensor(x), gc.tensor(y)) for x, y in _conv_batches(9)]

    def both(i):
        _close(s_jx(*batches[i]).item(), s_np(*batches[i]).item())

    for i in range(3):
        both(i)
    assert s_jx._fast.lookup(batches[3]) is not None
    # (a) a held grad never read (still on the device): the next step must not write its new grad into it
    g = m_jx[0].weight.grad
    assert g._dev is not None
    want = m_np[0].weight.grad.numpy().copy()
    both(3)
    assert m_jx[0].weight.grad is not g
    _close(g.numpy(), want)
    # ... and one read before the next step keeps what was read
    g = m_jx[0].weight.grad
    seen = g.numpy().copy()
    _close(seen, m_np[0].weight.grad.numpy())
    both(4)
    assert m_jx[0].weight.grad is not g
    np.testing.assert_array_equal(g.numpy(), seen)
    # (b) parameters agree
    ref = _params(m_np)
    for k, v in _params(m_jx).items():
        np.testing.assert_allclose(v, ref[k], rtol=1e-4, atol=1e-5, err_msg=k)
    # (c) a new learning rate on both: still in step
    before = [p.detach().numpy().copy() for p in m_jx.parameters()]
    opt_jx.param_groups[0]["lr"] = opt_np.param_groups[0]["lr"] = 0.05
    for i in range(5, 9):
        both(i)
    ref = _params(m_np)
    for k, v in _params(m_jx).items():
        np.testing.assert_allclose(v, ref[k], rtol=1e-4, atol=1e-5, err_msg=k)
    assert any(not np.allclose(a, p.detach().numpy()) for a, p in zip(before, m_jx.parameters(), strict=True))


def test_jax_arguments_move_to_the_device_only_when_nothing_else_holds_their_array(fast):
    """gc.tensor(array) copies: the tensor alone holds its array and moves to the device at the first call,
    keeping its value. gc.from_numpy(array) shares the caller's array: it stays on the host, and a write to
    the array between calls reaches the next call (as on the numpy backend)."""
    pytest.importorskip("jax")
    (xa, ya), (xb, yb) = _conv_batches(2)
    _, _, step_jx = _make(_convnet)
    _, _, step_np = _make(_convnet)
    s_jx, s_np = gc.compile(step_jx, backend="jax"), gc.compile(step_np)

    x, y = gc.tensor(xa), gc.tensor(ya)
    x_np, y_np = gc.tensor(xa), gc.tensor(ya)
    for _ in range(2):
        _close(s_jx(x, y).item(), s_np(x_np, y_np).item())
        assert x._dev is not None
    np.testing.assert_array_equal(x.numpy(), xa)
    np.testing.assert_array_equal(y.numpy(), ya)

    arr, arr_np = xb.copy(), xb.copy()
    x, x_np = gc.from_numpy(arr), gc.from_numpy(arr_np)
    y, y_np = gc.tensor(yb), gc.tensor(yb)
    for k in range(3):
        _close(s_jx(x, y).item(), s_np(x_np, y_np).item())
        assert x._dev is None
        arr *= 1.5 + k  # in place, between calls
        arr_np *= 1.5 + k
        np.testing.assert_array_equal(x.numpy(), arr)


def test_jax_lr_change_in_a_param_group_replaced_by_a_plain_dict(fast):
    """After `opt.param_groups[0] = dict(...)` a later lr change must still reach the jax step, which reads its
    hyperparameters again only when graphc.epoch's HYPERS or EPOCH moved (graphc/device_io.py); the numpy
    backend reads lr at every call and is the oracle."""
    pytest.importorskip("jax")
    m_jx, opt_jx, step_jx = _make(_convnet)
    m_np, opt_np, step_np = _make(_convnet)
    s_jx, s_np = gc.compile(step_jx, backend="jax"), gc.compile(step_np)
    for i, (x, y) in enumerate(_conv_batches(8)):
        if i == 2:
            opt_jx.param_groups[0], opt_np.param_groups[0] = dict(opt_jx.param_groups[0]), dict(opt_np.param_groups[0])
        if i == 4:
            opt_jx.param_groups[0]["lr"] = opt_np.param_groups[0]["lr"] = 0.5
        _close(s_jx(gc.tensor(x), gc.tensor(y)).item(), s_np(gc.tensor(x), gc.tensor(y)).item())
    ref = _params(m_np)
    for k, v in _params(m_jx).items():
        np.testing.assert_allclose(v, ref[k], rtol=1e-4, atol=1e-5, err_msg=k)
