"""Eager tensors and autograd with PyTorch's semantics (SPEC.md section 1): compared against torch where it is
installed (tests marked `torch`) and against analytic values everywhere else."""
from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest

import graphc as gc

torch_mark = pytest.mark.torch
THIS_FILE = os.path.basename(__file__)


def _torch():
    return pytest.importorskip("torch")


def _rng(seed=0):
    return np.random.default_rng(seed)


def _np(t):
    """A graphc or torch tensor as a numpy array."""
    return t.detach().numpy()


def _compare(fn, *arrays, grad=True, rtol=1e-5, atol=1e-6, torch_fn=None):
    """fn on graphc and on torch tensors built from the same arrays: outputs, and input gradients
    for a random output cotangent, agree."""
    torch = _torch()
    gx = [gc.tensor(a, requires_grad=grad and a.dtype.kind == "f") for a in arrays]
    tx = [torch.tensor(a, requires_grad=grad and a.dtype.kind == "f") for a in arrays]
    go, to = fn(*gx), (torch_fn or fn)(*tx)
    assert tuple(go.shape) == tuple(to.shape)
    assert go.dtype.name == str(to.dtype).removeprefix("torch.")
    np.testing.assert_allclose(_np(go), _np(to), rtol=rtol, atol=atol)
    if grad and to.requires_grad:
        ct = _rng(1).standard_normal(tuple(to.shape)).astype(_np(to).dtype)
        go.backward(gc.tensor(ct))
        to.backward(torch.tensor(ct))
        for g, t in zip(gx, tx, strict=True):
            if t.grad is None:
                assert g.grad is None
            else:
                assert g.grad is not None and g.grad.shape == tuple(t.grad.shape)
                np.testing.assert_allclose(g.grad.numpy(), t.grad.numpy(), rtol=rtol, atol=atol)
    return go, to


# ---- accumulation, retain_graph, freeing -----------------------------------------------------------

def test_grad_accumulates_across_backward_calls():
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]
    g = x.grad
    (x * x).sum().backward()
    assert x.grad.tolist() == [5.0, 7.0]
    assert x.grad is g  # accumulated into the same tensor, like torch
    x.grad = None
    (x * 2).sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]


def test_grad_zero_in_place_then_accumulate():
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    x.grad.zero_()
    (x * 5).sum().backward()
    assert x.grad.tolist() == [5.0, 5.0]


def test_retain_graph_allows_a_second_backward():
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    y = (x ** 2).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.tolist() == [4.0, 8.0]


def test_backward_twice_without_retain_graph_raises():
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="Trying to backward through the graph a second time"):
        y.backward()


@torch_mark
def test_backward_twice_message_is_torchs():
    torch = _torch()
    msgs = []
    for mod in (gc, torch):
        x = mod.tensor([1.0, 2.0], requires_grad=True)
        y = (x.exp() * 2).sum()
        y.backward()
        with pytest.raises(RuntimeError) as e:
            y.backward()
        msgs.append(str(e.value))
    assert msgs[0] == msgs[1]


def test_non_scalar_backward_without_gradient_raises():
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        (x * 2).backward()


def test_backward_on_tensor_without_grad_raises():
    x = gc.tensor([1.0, 2.0])
    with pytest.raises(RuntimeError, match="element 0 of tensors does not require grad and does not have a grad_fn"):
        (x * 2).sum().backward()


def test_backward_gradient_shape_mismatch_raises():
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="Mismatch in shape"):
        (x * 2).backward(gc.tensor([1.0, 2.0, 3.0]))


def test_backward_on_a_leaf_accumulates_the_seed():
    x = gc.tensor(2.0, requires_grad=True)
    x.backward()
    assert x.grad.item() == 1.0


def test_shared_subexpression_gradients_sum():
    x = gc.tensor(3.0, requires_grad=True)
    y = x * x
    z = y + y * y  # dz/dx = 2x + 4x^3
    z.backward()
    assert x.grad.item() == 2 * 3 + 4 * 27


# ---- in-place ----------------------------------------------------------------------------------------

def test_in_place_on_leaf_requiring_grad_raises():
    w = gc.ones(3, requires_grad=True)
    msg = "a leaf Variable that requires grad is being used in an in-place operation."
    with pytest.raises(RuntimeError, match=msg):
        w.add_(1)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):
        w[0] = 5.0
    assert w.tolist() == [1.0, 1.0, 1.0]


def test_in_place_under_no_grad_updates_the_leaf():
    w = gc.tensor([1.0, 2.0], requires_grad=True)
    (w * w).sum().backward()
    with gc.no_grad():
        w.sub_(w.grad * 0.5)
    assert w.tolist() == [0.0, 0.0]
    assert w.requires_grad and w.is_leaf and w.grad_fn is None


def test_in_place_through_data_updates_the_tensor():
    f = gc.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (f * f).sum().backward()
    f.data.sub_(f.grad.data * 0.01)
    np.testing.assert_allclose(f.detach().numpy(), [0.98, 1.96, 2.94], rtol=1e-6)
    assert f.requires_grad and f.is_leaf
    assert not f.data.requires_grad


def test_in_place_on_non_leaf_is_recorded():
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    y.mul_(x)  # y = 2x^2
    assert y.grad_fn is not None
    y.sum().backward()
    assert x.grad.tolist() == [4.0, 8.0]


def test_in_place_on_a_saved_output_raises_torchs_error():
    x = gc.tensor([0.0, 1.0], requires_grad=True)
    y = x.exp()  # exp's backward uses its output
    y.mul_(3)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):  # as torch (issue 9)
        y.sum().backward()


def test_zero_and_copy_on_non_leaf_cut_the_old_history():
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    y.zero_()
    assert y.requires_grad and y.tolist() == [0.0, 0.0]
    (y + x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0]
    z = x * 2
    z.copy_(gc.tensor([5.0, 6.0]))
    z.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0] and z.tolist() == [5.0, 6.0]


@torch_mark
@pytest.mark.parametrize("expr", [
    "y.mul_(x)", "y.add_(x * x)", "y.sub_(1)", "y.div_(x + 3)", "y.zero_()", "y.fill_(2.0)",
    "y.copy_(x.detach() * 5)", "y.clamp_(0.5, 2.0)", "y.relu_()",
])
def test_in_place_on_non_leaf_matches_torch(expr):
    torch = _torch()
    res = []
    for mod in (gc, torch):
        x = mod.tensor([0.3, -1.0, 2.0], requires_grad=True)
        y = x * 2
        out = eval(expr, {"x": x, "y": y})
        (out * out).sum().backward()
        res.append((out, y, x.grad))
    for g, t in zip(*res, strict=True):
        np.testing.assert_allclose(_np(g), _np(t), rtol=1e-6)


def test_in_place_methods():
    t = gc.tensor([1.0, 2.0, 3.0])
    t.add_(1).mul_(2).div_(4).sub_(gc.tensor([1.0, 1.0, 1.0]))
    assert t.tolist() == [0.0, 0.5, 1.0]
    t.add_(gc.tensor([1.0, 1.0, 1.0]), alpha=2)
    assert t.tolist() == [2.0, 2.5, 3.0]
    t.copy_(gc.tensor([7.0]))
    assert t.tolist() == [7.0, 7.0, 7.0]
    t.fill_(2)
    assert t.tolist() == [2.0, 2.0, 2.0]
    assert t.zero_() is t and t.tolist() == [0.0, 0.0, 0.0]


def test_clone_copies():
    for t in (gc.tensor([1, 2]), gc.tensor([True, False]), gc.tensor([1.0, 2.0])):
        c = t.clone()
        assert c.dtype == t.dtype and c.tolist() == t.tolist()
        c[0] = 0
        assert t.tolist()[0] != 0
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    (x.clone() * 2).sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]


def test_detach_shares_memory_and_has_no_history():
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    d = y.detach()
    assert not d.requires_grad and d.grad_fn is None and d.is_leaf
    d.add_(1)
    assert y.detach().tolist() == [3.0, 5.0]  # torch: detach() shares storage


# ---- higher order ----------------------------------------------------------------------------------

def test_create_graph_second_derivative_of_cube():
    x = gc.tensor([0.5, 2.0], requires_grad=True)
    (dx,) = gc.autograd.grad((x ** 3).sum(), x, create_graph=True)
    assert dx.requires_grad and dx.grad_fn is not None
    np.testing.assert_allclose(dx.detach().numpy(), 3 * np.array([0.5, 2.0]) ** 2)
    (d2,) = gc.autograd.grad(dx.sum(), x)
    np.testing.assert_allclose(d2.numpy(), 6 * np.array([0.5, 2.0]))


def test_create_graph_backward_then_backward_of_grad():
    x = gc.tensor(2.0, requires_grad=True)
    y = x ** 3
    y.backward(create_graph=True)
    assert x.grad.item() == 12.0 and x.grad.requires_grad
    g = x.grad
    x.grad = None
    g.backward()
    assert x.grad.item() == 12.0  # d/dx 3x^2 = 6x


def test_third_derivative_of_exp_sin():
    x = gc.tensor(0.7, dtype=gc.float64, requires_grad=True)
    y = x.sin()
    for expect in (math.cos, lambda v: -math.sin(v), lambda v: -math.cos(v)):
        (y,) = gc.autograd.grad(y, x, create_graph=True)
        assert y.item() == pytest.approx(expect(0.7))


@torch_mark
@pytest.mark.parametrize("name", ["tanh", "exp", "matmul", "sigmoid_mul", "softmax", "div_pow"])
def test_grad_of_grad_matches_torch(name):
    torch = _torch()
    rng = _rng(3)
    a = rng.standard_normal((3, 4))
    b = rng.standard_normal((4, 2))
    fns = {
        "tanh": lambda m, x, w: (x.tanh() ** 2).sum(),
        "exp": lambda m, x, w: (x.exp() * x).sum(),
        "matmul": lambda m, x, w: ((x @ w).tanh() ** 2).sum(),
        "sigmoid_mul": lambda m, x, w: (x.sigmoid() * x.sum(0, keepdim=True)).mean(),
        "softmax": lambda m, x, w: (x.softmax(-1) * x).sum(),
        "div_pow": lambda m, x, w: (x / (1 + x * x)).pow(3).sum(),
    }
    res = []
    for mod in (gc, torch):
        x = mod.tensor(a, requires_grad=True)
        w = mod.tensor(b, requires_grad=True)
        out = fns[name](mod, x, w)
        gx, gw = mod.autograd.grad(out, [x, w], create_graph=True, allow_unused=True)
        inner = (gx * gx).sum() + (gw.sum() if gw is not None else 0)
        hx, hw = mod.autograd.grad(inner, [x, w], allow_unused=True)
        res.append((out, gx, hx, hw))
    for g, t in zip(*res, strict=True):
        if t is None:
            assert g is None
        else:
            np.testing.assert_allclose(_np(g), _np(t), rtol=1e-7, atol=1e-9)


# ---- gc.autograd.grad --------------------------------------------------------------------------------

def test_autograd_grad_does_not_touch_grad_fields():
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    (g,) = gc.autograd.grad((x * x).sum(), x)
    assert g.tolist() == [2.0, 4.0]
    assert x.grad is None
    assert isinstance(gc.autograd.grad((x * x).sum(), [x]), tuple)


def test_autograd_grad_with_grad_outputs_and_non_leaf_inputs():
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    y = h * h
    gh, gx = gc.autograd.grad(y, [h, x], grad_outputs=gc.tensor([1.0, 0.5]))
    assert gh.tolist() == [6.0, 6.0]  # 2h * v
    assert gx.tolist() == [18.0, 18.0]  # 18x * v
    assert x.grad is None and h.grad is None


def test_autograd_grad_multiple_outputs():
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    (g,) = gc.autograd.grad([(x * x).sum(), (x * 3).sum()], [x])
    assert g.tolist() == [5.0, 7.0]


def test_autograd_grad_allow_unused():
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    z = gc.tensor([1.0, 2.0], requires_grad=True)
    y = (x * 2).sum()
    with pytest.raises(RuntimeError, match="appears to not have been used in the graph"):
        gc.autograd.grad(y, [x, z], retain_graph=True)
    gx, gz = gc.autograd.grad(y, [x, z], allow_unused=True)
    assert gx.tolist() == [2.0, 2.0] and gz is None


def test_backward_inputs_restricts_accumulation():
    x = gc.tensor([1.0], requires_grad=True)
    z = gc.tensor([2.0], requires_grad=True)
    (x * z).sum().backward(inputs=[x])
    assert x.grad.tolist() == [2.0] and z.grad is None


def test_backward_inputs_can_name_a_non_leaf():
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    (h * h).sum().backward(inputs=[h])
    assert h.grad.tolist() == [6.0, 12.0]  # torch fills a non-leaf's .grad when it is named in inputs
    assert x.grad is None


# ---- grad modes ------------------------------------------------------------------------------------

def test_no_grad_context_and_decorator():
    x = gc.tensor([1.0], requires_grad=True)
    with gc.no_grad():
        assert not gc.is_grad_enabled()
        y = x * 2
    assert gc.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None

    @gc.no_grad()
    def f(t):
        return t * 2

    assert not f(x).requires_grad
    assert gc.is_grad_enabled()
    assert (x * 2).requires_grad


def test_no_grad_decorator_restores_mode_on_exception():
    @gc.no_grad()
    def boom():
        raise ValueError("x")

    with pytest.raises(ValueError):
        boom()
    assert gc.is_grad_enabled()


def test_enable_grad_inside_no_grad():
    x = gc.tensor([1.0], requires_grad=True)
    with gc.no_grad():
        with gc.enable_grad():
            y = x * 2
        z = x * 2
    assert y.requires_grad and not z.requires_grad

    @gc.enable_grad()
    def f(t):
        return t * 2

    with gc.no_grad():
        assert f(x).requires_grad


def test_set_grad_enabled():
    x = gc.tensor([1.0], requires_grad=True)
    with gc.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert (x * 2).requires_grad
    gc.set_grad_enabled(False)
    try:
        assert not (x * 2).requires_grad
    finally:
        gc.set_grad_enabled(True)
    assert (x * 2).requires_grad
    with gc.no_grad():
        with gc.set_grad_enabled(True):
            assert (x * 2).requires_grad
        assert not gc.is_grad_enabled()


# ---- leaves, requires_grad, retain_grad ---------------------------------------------------------------

def test_is_leaf_and_requires_grad():
    a = gc.tensor([1.0])
    b = gc.tensor([1.0], requires_grad=True)
    c = b * 2
    d = a * 2
    assert a.is_leaf and b.is_leaf and not c.is_leaf and d.is_leaf
    assert not a.requires_grad and b.requires_grad and c.requires_grad and not d.requires_grad
    assert c.detach().is_leaf
    with pytest.raises(RuntimeError, match="you can only change requires_grad flags of leaf variables"):
        c.requires_grad = False


def test_requires_grad_():
    a = gc.tensor([1.0, 2.0])
    assert a.requires_grad_() is a and a.requires_grad
    (a * a).sum().backward()
    assert a.grad.tolist() == [2.0, 4.0]
    a.requires_grad_(False)
    assert not (a * a).requires_grad


def test_retain_grad_on_non_leaf():
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    y.retain_grad()
    assert y.retains_grad
    z = y * y
    z.sum().backward()
    assert y.grad.tolist() == [6.0, 12.0]
    assert x.grad.tolist() == [18.0, 36.0]
    w = x * 2
    w.sum().backward()
    assert w.grad is None


def test_int_tensors_cannot_require_grad():
    with pytest.raises(RuntimeError, match="only Tensors of floating point dtype can require gradients"):
        gc.tensor([1, 2], requires_grad=True)
    t = gc.tensor([1, 2])
    with pytest.raises(RuntimeError, match="only Tensors of floating point dtype can require gradients"):
        t.requires_grad_()
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    assert not (x > 1).requires_grad
    assert not x.argmax().requires_grad


def test_grad_flows_through_cast():
    x = gc.tensor([1.0, 2.0], requires_grad=True)
    y = x.double() * 3
    assert y.dtype == gc.float64
    y.sum().backward()
    assert x.grad.dtype == gc.float32 and x.grad.tolist() == [3.0, 3.0]


# ---- detect_anomaly ----------------------------------------------------------------------------------

def test_detect_anomaly_forward_names_op_and_user_line():
    x = gc.tensor([1.0, -1.0], requires_grad=True)
    with gc.detect_anomaly():
        with pytest.raises(RuntimeError) as e:
            gc.log(x)  # this line is named in the message
    msg = str(e.value)
    assert "log" in msg and "NaN" in msg
    assert f"{THIS_FILE}:" in msg
    line = int(msg.split(f"{THIS_FILE}:")[1].split()[0].rstrip(")"))
    assert "gc.log(x)" in open(__file__).read().splitlines()[line - 1]


def test_detect_anomaly_backward_names_op_and_user_line():
    x = gc.tensor([0.0, 4.0], requires_grad=True)
    with gc.detect_anomaly():
        y = x.sqrt()  # finite forward, infinite gradient at 0
        with pytest.raises(RuntimeError) as e:
            y.sum().backward()
    msg = str(e.value)
    assert "SqrtBackward0" in msg
    assert f"{THIS_FILE}:" in msg
    line = int(msg.split(f"{THIS_FILE}:")[1].split()[0].rstrip(")"))
    assert "x.sqrt()" in open(__file__).read().splitlines()[line - 1]


def test_detect_anomaly_around_backward_only_names_the_backward_line():
    x = gc.tensor([0.0, 4.0], requires_grad=True)
    y = x.sqrt().sum()
    with gc.detect_anomaly():
        with pytest.raises(RuntimeError) as e:
            y.backward()
    msg = str(e.value)
    assert "SqrtBackward0" in msg and "inf" in msg
    line = int(msg.split(f"{THIS_FILE}:")[1].split()[0].rstrip(")"))
    assert "y.backward()" in open(__file__).read().splitlines()[line - 1]


def test_detect_anomaly_restores_the_mode_after_an_error():
    with pytest.raises(RuntimeError, match="log"):
        with gc.detect_anomaly():
            gc.log(gc.tensor([-1.0]))
    assert math.isnan(gc.log(gc.tensor([-1.0])).item())


def test_without_detect_anomaly_nan_passes_silently():
    x = gc.tensor([-1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch gives nan and inf without a warning
        assert math.isnan(gc.log(x).item())
        assert gc.log(gc.tensor(0.0)).item() == -math.inf
        assert (gc.tensor([1.0]) / 0).item() == math.inf
    with gc.detect_anomaly():
        pass
    assert math.isnan(gc.log(x).item())


# ---- indexing and views --------------------------------------------------------------------------------

INDEXES = [
    "x[1]", "x[-1]", "x[0, 2]", "x[1:3]", "x[:, 1]", "x[:, -2:]", "x[::2, 1::2]", "x[None]", "x[:, None, 1]",
    "x[..., 0]", "x[0, ..., None]", "x[..., 1:3, :]", "x[-3:-1, ::3]",
    "x[2, 1, 3]", "x[1][2]", "x[..., -1, None]", "x[1:100]",
]


@torch_mark
@pytest.mark.parametrize("expr", INDEXES)
def test_indexing_matches_torch(expr):
    a = _rng().standard_normal((3, 4, 5)).astype(np.float32)
    _compare(lambda x: eval(expr), a)


def test_indexing_analytic():
    x = gc.arange(12).reshape(3, 4)
    assert x[1].tolist() == [4, 5, 6, 7]
    assert x[-1, -1].item() == 11
    assert x[:, 1].tolist() == [1, 5, 9]
    assert x[None].shape == (1, 3, 4)
    assert x[..., None].shape == (3, 4, 1)
    assert x[1:, ::2].tolist() == [[4, 6], [8, 10]]
    with pytest.raises(IndexError, match="out of bounds"):
        x[3]
    with pytest.raises(IndexError, match="too many indices"):
        x[0, 0, 0]
    y = gc.ones(3, 4, requires_grad=True)
    (y[1] * 2 + y[:, 0].sum()).sum().backward()
    assert y.grad.tolist() == [[4.0, 0.0, 0.0, 0.0], [6.0, 2.0, 2.0, 2.0], [4.0, 0.0, 0.0, 0.0]]


def test_setitem():
    t = gc.zeros(3, 4)
    t[1] = 5.0
    t[:, 0] = gc.tensor([1.0, 2.0, 3.0])
    t[2, 1:3] = 7
    t[..., -1] = gc.tensor(9.0)
    assert t.tolist() == [[1, 0, 0, 9], [2, 5, 5, 9], [3, 7, 7, 9]]
    assert t.dtype == gc.float32


def test_setitem_on_non_leaf_is_differentiable():
    x = gc.tensor([1.0, 2.0, 3.0], requires_grad=True)
    v = gc.tensor(10.0, requires_grad=True)
    y = x * 2
    y[1] = v * 3
    y.sum().backward()
    assert x.grad.tolist() == [2.0, 0.0, 2.0]
    assert v.grad.item() == 3.0


@torch_mark
def test_setitem_matches_torch():
    torch = _torch()
    a = _rng().standard_normal((3, 4)).astype(np.float32)
    b = _rng(2).standard_normal((4,)).astype(np.float32)
    res = []
    for mod in (gc, torch):
        x = mod.tensor(a, requires_grad=True)
        v = mod.tensor(b, requires_grad=True)
        y = x * 3
        y[1] = v * v
        y[:, 2] = 0.5
        (y * y).sum().backward()
        res.append((y, x.grad, v.grad))
    for g, t in zip(*res, strict=True):
        np.testing.assert_allclose(_np(g), _np(t), rtol=1e-5)


VIEWS = [
    "x.reshape(4, 15)", "x.reshape(-1)", "x.view(2, -1, 5)", "x.flatten()", "x.flatten(1)", "x.flatten(0, 1)",
    "x.transpose(0, 2)", "x.transpose(-1, 1)", "x.permute(2, 0, 1)", "x.permute(-1, 0, 1)", "x.unsqueeze(0)",
    "x.unsqueeze(-1)", "x.unsqueeze(1).squeeze(1)", "x[:, :1].squeeze()", "x[:, :1].squeeze(1)",
    "x[:, :1].squeeze(0)", "x[:, :1].expand(3, 6, 5)", "x[:, :1].expand(2, -1, 4, 5)", "x.reshape(12, 5).T",
    "x.reshape(3, 20).t()", "x.contiguous()", "x.mT", "x.view_as(x.reshape(60))",
]


@torch_mark
@pytest.mark.parametrize("expr", VIEWS)
def test_views_match_torch(expr):
    a = _rng().standard_normal((3, 4, 5)).astype(np.float32)
    _compare(lambda x: eval(expr) * 1.5, a)


def test_reshape_invalid_raises():
    with pytest.raises(RuntimeError, match=r"shape '\[5, -1\]' is invalid for input of size 12"):
        gc.ones(3, 4).reshape(5, -1)
    with pytest.raises(RuntimeError, match=r"shape '\[5, 2\]' is invalid for input of size 12"):
        gc.ones(3, 4).view(5, 2)


# ---- reductions --------------------------------------------------------------------------------------

REDUCTIONS = [
    "x.sum()", "x.sum(0)", "x.sum((0, 2))", "x.sum(dim=(-1, 0), keepdim=True)", "x.mean()", "x.mean(1)",
    "x.mean((0, 1), keepdim=True)", "x.var()", "x.var(1)", "x.var((0, 2), keepdim=True)", "x.var(0, unbiased=False)",
    "x.std()", "x.std(-1, keepdim=True)", "x.amax()", "x.amax((0, 2))", "x.amin(1, keepdim=True)", "x.max()",
    "x.min()", "x.prod(1)", "x.logsumexp(1)", "x.logsumexp((0, 2), keepdim=True)", "x.softmax(-1)",
    "x.log_softmax(0)", "x.sum(-1, keepdim=True)",
]


@torch_mark
@pytest.mark.parametrize("expr", REDUCTIONS)
def test_reductions_match_torch(expr):
    a = _rng().standard_normal((3, 4, 5))
    _compare(lambda x: eval(expr), a, rtol=1e-7, atol=1e-9)


def test_reductions_analytic():
    x = gc.arange(6.0).reshape(2, 3)
    assert x.sum().item() == 15
    assert x.sum((0, 1)).item() == 15
    assert x.sum(0).tolist() == [3.0, 5.0, 7.0]
    assert x.sum(1, keepdim=True).shape == (2, 1)
    assert x.mean(-1).tolist() == [1.0, 4.0]
    assert x.var(1).tolist() == [1.0, 1.0]
    assert x.var(1, unbiased=False).tolist() == pytest.approx([2 / 3, 2 / 3])
    assert gc.tensor([1, 2, 3]).sum().dtype == gc.int64
    assert gc.tensor([True, True, False]).sum().item() == 2
    with pytest.raises(IndexError, match="Dimension out of range"):
        x.sum(2)


def test_max_dim_returns_values_and_indices():
    x = gc.tensor([[1.0, 5.0, 3.0], [7.0, 2.0, 0.0]], requires_grad=True)
    res = x.max(1)
    values, indices = res
    assert res.values is values and res.indices is indices
    assert values.tolist() == [5.0, 7.0] and indices.tolist() == [1, 0]
    assert indices.dtype == gc.int64 and not indices.requires_grad
    assert values.grad_fn is not None
    values.sum().backward()
    assert x.grad.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    v, i = gc.min(x, dim=0, keepdim=True)
    assert v.tolist() == [[1.0, 2.0, 0.0]] and i.tolist() == [[0, 1, 1]]
    assert gc.max(x).item() == 7.0
    assert x.argmax().item() == 3 and x.argmax(1).tolist() == [1, 0]


@torch_mark
@pytest.mark.parametrize("dim,keepdim", [(0, False), (1, True), (-1, False), (2, True)])
def test_max_min_dim_match_torch(dim, keepdim):
    torch = _torch()
    a = _rng().standard_normal((3, 4, 5))
    for name in ("max", "min"):
        gx, tx = gc.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
        gv, gi = getattr(gx, name)(dim, keepdim)
        tv, ti = getattr(tx, name)(dim, keepdim)
        np.testing.assert_array_equal(gi.numpy(), ti.numpy())
        np.testing.assert_allclose(_np(gv), _np(tv))
        (gv * gv).sum().backward()
        (tv * tv).sum().backward()
        np.testing.assert_allclose(gx.grad.numpy(), tx.grad.numpy())


# ---- elementwise math and broadcasting gradients --------------------------------------------------------

BINARY = ["a + b", "a - b", "a * b", "a / b", "gc.maximum(a, b)", "gc.minimum(a, b)", "a ** 2 * b",
          "(a * b).exp() - b.tanh()", "gc.where(a > b, a, b * 2)", "(a.abs() + 1) ** b"]
SHAPES = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((2, 1, 3), (1, 4, 1)), ((), (3,)), ((3, 1), ())]


@torch_mark
@pytest.mark.parametrize("expr", BINARY)
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_broadcasting_gradients_match_torch(expr, shapes):
    torch = _torch()
    rng = _rng(5)
    a, b = (rng.standard_normal(s) for s in shapes)
    _compare(lambda a, b: eval(expr, {"gc": gc, "a": a, "b": b}), a, b, rtol=1e-7, atol=1e-9,
             torch_fn=lambda a, b: eval(expr, {"gc": torch, "a": a, "b": b}))


UNARY = ["x.exp()", "x.abs()", "-x", "x.tanh()", "x.sigmoid()", "x.relu()", "x.sin()", "x.cos()",
         "x.abs().log()", "x.abs().sqrt()", "x.abs().rsqrt()", "x.clamp(-0.5, 0.5)", "x.clamp(min=0.1)",
         "x.clamp(max=-0.2)", "gc.pow(x, 3)", "gc.pow(2, x)", "2 ** x", "1 / x", "3 - x", "x.square()",
         "x.sign() * x", "x.softmax(0)", "gc.stack([x, x * 2], 1)", "gc.cat([x, x * 2], 0)"]


@torch_mark
@pytest.mark.parametrize("expr", UNARY)
def test_unary_math_matches_torch(expr):
    torch = _torch()
    a = _rng(7).standard_normal((3, 4))
    _compare(lambda x: eval(expr, {"gc": gc, "x": x}), a, rtol=1e-7, atol=1e-9,
             torch_fn=lambda x: eval(expr, {"gc": torch, "x": x}))


def test_comparisons_have_no_grad_and_give_bool():
    x = gc.tensor([1.0, 2.0, 3.0], requires_grad=True)
    for r in (x > 2, x >= 2, x < 2, x <= 2, x == 2, x != 2):
        assert r.dtype == gc.bool and not r.requires_grad
    assert (x > 2).tolist() == [False, False, True]


# ---- matmul --------------------------------------------------------------------------------------------

MATMUL = [((4,), (4,)), ((4,), (4, 3)), ((3, 4), (4,)), ((2, 3, 4), (4,)), ((4,), (2, 4, 3)), ((3, 4), (4, 5)),
          ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((3, 4), (2, 4, 5))]


@torch_mark
@pytest.mark.parametrize("sa,sb", MATMUL, ids=str)
def test_matmul_matches_torch(sa, sb):
    rng = _rng(11)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    _compare(lambda a, b: a @ b, a, b, rtol=1e-7, atol=1e-9)


def test_matmul_vector_cases_analytic():
    v = gc.tensor([1.0, 2.0])
    m = gc.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert (v @ v).shape == () and (v @ v).item() == 5.0
    assert (v @ m).tolist() == [7.0, 10.0]
    assert (m @ v).tolist() == [5.0, 11.0]
    assert gc.matmul(m, m).tolist() == [[7.0, 10.0], [15.0, 22.0]]
    with pytest.raises(RuntimeError, match="both arguments to matmul need to be at least 1D"):
        gc.tensor(1.0) @ v


# ---- dtypes --------------------------------------------------------------------------------------------

def test_dtype_rules():
    assert gc.tensor([1.0, 2.0]).dtype == gc.float32
    assert gc.tensor(1.5).dtype == gc.float32
    assert gc.tensor([1, 2]).dtype == gc.int64
    assert gc.tensor([True]).dtype == gc.bool
    assert gc.tensor(np.array([1.0])).dtype == gc.float64  # numpy float64 stays float64, as in torch
    assert gc.tensor(np.array([1.0], dtype=np.float32)).dtype == gc.float32
    assert gc.tensor(np.float64(2.5)).dtype == gc.float64 and gc.tensor(np.int32(2)).dtype == gc.int32
    assert gc.tensor([1, 2], dtype=gc.float64).dtype == gc.float64
    assert gc.tensor([1.0], dtype=gc.float64).dtype == gc.float64
    f32, f64, i64 = gc.ones(2), gc.ones(2, dtype=gc.float64), gc.tensor([1, 2])
    assert (f32 * 2.5).dtype == gc.float32  # a Python scalar never widens float32
    assert (f32 * gc.tensor(2.5, dtype=gc.float64)).dtype == gc.float32  # nor does a 0-d tensor of its category
    assert (gc.tensor(2.5) * f64).dtype == gc.float64
    assert (f32 + 1).dtype == gc.float32
    assert (f64 * 2.5).dtype == gc.float64
    assert (f32 * f64).dtype == gc.float64
    assert (i64 + 1).dtype == gc.int64
    assert (i64 * 2.5).dtype == gc.float32
    assert (i64 / 2).dtype == gc.float32 and (i64 / 2).tolist() == [0.5, 1.0]
    assert (i64 / i64).dtype == gc.float32
    assert (i64 + f32).dtype == gc.float32
    assert (i64 + f64).dtype == gc.float64
    assert (gc.tensor([True, False]) + 1).dtype == gc.int64
    assert (f32 > 1).dtype == gc.bool
    assert gc.float is gc.float32 and gc.double is gc.float64 and gc.long is gc.int64
    assert f32.double().dtype == gc.float64 and f64.float().dtype == gc.float32
    assert f32.long().dtype == gc.int64 and f32.int().dtype == gc.int32 and f32.bool().dtype == gc.bool
    assert f32.to(gc.float64).dtype == gc.float64 and f32.to(f64).dtype == gc.float64


@torch_mark
@pytest.mark.parametrize("expr", [
    "f32 * 2.5", "f32 + 1", "f64 * 2.5", "f32 * f64", "i64 + 1", "i64 * 2.5", "i64 / 2", "i64 / i64", "i64 + f32",
    "i32 + i64", "i32 * 2", "i32 / 2", "b + 1", "b + b", "b * 1.5", "f32.sum()", "i64.sum()", "i32.sum()", "b.sum()",
    "f64.mean()", "f32 ** 2", "i64 ** 2", "2 ** i64", "f32 > i64", "-i64",
    "i64.abs()", "i64.max()", "gc.where(b, f32, f64)", "gc.cat([f32, f64])", "gc.cat([i64, f32])", "1 - i64",
    "i64.clamp(0, 1)", "f32.clamp(0, 1)", "f32 * m.tensor(2.0, dtype=m.float64)", "i32 * m.tensor(2)",
    "m.tensor(2.0) + f64", "m.tensor(2.0) + m.tensor(2.0, dtype=m.float64)", "b + m.tensor(2)", "i64 * m.tensor(2.5)",
    "f32 * m.tensor(True)", "i32 + 7",
])
def test_dtype_promotion_matches_torch(expr):
    torch = _torch()
    res = []
    for mod in (gc, torch):
        env = {"gc": mod, "m": mod, "f32": mod.tensor([1.0, 2.0]), "f64": mod.tensor([1.0, 2.0], dtype=mod.float64),
               "i64": mod.tensor([1, 2]), "i32": mod.tensor([1, 2], dtype=mod.int32), "b": mod.tensor([True, False])}
        res.append(eval(expr, env))
    g, t = res
    assert g.dtype.name == str(t.dtype).removeprefix("torch."), expr
    np.testing.assert_allclose(g.numpy(), t.numpy())


@torch_mark
@pytest.mark.parametrize("expr", ["i64.exp()", "i32.sqrt()", "b.sigmoid()", "m.log(i64)", "i64.tanh()", "i32.rsqrt()",
                                  "m.sin(b)", "i64.cos()", "f64.exp()"])
def test_float_only_ops_compute_integers_in_the_default_float_dtype(expr):
    torch = _torch()
    res = []
    for mod in (gc, torch):
        env = {"m": mod, "f64": mod.tensor([1.0, 2.0], dtype=mod.float64), "i64": mod.tensor([1, 2]),
               "i32": mod.tensor([1, 2], dtype=mod.int32), "b": mod.tensor([True, False])}
        res.append(eval(expr, env))
    g, t = res
    assert g.dtype.name == str(t.dtype).removeprefix("torch."), expr
    np.testing.assert_allclose(g.numpy(), t.numpy(), rtol=2 ** -22)  # float32: libm and torch may differ by an ulp


# ---- factories ---------------------------------------------------------------------------------------

def test_factories():
    assert gc.zeros(2, 3).tolist() == [[0.0] * 3] * 2 and gc.zeros(2, 3).dtype == gc.float32
    assert gc.zeros((2, 3)).shape == (2, 3) and gc.zeros([2]).shape == (2,)
    assert gc.ones(2, dtype=gc.int64).tolist() == [1, 1]
    assert gc.full((2, 2), 7).dtype == gc.int64 and gc.full((2, 2), 7.0).dtype == gc.float32
    assert gc.full((2,), 7.0).tolist() == [7.0, 7.0]
    assert gc.full((2,), True).dtype == gc.bool
    assert gc.arange(5).tolist() == [0, 1, 2, 3, 4] and gc.arange(5).dtype == gc.int64
    assert gc.arange(1, 4).tolist() == [1, 2, 3]
    assert gc.arange(0, 10, 3).tolist() == [0, 3, 6, 9]
    assert gc.arange(0.0, 1.0, 0.25).tolist() == [0.0, 0.25, 0.5, 0.75]
    assert gc.arange(0.0, 1.0, 0.25).dtype == gc.float32
    assert gc.arange(3, dtype=gc.float64).dtype == gc.float64
    assert gc.arange(5, 1, -2).tolist() == [5, 3]
    r = gc.rand(100, 10)
    assert r.dtype == gc.float32 and r.shape == (100, 10)
    assert 0 <= float(r.amin()) and float(r.amax()) < 1
    n = gc.randn(1000)
    assert abs(float(n.mean())) < 0.2 and 0.8 < float(n.std()) < 1.2
    assert gc.randn(2, 3, dtype=gc.float64).dtype == gc.float64
    t = gc.ones(2, 3, dtype=gc.float64)
    for like in (gc.zeros_like, gc.ones_like, gc.rand_like, gc.randn_like):
        o = like(t)
        assert o.shape == (2, 3) and o.dtype == gc.float64
    assert gc.zeros_like(t).tolist() == [[0.0] * 3] * 2
    assert gc.ones_like(t, dtype=gc.int64).dtype == gc.int64
    assert gc.zeros(2, requires_grad=True).requires_grad and gc.zeros(2, requires_grad=True).is_leaf
    assert gc.randn_like(t, requires_grad=True).requires_grad
    assert gc.zeros(0).shape == (0,) and gc.zeros(()).shape == ()


def test_manual_seed_reproducibility():
    gc.manual_seed(123)
    a, b = gc.rand(4), gc.randn(2, 2)
    gc.manual_seed(123)
    c, d = gc.rand(4), gc.randn(2, 2)
    assert a.tolist() == c.tolist() and b.tolist() == d.tolist()
    e = gc.rand(4)
    assert e.tolist() != a.tolist()
    gc.manual_seed(124)
    assert gc.rand(4).tolist() != a.tolist()


@torch_mark
@pytest.mark.parametrize("expr", [
    "m.zeros(2, 3)", "m.ones(4)", "m.full((2, 2), 7)", "m.full((2,), 1.5)", "m.arange(5)", "m.arange(1, 7, 2)",
    "m.arange(0.0, 1.0, 0.3)", "m.arange(2.5)", "m.zeros_like(m.tensor([1, 2]))", "m.ones_like(m.tensor([1.0]))",
    "m.full((2,), False)", "m.arange(-3, 3)", "m.arange(10, 0, -3)",
])
def test_factories_match_torch(expr):
    torch = _torch()
    g, t = eval(expr, {"m": gc}), eval(expr, {"m": torch})
    assert g.dtype.name == str(t.dtype).removeprefix("torch.")
    np.testing.assert_allclose(g.numpy(), t.numpy(), rtol=1e-6)


# ---- repr, item, tolist, numpy -------------------------------------------------------------------------

@torch_mark
@pytest.mark.parametrize("expr", [
    "m.tensor([1.0, 2.5, -3.0])", "m.tensor([[1.0, 2.0], [3.0, 4.0]])", "m.tensor(12.)", "m.tensor([True, False])",
    "m.tensor([1, 2, 3])", "m.tensor([[1, -20], [300, 4]])", "m.tensor([1.5, 2.0], dtype=m.float64)",
    "m.tensor([1, 2], dtype=m.int32)", "m.tensor([0.1, 0.25])", "m.tensor([1e-3, 2.0])", "m.tensor(3)",
    "m.tensor(True)", "m.zeros(2, 3)", "m.tensor([[[1.0]]])", "m.tensor([2.0, 3.0], requires_grad=True)",
    "m.tensor([2.0, 3.0], requires_grad=True) * 2", "m.tensor([-1.5, 0.0])",
    "m.tensor([1.0, 2.0], dtype=m.float64, requires_grad=True)", "m.arange(2000.).reshape(2, 1000) / 7",
    "m.arange(1001)", "m.tensor([float('nan'), 1.5, float('inf')])", "m.tensor([float('nan'), 1.0, -float('inf')])",
    "m.zeros(0)", "m.zeros(0, 3)", "m.zeros(0, dtype=m.int64)", "m.arange(30.).reshape(2, 3, 5) / 4",
    "m.tensor([1e10, 1.0])", "m.tensor([123456.789, 1.0])", "m.arange(40.) / 3", "m.arange(-20, 20)",
    "m.arange(24.).reshape(2, 3, 4)", "m.ones(1200, 2, dtype=m.float64)", "m.tensor([[True], [False]])",
    "m.arange(100.).reshape(10, 10) * 1.5", "m.tensor([1e-5, 1.0], requires_grad=True) * 3",
])
def test_repr_matches_torch(expr):
    torch = _torch()
    g, t = eval(expr, {"m": gc}), eval(expr, {"m": torch})
    expect = repr(t).replace("torch.", "graphc.")
    assert repr(g) == expect


def test_repr_analytic():
    assert repr(gc.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert repr(gc.tensor([1, 2])) == "tensor([1, 2])"
    assert repr(gc.tensor([True, False])) == "tensor([ True, False])"
    assert repr(gc.tensor([1.0], dtype=gc.float64)) == "tensor([1.], dtype=graphc.float64)"
    assert repr(gc.tensor([2.0], requires_grad=True)) == "tensor([2.], requires_grad=True)"
    assert str(gc.float64) == "graphc.float64" and repr(gc.float32) == "graphc.float32"


def test_item_tolist_numpy():
    t = gc.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert t.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert t[1, 0].item() == 3.0 and isinstance(t[1, 0].item(), float)
    assert isinstance(gc.tensor([7]).item(), int) and gc.tensor([7]).item() == 7
    assert isinstance(gc.tensor(True).item(), bool)
    assert gc.tensor(2.5).tolist() == 2.5
    with pytest.raises(RuntimeError, match="a Tensor with 4 elements cannot be converted to Scalar"):
        t.item()
    a = t.numpy()
    assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == (2, 2)
    a[0, 0] = 10.0  # numpy() shares memory, like torch
    assert t[0, 0].item() == 10.0
    r = gc.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="Can't call numpy\\(\\) on Tensor that requires grad"):
        r.numpy()
    assert r.detach().numpy().tolist() == [1.0]
    assert float(gc.tensor(1.5)) == 1.5 and int(gc.tensor(3)) == 3 and bool(gc.tensor([1.0]))
    with pytest.raises(RuntimeError, match="Boolean value of Tensor with more than one value is ambiguous"):
        bool(t)
    assert gc.from_numpy(a).numpy() is a


def test_shape_attributes():
    t = gc.zeros(2, 3, 4)
    assert t.shape == (2, 3, 4) and t.size() == (2, 3, 4) and t.size(1) == 3 and t.size(-1) == 4
    assert t.ndim == 3 and t.dim() == 3 and t.numel() == 24 and len(t) == 2
    assert [r.shape for r in t] == [(3, 4), (3, 4)]
