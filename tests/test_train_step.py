"""Compiled training steps (forward + backward + optimizer in one graph) against eager steps.

The oracle is graphc's eager mode, itself checked against PyTorch in test_optim.py and
test_models.py. The compiled numpy backend runs convolutions in a CNHW layout (one GEMM over all
positions), so its float32 sums run in another order than eager's: agreement is to float32
rounding (rtol 1e-5), over several steps, for every optimizer option, on LeNet and ResNet-18
including BatchNorm statistics and a frozen backbone. The optimizer arithmetic itself is exact.
"""
from __future__ import annotations

import collections

import numpy as np
import pytest
from steps import train_step

import graphc as gc
import graphc.nn.functional as F
from graphc import nn, optim

# Adam and RMSprop divide by the gradient's running magnitude: with a tiny eps, a near-zero gradient whose
# float32 rounding differs between the two runs (the compiled convolutions sum in another order) moves a
# weight by about +-lr either way. eps=1e-3 keeps the update smooth in the gradient, so the comparison
# stays sensitive to real errors (a wrong formula or hyperparameter moves every weight).
OPTIMIZERS = {
    "sgd": lambda p: optim.SGD(p, lr=0.05),
    "sgd_momentum": lambda p: optim.SGD(p, lr=0.05, momentum=0.9),
    "sgd_dampening_wd": lambda p: optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.3, weight_decay=1e-2),
    "sgd_nesterov_maximize": lambda p: optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True, maximize=True),
    "adam": lambda p: optim.Adam(p, lr=1e-2, eps=1e-3),
    "adam_amsgrad_wd": lambda p: optim.Adam(p, lr=1e-2, betas=(0.8, 0.99), eps=1e-3, weight_decay=1e-2,
                                            amsgrad=True),
    "adamw": lambda p: optim.AdamW(p, lr=1e-2, eps=1e-3),
    "rmsprop": lambda p: optim.RMSprop(p, lr=1e-3, eps=1e-3),
    "rmsprop_centered_momentum": lambda p: optim.RMSprop(p, lr=1e-3, eps=1e-3, momentum=0.5, centered=True,
                                                         weight_decay=1e-3),
}


def _pair(make_model, make_opt, freeze=None):
    """Two identical (model, optimizer) pairs: one for eager, one for the compiled step."""
    out = []
    for _ in range(2):
        gc.manual_seed(0)
        m = make_model()
        if freeze:
            freeze(m)
        out.append((m, make_opt([p for p in m.parameters() if p.requires_grad])))
    return out



def _close(actual, desired, what):
    """float32 agreement, with the absolute slack scaled to the tensor: an entry that is a sum of
    larger terms (a momentum buffer, a gradient) carries their rounding, not its own."""
    np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-6 * float(np.abs(desired).max()), err_msg=what)


def _assert_same(m1, o1, m2, o2):
    for (n, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        _close(b.detach().numpy(), a.detach().numpy(), n)
    s1, s2 = o1.state_dict()["state"], o2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for k in s1:
        assert s1[k].keys() == s2[k].keys()
        for name in s1[k]:
            _close(s2[k][name].numpy(), s1[k][name].numpy(), f"state {k}.{name}")


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_lenet_compiled_step_matches_eager(name):
    (m1, o1), (m2, o2) = _pair(gc.models.LeNet, OPTIMIZERS[name])
    eager = train_step(m1, o1, F.mse_loss)
    compiled = gc.compile(train_step(m2, o2, F.mse_loss))
    gc.manual_seed(1)
    for i in range(4):
        x, y = gc.randn(8, 1, 32, 32), gc.randn(8, 10)
        le, lc = eager(x, y), compiled(x, y)
        np.testing.assert_allclose(lc.numpy(), le.detach().numpy(), rtol=1e-6, err_msg=f"loss at step {i}")
        _assert_same(m1, o1, m2, o2)
    assert all(p.grad is not None for p in m2.parameters())  # .grad written back, as eager leaves it
    info = compiled.cache_info()
    assert info.entries == 2, info  # the first step creates optimizer state; every later step reuses one graph


def _small_resnet():
    return gc.models.resnet18(num_classes=10)


def _freeze_backbone(m):
    for p in m.parameters():
        p.requires_grad = False
    m.fc = nn.Linear(512, 10)


RESNET_OPTIMIZERS = {
    "sgd_momentum": lambda p: optim.SGD(p, lr=0.01, momentum=0.9),
    "adam": lambda p: optim.Adam(p, lr=1e-3, eps=1e-3),
}


@pytest.mark.parametrize("name,freeze", [("sgd_momentum", None), ("adam", None), ("sgd_momentum", "frozen")])
def test_resnet18_compiled_step_matches_eager(name, freeze):
    """Batch 4 at 64x64 keeps layer4's BatchNorm over 16 values per channel; at batch 2 and 32x32 it
    normalizes 2 values, an ill-conditioned map that turns rounding differences into different runs."""
    (m1, o1), (m2, o2) = _pair(_small_resnet, RESNET_OPTIMIZERS[name], _freeze_backbone if freeze else None)
    loss_fn = nn.CrossEntropyLoss()
    eager = train_step(m1, o1, loss_fn)
    compiled = gc.compile(train_step(m2, o2, loss_fn))
    gc.manual_seed(2)
    for _ in range(3):
        x, y = gc.randn(4, 3, 64, 64), gc.tensor([3, 7, 1, 0])
        le, lc = eager(x, y), compiled(x, y)
        np.testing.assert_allclose(lc.numpy(), le.detach().numpy(), rtol=1e-5, atol=1e-6)
    # BatchNorm running statistics and num_batches_tracked are functionalized state, written back each call
    sd1, sd2 = m1.state_dict(), m2.state_dict()
    assert int(sd2["bn1.num_batches_tracked"].numpy()) == 3
    for k in sd1:
        # through 20 convolutions summed in another order (CNHW GEMMs), float32 rounding differs
        np.testing.assert_allclose(sd2[k].detach().numpy(), sd1[k].detach().numpy(), rtol=2e-4, atol=2e-5,
                                   err_msg=k)


def test_frozen_backbone_step_has_no_backbone_backward_or_update():
    gc.manual_seed(0)
    model = gc.models.resnet18()
    _freeze_backbone(model)
    opt = optim.SGD(model.fc.parameters(), lr=1e-2, momentum=0.9)
    step = gc.compile(train_step(model, opt, nn.CrossEntropyLoss()))
    low = step.lower(gc.randn(1, 3, 64, 64), gc.tensor([4]))
    g = low.traced.graph
    backward_modules = {n.meta.get("module", "") for n in g.nodes if n.meta.get("phase") == "backward"}
    assert backward_modules <= {"", "fc"}, backward_modules  # only the loss and the new classifier
    updated = {o.name for o in low.traced.outputs if o.kind in ("update", "grad", "new_state")}
    # only the classifier learns; the frozen backbone's BatchNorm layers still track statistics, as in torch
    assert updated and all("fc" in n or n.endswith(("running_mean", "running_var", "num_batches_tracked"))
                           for n in updated), updated
    report = g.meta["autodiff"]
    assert report["without_backward"] > 50  # every backbone op is skipped by the autodiff pass
    phases = collections.Counter(n.meta.get("phase") for n in g.nodes)
    assert phases["optimizer"] > 0 and phases["backward"] < phases["forward"] / 10


def test_learning_rate_change_does_not_recompile_and_changes_the_update():
    (m1, o1), (m2, o2) = _pair(gc.models.LeNet, OPTIMIZERS["sgd_momentum"])
    eager = train_step(m1, o1, F.mse_loss)
    compiled = gc.compile(train_step(m2, o2, F.mse_loss))
    x, y = gc.randn(4, 1, 32, 32), gc.randn(4, 10)
    for lr in (0.05, 0.05, 0.01, 0.002, 0.0):
        for o in (o1, o2):
            o.param_groups[0]["lr"] = lr
        before = m2.fc3.weight.detach().numpy().copy()
        eager(x, y)
        compiled(x, y)
        _assert_same(m1, o1, m2, o2)
        moved = np.abs(m2.fc3.weight.detach().numpy() - before).max()
        assert (moved == 0) == (lr == 0.0)
    info = compiled.cache_info()
    assert info.entries == 2 and info.calls == 5, info
    assert not any("lr" in r for r in info.reasons)


def test_hyperparameters_are_graph_inputs_read_at_call_time():
    (_, _), (m, o) = _pair(gc.models.LeNet, OPTIMIZERS["adam"])
    step = gc.compile(train_step(m, o, F.mse_loss))
    x, y = gc.randn(2, 1, 32, 32), gc.randn(2, 10)
    step(x, y)
    low = step.lower(x, y)
    hyper = {s.name for s in low.traced.inputs if s.kind == "hyper"}
    assert hyper == {"opt.lr", "opt.betas[0]", "opt.betas[1]", "opt.eps"}  # weight_decay 0: decided, not used
    text = low.as_text()
    assert "%opt.lr: f64[]" in text
    assert not any(isinstance(v, gc.hyper.Hyper) for g in o.param_groups for v in g.values())  # restored


def test_a_decision_on_a_hyperparameter_is_guarded():
    (m1, o1), (m2, o2) = _pair(gc.models.LeNet, OPTIMIZERS["sgd_momentum"])
    eager = train_step(m1, o1, F.mse_loss)
    compiled = gc.compile(train_step(m2, o2, F.mse_loss))
    x, y = gc.randn(4, 1, 32, 32), gc.randn(4, 10)
    for momentum in (0.9, 0.9, 0.0, 0.0, 0.5):
        for o in (o1, o2):
            o.param_groups[0]["momentum"] = momentum
        eager(x, y)
        compiled(x, y)
        _assert_same(m1, o1, m2, o2)
    info = compiled.cache_info()
    assert any("guard `opt.momentum != 0` was True, now False" in r for r in info.reasons), info
    assert info.entries == 3, info  # momentum 0.5 reuses the 0.9 graph
    for exes in compiled._cache.values():  # asked once per parameter, guarded once
        for exe in exes:
            labels = [g.label for g in exe.guards]
            assert len(labels) == len(set(labels)) and "opt.momentum != 0" in labels, labels


def test_several_param_groups_each_with_its_own_lr():
    def make(p):
        p = list(p)
        return optim.SGD([{"params": p[:4]}, {"params": p[4:], "lr": 0.2}], lr=0.01, momentum=0.9)
    (m1, o1), (m2, o2) = _pair(gc.models.LeNet, make)
    eager, compiled = train_step(m1, o1, F.mse_loss), gc.compile(train_step(m2, o2, F.mse_loss))
    x, y = gc.randn(4, 1, 32, 32), gc.randn(4, 10)
    for i in range(3):
        for o in (o1, o2):
            o.param_groups[1]["lr"] = 0.2 / (i + 1)
        eager(x, y)
        compiled(x, y)
        _assert_same(m1, o1, m2, o2)
    names = {s.name for s in compiled.lower(x, y).traced.inputs if s.kind == "hyper"}
    assert {"opt.param_groups[0].lr", "opt.param_groups[1].lr"} <= names


def test_lower_leaves_parameters_grads_and_optimizer_state_untouched():
    _, (m, o) = _pair(gc.models.LeNet, OPTIMIZERS["adam"])
    step = gc.compile(train_step(m, o, F.mse_loss))
    x, y = gc.randn(2, 1, 32, 32), gc.randn(2, 10)
    step(x, y)
    before = {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
    grads = [p.grad for p in m.parameters()]
    state = {k: {n: t.numpy().copy() for n, t in s.items()} for k, s in o.state_dict()["state"].items()}
    step.lower(x, y)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v.detach().numpy(), before[k])
    assert all(a is b for a, b in zip(grads, [p.grad for p in m.parameters()]))
    after = o.state_dict()["state"]
    assert after.keys() == state.keys()
    for k in state:
        for n in state[k]:
            assert after[k][n]._data is not None
            np.testing.assert_array_equal(after[k][n].numpy(), state[k][n])
    step(x, y)
    assert step.cache_info().entries == 2


def test_lower_before_the_first_call_leaves_no_symbolic_state():
    _, (m, o) = _pair(gc.models.LeNet, OPTIMIZERS["sgd_momentum"])
    step = gc.compile(train_step(m, o, F.mse_loss))
    x, y = gc.randn(2, 1, 32, 32), gc.randn(2, 10)
    step.lower(x, y)
    assert len(o.state) == 0 and all(p.grad is None for p in m.parameters())
    step(x, y)
    step(x, y)
    assert all(s["momentum_buffer"]._data is not None for s in o.state.values())


def test_loaded_artifact_keeps_and_exposes_hyperparameters(tmp_path):
    _, (m, o) = _pair(gc.models.LeNet, OPTIMIZERS["sgd_momentum"])
    step = gc.compile(train_step(m, o, F.mse_loss))
    x, y = gc.randn(4, 1, 32, 32), gc.randn(4, 10)
    step(x, y)
    step(x, y)
    exe = [e for es in step._cache.values() for e in es][-1]
    assert exe.hyperparameters() == {"opt.lr": 0.05, "opt.momentum": 0.9}
    path = tmp_path / "step.gcx"
    exe.save(str(path))
    loaded = gc.load(str(path))
    assert loaded.hyperparameters() == {"opt.lr": 0.05, "opt.momentum": 0.9}
    loaded.hyper["opt.lr"] = 0.0
    before = loaded.state_dict()["fc3.weight"].copy()
    loaded(x, y)
    np.testing.assert_array_equal(loaded.state_dict()["fc3.weight"], before)  # lr 0: no update


SCHEDULES = {
    "StepLR": (lambda m: m.StepLR, {"step_size": 2, "gamma": 0.5}),
    "MultiStepLR": (lambda m: m.MultiStepLR, {"milestones": [1, 3, 3], "gamma": 0.3}),
    "ExponentialLR": (lambda m: m.ExponentialLR, {"gamma": 0.9}),
    "LambdaLR": (lambda m: m.LambdaLR, {"lr_lambda": lambda e: 1 / (1 + e)}),
    "CosineAnnealingLR": (lambda m: m.CosineAnnealingLR, {"T_max": 3, "eta_min": 1e-4}),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_lr_schedules_match_torch(name):
    torch = pytest.importorskip("torch")
    get, kw = SCHEDULES[name]
    p = gc.zeros(2, requires_grad=True)
    tp = torch.zeros(2, requires_grad=True)
    s = get(optim.lr_scheduler)(optim.SGD([p], lr=0.1), **kw)
    ts = get(torch.optim.lr_scheduler)(torch.optim.SGD([tp], lr=0.1), **kw)
    for _ in range(9):
        assert s.get_last_lr() == ts.get_last_lr()  # exact: the same float arithmetic
        s.optimizer.step()
        ts.optimizer.step()
        s.step()
        ts.step()


def test_a_schedule_does_not_recompile_a_training_step():
    (m1, o1), (m2, o2) = _pair(gc.models.LeNet, OPTIMIZERS["adam"])
    s1 = optim.lr_scheduler.CosineAnnealingLR(o1, T_max=4)
    s2 = optim.lr_scheduler.CosineAnnealingLR(o2, T_max=4)
    eager, compiled = train_step(m1, o1, F.mse_loss), gc.compile(train_step(m2, o2, F.mse_loss))
    x, y = gc.randn(4, 1, 32, 32), gc.randn(4, 10)
    for _ in range(6):
        eager(x, y)
        compiled(x, y)
        s1.step()
        s2.step()
        _assert_same(m1, o1, m2, o2)
    assert compiled.cache_info().entries == 2


def test_a_first_step_graph_is_not_saved_or_rerun_once_state_exists(tmp_path):
    from graphc.io.artifact import ArtifactError

    _, (m, o) = _pair(gc.models.LeNet, OPTIMIZERS["sgd_momentum"])
    step = gc.compile(train_step(m, o, F.mse_loss))
    x, y = gc.randn(2, 1, 32, 32), gc.randn(2, 10)
    first = step.lower(x, y).compile()  # traced before any momentum buffer exists: it creates them
    with pytest.raises(ArtifactError, match="traced before the optimizer had state"):
        first.save(str(tmp_path / "first.graphc"))
    assert not (tmp_path / "first.graphc").exists()
    first(x, y)  # creates the buffers
    with pytest.raises(RuntimeError, match="would create opt.*momentum_buffer again"):
        first(x, y)
    steady = step.lower(x, y).compile()  # now traced with the state as inputs
    steady.save(str(tmp_path / "steady.graphc"))
    steady(x, y)


def test_backward_inside_a_compiled_function_writes_and_accumulates_argument_grads(tmp_path):
    @gc.compile
    def step(x, w):
        loss = (x ** 2 * w).sum()
        loss.backward()
        return loss

    def eager(x, w):
        loss = (x ** 2 * w).sum()
        loss.backward()
        return loss

    for _ in range(2):  # each call writes into the tensors passed at that call
        x0 = gc.randn(3)
        xs = [x0.clone().requires_grad_() for _ in range(2)]
        w = gc.randn(3)
        step(xs[0], w)
        eager(xs[1], w)
        np.testing.assert_array_equal(xs[0].grad.numpy(), xs[1].grad.numpy())
        step(xs[0], w)  # accumulates, as backward() does
        eager(xs[1], w)
        np.testing.assert_array_equal(xs[0].grad.numpy(), xs[1].grad.numpy())


def test_an_in_place_update_of_an_argument_goes_to_the_tensor_of_each_call():
    @gc.compile
    def bump(x):
        x.add_(1)
        return x.sum()

    a, b = gc.zeros(2), gc.zeros(2)
    bump(a)
    bump(b)
    bump(b)
    np.testing.assert_array_equal(a.numpy(), [1, 1])
    np.testing.assert_array_equal(b.numpy(), [2, 2])
