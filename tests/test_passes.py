"""Every pass is Graph -> Graph and keeps meaning: random inputs through the graph before and
after give the same outputs. Graphs come from the random-program generator (forward and joint)."""
from __future__ import annotations

import numpy as np
import pytest
from progen import make_program

import graphc as gc
from graphc.backends.numpy.codegen import generate
from graphc.ir.serialize import graph_from_json, graph_to_json
from graphc.passes.autodiff import differentiate
from graphc.passes.partition import partition
from graphc.passes.simplify import algebraic, cse, dce, fold_constants
from graphc.trace import trace

PASSES = {"dce": dce, "cse": cse, "fold_constants": fold_constants, "algebraic": algebraic}


def _graphs(seed):
    prog = make_program(seed)
    rng = np.random.default_rng(seed)
    xs = [gc.tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True) for s in prog.shapes]
    g = trace(prog.function(), tuple(xs), {}, name=f"prog{seed}", names={}).graph.verify()
    joint = differentiate(g, list(range(len(g.inputs)))).verify()
    return g, joint


def _run(g, rng):
    arrays = [rng.standard_normal(v.type.shape).astype(v.type.dtype.np) for v in g.inputs]
    return [np.asarray(o) for o in generate(g)[1](*arrays)]


@pytest.mark.parametrize("name", sorted(PASSES))
@pytest.mark.parametrize("seed", range(40))
def test_pass_preserves_outputs(name, seed):
    for g in _graphs(seed):
        after = PASSES[name](g).verify()
        assert [v.type for v in after.outputs] == [v.type for v in g.outputs]
        before_out = _run(g, np.random.default_rng(seed))
        after_out = _run(after, np.random.default_rng(seed))
        for a, b in zip(before_out, after_out):
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("seed", range(20))
def test_partition_recombines_to_the_joint_graph(seed, recompute):
    g, joint = _graphs(seed)
    p = partition(joint, len(g.inputs), len(g.outputs), recompute=recompute)
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(v.type.shape).astype(v.type.dtype.np) for v in joint.inputs]
    whole = generate(joint)[1](*arrays)
    fwd = generate(p.forward)[1](*arrays[: len(g.inputs)])
    bwd = generate(p.backward)[1](*fwd[len(g.outputs):], *arrays[len(g.inputs):])
    for a, b in zip(whole, list(fwd[: len(g.outputs)]) + list(bwd)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-6)


def test_json_round_trip_of_a_joint_graph():
    _, joint = _graphs(3)
    again = graph_from_json(graph_to_json(joint)).verify()
    assert str(again) == str(joint)


def test_simplifications_fire():
    def f(x):
        y = (x * 1 + 0).reshape(6).reshape(2, 3)
        return y.transpose(0, 1).transpose(0, 1) * (gc.ones(2, 3) * 2) + (x * 1 + 0)

    g = trace(f, (gc.ones(2, 3),), {}, name="f", names={}).graph
    out = dce(cse(algebraic(fold_constants(g))))
    ops = [n.op for n in out.nodes]
    assert "permute" not in ops and ops.count("reshape") == 0 and ops.count("add") == 1


def test_transpose_of_a_matmul_becomes_a_matmul_of_transposes():
    """(a @ b).T = b.T @ a.T, where nothing else reads a @ b: nn.Linear's weight gradient (x.T @ g).T becomes g.T @ x,
    a contiguous result in the weight's layout. A product read elsewhere too stays one product."""
    rng = np.random.default_rng(0)
    x, gr = rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal((5, 4)).astype(np.float32)

    def f(x, g):
        return (x.transpose(0, 1) @ g).transpose(0, 1)

    def shared(x, g):
        m = x.transpose(0, 1) @ g
        return m.transpose(0, 1), m.sum()

    g = trace(f, (gc.tensor(x), gc.tensor(gr)), {}, name="f", names={}).graph
    out = dce(algebraic(g)).verify()
    assert [n.op for n in out.nodes] == ["permute", "matmul"]  # g.T @ x: x's double transpose folded away
    assert out.nodes[1].inputs[1] is out.inputs[0]
    (got,) = generate(out)[1](x, gr)
    assert got.flags.c_contiguous
    np.testing.assert_allclose(got, (x.T @ gr).T, rtol=1e-6)
    g2 = trace(shared, (gc.tensor(x), gc.tensor(gr)), {}, name="shared", names={}).graph
    assert [n.op for n in dce(algebraic(g2)).nodes].count("matmul") == 1


def _saved_bytes(lowered) -> int:
    p = lowered.partition
    return sum(v.type.nbytes for v in p.forward.outputs[len(p.forward.outputs) - p.n_saved:])


def test_recompute_saves_fewer_bytes_and_gives_the_same_gradients():
    from graphc import nn

    def build(recompute):
        gc.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.3),
                              nn.Conv2d(8, 4, 3), nn.BatchNorm2d(4), nn.Tanh())
        return model, gc.compile(model, recompute=recompute)

    x = gc.randn(4, 3, 10, 10)
    grads, outs, saved = [], [], []
    for recompute in (False, True):
        model, f = build(recompute)
        lowered = f.lower(x)
        saved.append(_saved_bytes(lowered))
        ops = {n.op for n in lowered.partition.backward.nodes if n.meta.get("phase") == "recompute"}
        assert bool(ops) == recompute
        assert ops <= {"mul", "add", "sub", "relu", "tanh", "reshape", "expand", "where", "neg", "cast", "div",
                       "permute", "rsqrt", "gt", "ge"}  # cheap elementwise and views: never random, heavy, reducing
        gc.manual_seed(5)  # the same dropout mask in both runs
        y = f(x)
        (y * y).sum().backward()
        outs.append(y.detach().numpy())
        grads.append([p.grad.numpy() for p in model.parameters()])
    assert saved[1] < 0.8 * saved[0]
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-6, atol=1e-6)
    for a, b in zip(grads[0], grads[1]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_variance_is_taken_over_the_graphs_centered_input():
    """BatchNorm's var(x) next to x - mean(x): after the pipeline no var node is left, cse has merged the centering
    with the graph's own, and the numpy result has the bits of the var kernel (eager); a var without that
    subtraction stays one node."""
    from graphc.passes.simplify import DEFAULT_PIPELINE, centered_variance

    rng = np.random.default_rng(0)
    x = gc.tensor(rng.standard_normal((4, 3, 5, 6)).astype(np.float32))

    def bn(x):
        mean = x.mean((0, 2, 3), keepdim=True)
        var = x.var((0, 2, 3), keepdim=True, correction=0)
        return (x - mean) * (var + 1e-5).rsqrt(), x.var((0, 2, 3), correction=1)

    g = trace(bn, (x,), {}, name="bn", names={}).graph
    out = g
    for _, p in DEFAULT_PIPELINE:
        out = p(out).verify()
    ops = [n.op for n in out.nodes]
    assert "var" not in ops and ops.count("mean") == 1 and ops.count("sub") == 1
    want = [np.asarray(v.numpy()) for v in bn(x)]  # eager: the var kernel
    got = generate(out)[1](x.numpy())
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.asarray(a).view(np.uint32), b.view(np.uint32))

    def lone(x):
        return x.var((0, 2, 3), correction=0)

    g2 = trace(lone, (x,), {}, name="lone", names={}).graph
    assert [n.op for n in centered_variance(g2).nodes] == [n.op for n in g2.nodes]


def _pipeline(g, without: str | None = None):
    """g through the default pipeline, leaving out the named pass (the graph without its rewrite, as an oracle)."""
    from graphc.passes.simplify import DEFAULT_PIPELINE

    for name, p in DEFAULT_PIPELINE:
        if name != without:
            g = p(g).verify()
    return g


def _relu_pool_data() -> tuple[np.ndarray, np.ndarray]:
    """Windows of 2x2 with positive, zero, all-negative and tied maxima, -0.0, inf and NaN, and a cotangent."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 8, 6)).astype(np.float32)
    x[0, 0, :2, :2] = [[-1.0, -1.0], [-2.0, -3.0]]  # all negative, tied
    x[0, 0, :2, 2:4] = [[0.0, -1.0], [0.0, 2.0]]
    x[0, 0, :2, 4:6] = [[2.0, 2.0], [1.0, 0.0]]  # a positive tie
    x[0, 1, :2, :2] = [[-0.0, -1.0], [0.0, -2.0]]  # maximum zero, both signs
    x[0, 1, :2, 2:4] = [[np.nan, 1.0], [2.0, 3.0]]
    x[0, 1, :2, 4:6] = [[np.inf, 1.0], [-np.inf, 3.0]]
    x[1, 2, 2:4, 2:4] = [[-np.inf, -np.inf], [-np.inf, -5.0]]
    x[1, 2, 4:6, 2:4] = [[-0.0, -0.0], [-0.0, -0.0]]
    g = rng.standard_normal((2, 3, 4, 3)).astype(np.float32)
    g[0, 0, 0, 0] = np.nan  # a NaN gradient into an all-negative window stays out of the input gradient
    return x, g


def test_max_pool_of_a_relu_pools_first_with_the_same_numbers():
    """maxpool(relu(x)) and its gradient through the pipeline: relu runs on the pooled tensor, and the value and
    the input gradient equal the unrewritten graph's (and torch's when installed), ties, zeros, inf and NaN
    included; a relu also read elsewhere is left alone."""
    from graphc.nn import functional as F  # noqa: N812
    from graphc.passes.simplify import pool_before_relu

    x, g = _relu_pool_data()
    xt = gc.tensor(x, requires_grad=True)

    def f(x):
        return F.max_pool2d(F.relu(x), 2)

    joint = differentiate(trace(f, (xt,), {}, name="f", names={}).graph, [0]).verify()
    runs = {}
    for rewrite in (True, False):
        out = _pipeline(joint, without=None if rewrite else "pool_before_relu")
        runs[rewrite] = [np.asarray(a) for a in generate(out)[1](x, g)]
        if rewrite:
            relu = [n for n in out.nodes if n.op == "relu"]
            assert len(relu) == 1 and relu[0].inputs[0].producer.op == "max_pool2d_with_indices"
            assert all(v.type.shape == g.shape for n in out.nodes if n.op in ("le", "where") for v in n.outputs)
    for a, b in zip(runs[True], runs[False]):
        np.testing.assert_array_equal(a, b)  # NaN where NaN; -0.0 == 0.0
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.max_pool2d(torch.relu(tx), 2)
    ty.backward(torch.tensor(g))
    np.testing.assert_array_equal(runs[True][0], ty.detach().numpy())
    np.testing.assert_array_equal(runs[True][1], tx.grad.numpy())

    fwd = trace(f, (gc.tensor(x),), {}, name="f", names={}).graph.verify()  # inference: max_pool2d, no indices
    after = pool_before_relu(fwd).verify()
    assert [n.op for n in after.nodes][-2:] == ["max_pool2d", "relu"]
    np.testing.assert_array_equal(generate(after)[1](x)[0], runs[True][0])

    def also_read(x):
        r = F.relu(x)
        return F.max_pool2d(r, 2), r.sum()

    def indices_returned(x):
        return F.max_pool2d(F.relu(x), 2, return_indices=True)

    g2 = trace(also_read, (xt,), {}, name="g2", names={}).graph.verify()
    g4 = trace(indices_returned, (xt,), {}, name="g4", names={}).graph.verify()
    # the sum reads the relu (in the joint graph its gradient adds to it); the winners are a result
    for g3 in (g2, differentiate(g2, [0]), g4, differentiate(g4, [0])):
        assert [n.op for n in pool_before_relu(g3).nodes] == [n.op for n in g3.nodes]


@pytest.mark.parametrize("window", [dict(kernel_size=2, stride=2), dict(kernel_size=3, stride=2, padding=1)])
def test_a_bias_gradient_through_max_pooling_sums_the_pooled_gradient(window):
    """conv -> bias -> relu -> max pool: the bias gradient (a sum over N, H, W of the pooling's scattered gradient)
    is taken over the pooled gradient, which has the same terms; the values agree to float32 rounding, with and
    without overlapping windows."""
    from graphc.nn import functional as F  # noqa: N812

    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 10, 12)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    xt, bt = gc.tensor(x, requires_grad=True), gc.tensor(b, requires_grad=True)

    def f(x, b):
        return F.max_pool2d(F.relu(x + b.reshape(1, 3, 1, 1)), **window)

    joint = differentiate(trace(f, (xt, bt), {}, name="f", names={}).graph, [0, 1]).verify()
    g = rng.standard_normal(tuple(v.type.shape for v in joint.inputs)[2]).astype(np.float32)
    runs = {}
    for rewrite in (True, False):
        out = _pipeline(joint, without=None if rewrite else "sum_before_pool_gradient")
        sums = [n for n in out.nodes if n.op == "sum" and n.attrs["axes"] == (0, 2, 3)]
        assert len(sums) == 1
        read = sums[0].inputs[0].producer.op
        assert (read != "max_pool2d_indices_grad") if rewrite else (read == "max_pool2d_indices_grad")
        runs[rewrite] = [np.asarray(a) for a in generate(out)[1](x, b, g)]
    for a, want in zip(runs[True][:2], runs[False][:2]):  # the pooled value and the input gradient: untouched
        np.testing.assert_array_equal(a, want)
    np.testing.assert_allclose(runs[True][2], runs[False][2], rtol=1e-5, atol=1e-5)
    assert not np.array_equal(runs[True][2], np.zeros_like(runs[True][2]))
