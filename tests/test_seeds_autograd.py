"""The seed tutorials' autograd scenarios (SPEC.md section 1, seeds 000-003), checked against the
results the tutorials print. Only the import differs from the tutorials' code."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

torch_mark = pytest.mark.torch


# ---- seeds 000-002: Q = 3a^3 - b^2 with an external gradient ------------------------------------------

def test_q_backward_with_external_grad_prints_true_true():
    a = gc.tensor([2., 3.], requires_grad=True)
    b = gc.tensor([6., 4.], requires_grad=True)
    Q = 3*a**3 - b**2
    external_grad = gc.tensor([1., 1.])
    Q.backward(gradient=external_grad)
    assert str(9*a**2 == a.grad) == "tensor([True, True])"
    assert str(-2*b == b.grad) == "tensor([True, True])"
    assert bool((9*a**2 == a.grad).all()) and bool((-2*b == b.grad).all())
    assert a.grad.tolist() == [36.0, 81.0]
    assert b.grad.tolist() == [-12.0, -8.0]
    assert a.grad.dtype == gc.float32 and a.dtype == gc.float32


def test_q_sum_backward_is_the_same_as_external_ones():
    """The tutorial: 'Q.sum().backward()' aggregates Q and backpropagates implicitly."""
    a = gc.tensor([2., 3.], requires_grad=True)
    b = gc.tensor([6., 4.], requires_grad=True)
    (3*a**3 - b**2).sum().backward()
    assert a.grad.tolist() == [36.0, 81.0]
    assert b.grad.tolist() == [-12.0, -8.0]


def test_q_repr_has_sub_backward():
    a = gc.tensor([2., 3.], requires_grad=True)
    b = gc.tensor([6., 4.], requires_grad=True)
    assert repr(3*a**3 - b**2) == "tensor([-12.,  65.], grad_fn=<SubBackward0>)"


# ---- seed 001/002: requires_grad propagates from any input ---------------------------------------------

def test_requires_grad_propagation_exclusion_from_dag():
    x = gc.rand(5, 5)
    y = gc.rand(5, 5)
    z = gc.rand((5, 5), requires_grad=True)
    a = x + y
    assert f"Does `a` require gradients?: {a.requires_grad}" == "Does `a` require gradients?: False"
    b = x + z
    assert f"Does `b` require gradients?: {b.requires_grad}" == "Does `b` require gradients?: True"
    assert a.grad_fn is None and a.is_leaf
    assert b.grad_fn is not None and not b.is_leaf


def test_no_grad_excludes_from_dag():
    z = gc.rand((5, 5), requires_grad=True)
    with gc.no_grad():
        c = z * 2
    assert not c.requires_grad and c.grad_fn is None


# ---- seed 003: x = ones(2, 2), y = x + 1, z = 3 y^2, out = z.mean() -------------------------------------

def test_ones_plus_one_mean_prints_like_the_tutorial():
    x = gc.ones(2, 2, requires_grad=True)
    assert repr(x) == "tensor([[1., 1.],\n        [1., 1.]], requires_grad=True)"
    y = x + 1
    assert repr(y) == "tensor([[2., 2.],\n        [2., 2.]], grad_fn=<AddBackward0>)"
    z = 3 * y**2
    assert repr(z) == "tensor([[12., 12.],\n        [12., 12.]], grad_fn=<MulBackward0>)"
    out = z.mean()
    assert repr(out) == "tensor(12., grad_fn=<MeanBackward0>)"
    assert str(out.grad_fn) == "<MeanBackward0>"
    out.backward()
    assert repr(x.grad) == "tensor([[3., 3.],\n        [3., 3.]])"
    assert bool((x.grad == 3).all())
    assert y.grad is None  # non-leaf grads are not kept unless retain_grad()


def test_next_functions_reach_accumulate_grad_at_the_leaf():
    x = gc.ones(2, 2, requires_grad=True)
    out = (3 * (x + 1)**2).mean()
    assert repr(out.grad_fn.next_functions) == "((<MulBackward0>, 0),)"
    mul = out.grad_fn.next_functions[0][0]
    assert mul.name() == "MulBackward0"
    # 3 * y: the Python scalar has no grad_fn
    assert [nf is None for nf, _ in mul.next_functions].count(True) == 1
    pow_fn = next(nf for nf, _ in mul.next_functions if nf is not None)
    assert pow_fn.name() == "PowBackward0"
    assert len(pow_fn.next_functions) == 1  # y ** 2 has no edge for the exponent, as in torch
    add = pow_fn.next_functions[0][0]
    assert add.name() == "AddBackward0"
    acc = add.next_functions[0][0]
    assert isinstance(acc, gc.autograd.AccumulateGrad)
    assert repr(acc) == "<AccumulateGrad>"
    assert acc.variable is x
    assert acc.next_functions == ()
    # the same accumulator object for every use of the leaf
    assert (x * x).grad_fn.next_functions[0][0] is acc


@torch_mark
def test_next_functions_structure_matches_torch():
    torch = pytest.importorskip("torch")

    def walk(fn):
        if fn is None:
            return None
        name = fn.name().split("::")[-1]  # torch names it torch::autograd::AccumulateGrad
        return (name, tuple((walk(nf), i) for nf, i in fn.next_functions))

    x = gc.ones(2, 2, requires_grad=True)
    xt = torch.ones(2, 2, requires_grad=True)
    w = gc.ones(2, 2, requires_grad=True)
    wt = torch.ones(2, 2, requires_grad=True)
    for f in (lambda x, w: (3 * (x + 1)**2).mean(), lambda x, w: (x * w + x).sum(),
              lambda x, w: (x * w).tanh().mean(), lambda x, w: (x - w.exp()).sum()):
        assert walk(f(x, w).grad_fn) == walk(f(xt, wt).grad_fn)


# ---- seed 003: y = x * 2; y.backward(v) for a vector ---------------------------------------------------

def test_vector_jacobian_product_with_int_gradient():
    gc.manual_seed(0)
    x = gc.randn(3, requires_grad=True)
    y = x * 2
    inputs = gc.tensor([1, 2, 3])
    assert inputs.dtype == gc.int64
    y.backward(inputs)
    assert x.grad.tolist() == [2.0, 4.0, 6.0]
    assert x.grad.dtype == gc.float32


def test_vector_output_needs_an_explicit_gradient():
    x = gc.randn(3, requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        y.backward()


@torch_mark
def test_seed_scenarios_match_torch():
    torch = pytest.importorskip("torch")

    xs = np.array([0.3, -1.2, 2.5], dtype=np.float32)
    x, xt = gc.tensor(xs, requires_grad=True), torch.tensor(xs, requires_grad=True)
    for v, mod in ((x, gc), (xt, torch)):
        y = v * 2
        y = y * y.abs().sqrt() + 1
        y.backward(mod.tensor([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-6)
