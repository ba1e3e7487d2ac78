"""graphc.optim: update formulas (against torch and against hand-written references), state, reprs."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc import nn, optim

CONFIGS = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("SGD", {"lr": 0.1, "weight_decay": 0.05}),
    ("SGD", {"lr": 0.05, "momentum": 0.5, "weight_decay": 0.05, "maximize": True}),
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.01, "amsgrad": True}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1, "betas": (0.8, 0.99)}),
    ("AdamW", {"lr": 0.01}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
    ("RMSprop", {"lr": 0.01}),
    ("RMSprop", {"lr": 0.01, "centered": True}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.9}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.5, "centered": True, "weight_decay": 0.1, "alpha": 0.9}),
]


def _data():
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (3,), (5, 4), (5, 3))]


def _loss(lib, w, b, x, y):
    """A small regression loss plus a cubic term, so gradients change sign and size over the steps."""
    return (((x @ w.t() + b) - y) ** 2).mean() + (b ** 3).sum() * 0.1


@pytest.mark.torch
@pytest.mark.parametrize("name,kw", CONFIGS, ids=[f"{n}-{'-'.join(k)}" for n, k in CONFIGS])
def test_ten_step_trajectory_matches_torch(name, kw):
    torch = pytest.importorskip("torch")
    w0, b0, x, y = _data()
    gp = [nn.Parameter(gc.tensor(w0)), nn.Parameter(gc.tensor(b0)), nn.Parameter(gc.ones(2))]  # last: never used
    tp = [torch.nn.Parameter(torch.tensor(w0)), torch.nn.Parameter(torch.tensor(b0)), torch.nn.Parameter(torch.ones(2))]
    go, to = getattr(optim, name)(gp, **kw), getattr(torch.optim, name)(tp, **kw)
    for _ in range(10):
        go.zero_grad()
        to.zero_grad()
        _loss(gc, gp[0], gp[1], gc.tensor(x), gc.tensor(y)).backward()
        _loss(torch, tp[0], tp[1], torch.tensor(x), torch.tensor(y)).backward()
        go.step()
        to.step()
        for g, t in zip(gp, tp, strict=True):
            np.testing.assert_allclose(g.detach().numpy(), t.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert gp[2].tolist() == [1.0, 1.0] and gp[2] not in go.state  # grad None: skipped, no state
    gsd, tsd = go.state_dict(), to.state_dict()
    assert gsd["param_groups"] == tsd["param_groups"]
    assert gsd["state"].keys() == tsd["state"].keys()
    for i, st in tsd["state"].items():
        assert gsd["state"][i].keys() == st.keys()
        for k, v in st.items():
            np.testing.assert_allclose(np.asarray(gsd["state"][i][k]), v.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop"])
def test_repr_matches_torch(name):
    torch = pytest.importorskip("torch")
    kw = {"lr": 1e-2, "momentum": 0.9} if name == "SGD" else {}
    assert repr(getattr(optim, name)([nn.Parameter(gc.zeros(1))], **kw)) == \
        repr(getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(1))], **kw))


def test_sgd_repr_text():
    opt = optim.SGD([nn.Parameter(gc.zeros(1))], lr=1e-2, momentum=0.9)
    assert repr(opt) == ("SGD (\nParameter Group 0\n    dampening: 0\n    differentiable: False\n    foreach: None\n"
                         "    fused: None\n    lr: 0.01\n    maximize: False\n    momentum: 0.9\n    nesterov: False\n"
                         "    weight_decay: 0\n)")


# ---- hand-written references (no torch needed) --------------------------------------------------

def _quadratic_run(opt_fn, steps=10):
    """Minimize 0.5*||p - c||^2 (grad = p - c); returns the trajectory of p."""
    c = np.array([1.0, -2.0, 0.5], np.float32)
    p = nn.Parameter(gc.tensor([0.3, 0.1, -0.7]))
    opt = opt_fn([p])
    out = []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * ((p - gc.tensor(c)) ** 2).sum()).backward()
        opt.step()
        out.append(p.detach().numpy().copy())
    return np.array(out), c


def test_sgd_momentum_nesterov_weight_decay_reference():
    lr, mom, damp, wd = 0.1, 0.9, 0.2, 0.01
    for nesterov in (False, True):
        traj, c = _quadratic_run(lambda ps: optim.SGD(ps, lr=lr, momentum=mom, dampening=0 if nesterov else damp,
                                                       weight_decay=wd, nesterov=nesterov))
        p, buf = np.array([0.3, 0.1, -0.7]), None
        for t in range(10):
            g = (p - c) + wd * p
            buf = g.copy() if buf is None else mom * buf + (1 - (0 if nesterov else damp)) * g
            p = p - lr * (g + mom * buf if nesterov else buf)
            np.testing.assert_allclose(traj[t], p, rtol=1e-5, atol=1e-6)


def test_adam_and_adamw_reference():
    lr, b1, b2, eps, wd = 0.05, 0.9, 0.999, 1e-8, 0.1
    for decoupled, amsgrad in ((False, False), (True, True)):
        cls = optim.AdamW if decoupled else optim.Adam
        traj, c = _quadratic_run(lambda ps: cls(ps, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, amsgrad=amsgrad))
        p, m, v, vmax = np.array([0.3, 0.1, -0.7]), 0.0, 0.0, 0.0
        for t in range(1, 11):
            g = p - c
            if decoupled:
                p = p * (1 - lr * wd)
            else:
                g = g + wd * p
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            vmax = np.maximum(vmax, v)
            vhat = (vmax if amsgrad else v) / (1 - b2 ** t)
            p = p - lr / (1 - b1 ** t) * m / (np.sqrt(vhat) + eps)
            np.testing.assert_allclose(traj[t - 1], p, rtol=1e-5, atol=1e-6)


def test_rmsprop_reference():
    lr, alpha, eps, mom = 0.01, 0.9, 1e-8, 0.5
    for centered in (False, True):
        traj, c = _quadratic_run(lambda ps: optim.RMSprop(ps, lr=lr, alpha=alpha, eps=eps, momentum=mom,
                                                          centered=centered))
        p, sq, ga, buf = np.array([0.3, 0.1, -0.7]), 0.0, 0.0, 0.0
        for t in range(10):
            g = p - c
            sq = alpha * sq + (1 - alpha) * g * g
            ga = alpha * ga + (1 - alpha) * g
            avg = np.sqrt(sq - ga * ga if centered else sq) + eps
            buf = mom * buf + g / avg
            p = p - lr * buf
            np.testing.assert_allclose(traj[t], p, rtol=1e-5, atol=1e-6)


# ---- groups, state and bookkeeping ------------------------------------------------------------------

def test_param_groups_hyperparameters_are_read_at_every_step():
    a, b = nn.Parameter(gc.ones(2)), nn.Parameter(gc.ones(2))
    opt = optim.SGD([{"params": [a]}, {"params": b, "lr": 0.5}], lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5] and opt.param_groups[1]["momentum"] == 0
    (a.sum() + b.sum()).backward()
    opt.step()
    np.testing.assert_allclose(a.detach().numpy(), [0.9, 0.9])
    np.testing.assert_allclose(b.detach().numpy(), [0.5, 0.5])
    opt.param_groups[0]["lr"] = 1.0  # a scheduler's change takes effect at the next step
    opt.step()
    np.testing.assert_allclose(a.detach().numpy(), [-0.1, -0.1], rtol=1e-6)
    c = nn.Parameter(gc.ones(1))
    opt.add_param_group({"params": [c], "lr": 0.3})
    assert opt.param_groups[2]["lr"] == 0.3 and opt.param_groups[2]["nesterov"] is False
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [a]})


def test_zero_grad_and_validation():
    p = nn.Parameter(gc.ones(2))
    opt = optim.Adam([p])
    (p * 3).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert p.grad.tolist() == [0.0, 0.0]
    opt.zero_grad()
    assert p.grad is None
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        optim.Adam([p], lr=-1)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([p * 2], lr=0.1)


@pytest.mark.parametrize("name,kw", [("SGD", {"lr": 0.1, "momentum": 0.9}), ("Adam", {"lr": 0.01, "amsgrad": True}),
                                     ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5})])
def test_state_dict_round_trip_continues_identically(name, kw):
    w0, b0, x, y = _data()

    def make():
        ps = [nn.Parameter(gc.tensor(w0)), nn.Parameter(gc.tensor(b0))]
        return ps, getattr(optim, name)(ps, **kw)

    def step(ps, opt):
        opt.zero_grad()
        _loss(gc, ps[0], ps[1], gc.tensor(x), gc.tensor(y)).backward()
        opt.step()

    p1, o1 = make()
    for _ in range(3):
        step(p1, o1)
    sd = o1.state_dict()
    assert sorted(sd["state"]) == [0, 1] and sd["param_groups"][0]["params"] == [0, 1]
    p2, o2 = make()
    for a, b in zip(p2, p1, strict=True):
        with gc.no_grad():
            a.copy_(b)
    o2.load_state_dict({"state": {i: {k: v.numpy() if isinstance(v, gc.Tensor) else v for k, v in st.items()}
                                  for i, st in sd["state"].items()},
                        "param_groups": sd["param_groups"]})
    for _ in range(3):
        step(p1, o1)
        step(p2, o2)
    for a, b in zip(p1, p2, strict=True):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    with pytest.raises(ValueError, match="different number of parameter groups"):
        o2.load_state_dict({"state": {}, "param_groups": []})


@pytest.mark.torch
def test_torch_optimizer_state_dict_loads():
    torch = pytest.importorskip("torch")
    w0, b0, x, y = _data()
    tp = [torch.nn.Parameter(torch.tensor(w0)), torch.nn.Parameter(torch.tensor(b0))]
    to = torch.optim.Adam(tp, lr=0.01)
    gp = [nn.Parameter(gc.tensor(w0)), nn.Parameter(gc.tensor(b0))]
    go = optim.Adam(gp, lr=0.01)
    for _ in range(2):
        to.zero_grad()
        _loss(torch, tp[0], tp[1], torch.tensor(x), torch.tensor(y)).backward()
        to.step()
    with gc.no_grad():
        for g, t in zip(gp, tp, strict=True):
            g.copy_(gc.tensor(t.detach().numpy()))
    go.load_state_dict(to.state_dict())
    for _ in range(3):
        to.zero_grad()
        go.zero_grad()
        _loss(torch, tp[0], tp[1], torch.tensor(x), torch.tensor(y)).backward()
        _loss(gc, gp[0], gp[1], gc.tensor(x), gc.tensor(y)).backward()
        to.step()
        go.step()
    for g, t in zip(gp, tp, strict=True):
        np.testing.assert_allclose(g.detach().numpy(), t.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_compiled_adam_step_builds_one_graph_for_all_steps():
    """The step count is a state tensor, so later steps reuse the graph instead of baking in t."""
    w0, b0, x, y = _data()
    ps = [nn.Parameter(gc.tensor(w0)), nn.Parameter(gc.tensor(b0))]
    ref = [nn.Parameter(gc.tensor(w0)), nn.Parameter(gc.tensor(b0))]
    opt, ref_opt = optim.Adam(ps, lr=0.01), optim.Adam(ref, lr=0.01)

    @gc.compile
    def train_step(xb, yb):
        opt.zero_grad()
        loss = _loss(gc, ps[0], ps[1], xb, yb)
        loss.backward()
        opt.step()
        return loss

    for _ in range(5):
        train_step(gc.tensor(x), gc.tensor(y))
        ref_opt.zero_grad()
        _loss(gc, ref[0], ref[1], gc.tensor(x), gc.tensor(y)).backward()
        ref_opt.step()
    for a, b in zip(ps, ref, strict=True):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-6, atol=1e-7)
    assert train_step.cache_info().entries <= 2  # first call (no grads/state yet) and the steady state
