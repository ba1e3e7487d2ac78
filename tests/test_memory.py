"""Memory planning (graphc/passes/memory.py) and the generated code that follows it: in-place execution
never touches a graph input, a live value, a view's source or a shared constant, outputs equal the
unplanned code's, and Lowered.memory_analysis() reports the planned peak."""
from __future__ import annotations

import numpy as np
import pytest
from progen import make_program
from steps import resnet18_seed_step

import graphc as gc
from graphc.backends.numpy.codegen import generate, hoistable
from graphc.passes.autodiff import differentiate
from graphc.passes.fusion import fuse
from graphc.passes.memory import MIN_INPLACE_BYTES, plan_memory, storages
from graphc.trace import trace


def _joint(seed):
    prog = make_program(seed, n_steps=8)
    rng = np.random.default_rng(seed)
    xs = [gc.tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True) for s in prog.shapes]
    g = trace(prog.function(), tuple(xs), {}, name=f"prog{seed}", names={}).graph.verify()
    return fuse(differentiate(g, list(range(len(g.inputs)))).verify())


def _arrays(g, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(v.type.shape).astype(v.type.dtype.np) for v in g.inputs]


@pytest.mark.parametrize("seed", range(60))
def test_planned_code_matches_unplanned_and_leaves_inputs_alone(seed):
    g = _joint(seed)
    arrays = _arrays(g, seed)
    copies = [a.copy() for a in arrays]
    plain = generate(g, plan=False)[1](*[a.copy() for a in arrays])
    plan = plan_memory(g, min_bytes=1)  # these arrays are tiny: plan every one of them
    planned = generate(g, plan=plan)[1](*arrays)
    for a, c in zip(arrays, copies):
        np.testing.assert_array_equal(a, c)  # no graph input was written
    for a, b in zip(plain, planned):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)
    assert plan.peak_bytes <= plan.unplanned_peak_bytes


def _reuse_pairs(g, plan):
    return {(o.name, v.name) for n in g.nodes for o in n.outputs if id(o) in plan.out for v in [plan.out[id(o)]]}


def test_a_dying_input_is_reused_in_place():
    @gc.compile
    def f(x):
        return (((x * 2) + 1).relu() * 3).sum()

    g = f.lower(gc.randn(64, 64)).graph
    plan = plan_memory(g)
    assert _reuse_pairs(g, plan) == {("add", "mul"), ("relu", "add"), ("mul_1", "relu")}
    src = f.lower(gc.randn(64, 64)).compile().source
    assert "out=mul)" in src and "out=add)" in src


def test_values_read_later_or_through_a_view_are_not_overwritten():
    @gc.compile
    def f(x):
        y = x * 2  # y is read again by the last line: not reusable by z
        v = y.reshape(-1)  # a view of y, read after z
        z = y + 1
        return (z * 3).sum() + v.sum() + y.sum()

    g = f.lower(gc.randn(64, 64)).graph
    plan = plan_memory(g)
    assert all(v.name != "mul" for _, v in [(o, plan.out[id(o)]) for n in g.nodes for o in n.outputs
                                            if id(o) in plan.out])
    x = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    out = f(gc.tensor(x)).item()
    want = float(((x * 2 + 1) * 3).sum() + 2 * (x * 2).sum())
    assert abs(out - want) < 1e-3 * max(1.0, abs(want))


def test_outputs_and_inputs_are_never_targets():
    @gc.compile
    def f(x, w):
        h = x * w  # an output: must survive the call
        return h, (h + 1).exp()

    g = f.lower(gc.randn(64, 64), gc.randn(64, 64)).graph
    plan = plan_memory(g)
    ext = {id(v) for v in g.inputs} | {id(v) for v in g.outputs}
    assert not any(id(v) in ext for v in plan.out.values())
    x, w = gc.randn(64, 64), gc.randn(64, 64)
    xs, ws = x.numpy().copy(), w.numpy().copy()
    h, e = f(x, w)
    np.testing.assert_array_equal(x.numpy(), xs)
    np.testing.assert_array_equal(w.numpy(), ws)
    np.testing.assert_allclose(h.numpy(), xs * ws, rtol=1e-6)
    np.testing.assert_allclose(e.numpy(), np.exp(xs * ws + 1), rtol=1e-5)


def test_saved_activations_of_a_compiled_backward_are_kept():
    """The forward graph's saved values are its outputs, so the plan never reuses them; the compiled
    backward then sees the right activations."""
    w = gc.randn(64, 64, requires_grad=True)

    @gc.compile
    def f(x):
        h = (x @ w).relu()
        return (h * h + 1).sum()

    x = gc.randn(32, 64)
    f(x).backward()
    wn, xn = w.detach().numpy(), x.numpy()
    h = np.maximum(xn @ wn, 0)
    np.testing.assert_allclose(w.grad.numpy(), xn.T @ (2 * h * (h > 0)), rtol=1e-4, atol=1e-3)


def test_constants_are_built_once_and_read_only():
    @gc.compile
    def f(x):
        return (x * 0.5 + 2.0).sum()

    low = f.lower(gc.randn(64, 64))
    src = low.compile().source
    assert src.startswith("full = const(k.full(")
    assert len(hoistable(low.graph)) == 2
    assert not any(v.producer is not None and v.producer.op == "full" for v in plan_memory(low.graph).out.values())
    assert f(gc.ones(64, 64)).item() == pytest.approx(64 * 64 * 2.5)
    assert f(gc.ones(64, 64)).item() == pytest.approx(64 * 64 * 2.5)  # a second call sees the same constants
    fn = low.compile()._fn
    env = getattr(fn, "__wrapped__", fn).__globals__
    with pytest.raises(ValueError, match="read-only"):
        env["full"][...] = 1


def test_a_constant_that_is_an_output_stays_writable():
    f = gc.compile(lambda x: (x.sum(), gc.zeros(3)))
    _, z = f(gc.randn(4))
    z.add_(1)
    np.testing.assert_array_equal(f(gc.randn(4))[1].numpy(), np.zeros(3, np.float32))


def test_storages_follow_views():
    @gc.compile
    def f(x):
        y = x * 2
        return y.reshape(-1).sum() + y.transpose(0, 1).sum()

    g = f.lower(gc.randn(8, 8)).graph
    owner = storages(g)
    y = next(n.outputs[0] for n in g.nodes if n.op == "mul")
    views = [n.outputs[0] for n in g.nodes if n.op in ("reshape", "permute") and n.inputs[0] is y]
    assert views and all(owner[id(v)] == id(y) for v in views)


def test_memory_analysis_of_a_training_step():
    step, model = resnet18_seed_step()

    x, y = gc.rand(4, 3, 32, 32), gc.rand(4, 10)
    n_params = len(list(model.parameters()))
    params = sum(p.numel() for p in model.parameters()) * 4
    first = step.lower(x, y).memory_analysis()  # creates the momentum buffers (clones of the gradients)
    assert first["argument_bytes"] >= params
    assert first["peak_bytes"] == first["argument_bytes"] + first["temp_peak_bytes"]
    # the gradients are new arrays; the new weights go into the old ones (donated)
    assert params <= first["temp_peak_bytes"] < 2 * params
    assert first["donated_inputs"] == n_params
    assert first["in_place_nodes"] > 50 and first["bytes_reused"] > 0
    assert first["peak_bytes"] <= first["unplanned_peak_bytes"]
    step(x, y)
    later = step.lower(x, y).memory_analysis()  # momentum buffers are inputs now, and donated too
    assert later["argument_bytes"] >= 2 * params
    assert later["donated_inputs"] == 2 * n_params
    # every convolution's and the fc's weight gradient is written into the old .grad's buffer: those bytes are not
    # new (the BatchNorm and bias gradients are sums, views of a reduction's result, and stay fresh arrays)
    lent = [p for p in model.parameters() if p.ndim >= 2]
    assert later["grad_buffers"] == len(lent) == 21 and first["grad_buffers"] == 0
    assert later["temp_peak_bytes"] <= first["temp_peak_bytes"] - sum(p.numel() for p in lent) * 4 * 3 // 4
    assert later["bytes_reused"] >= 2 * params and later["peak_bytes"] < later["unplanned_peak_bytes"]


def test_memory_analysis_of_a_partitioned_graph():
    w = gc.randn(64, 64, requires_grad=True)
    f = gc.compile(lambda x: (x @ w).relu().sum())
    ma = f.lower(gc.randn(32, 64)).memory_analysis()
    assert set(ma["forward"]) == set(ma["backward"]) >= {"peak_bytes", "argument_bytes", "in_place_nodes"}
    assert ma["peak_bytes"] == max(ma["forward"]["peak_bytes"], ma["backward"]["peak_bytes"])


def test_small_buffers_are_left_to_numpy():
    @gc.compile
    def f(x):
        return ((x * 2) + 1).sum()

    assert not plan_memory(f.lower(gc.randn(4, 4)).graph).out
    assert 4 * 4 * 4 < MIN_INPLACE_BYTES


def test_malloc_tuning_is_once_per_process_and_can_be_turned_off(monkeypatch):
    from graphc.backends import allocator

    monkeypatch.setattr(allocator, "_done", None)
    monkeypatch.setenv("GRAPHC_MALLOC", "off")
    assert allocator.keep_freed_memory() is False
    monkeypatch.setattr(allocator, "_done", True)  # already tuned: never asks libc again
    monkeypatch.delenv("GRAPHC_MALLOC")
    assert allocator.keep_freed_memory() is True
