"""gc.compile against eager execution: random programs, caching, TraceError, lowering."""
from __future__ import annotations

import numpy as np
import pytest
from progen import make_program

import graphc as gc


def _inputs(prog, seed):
    rng = np.random.default_rng(seed)
    return [gc.tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True) for s in prog.shapes]


def _run(fn, xs, cot_seed):
    for x in xs:
        x.grad = None
    loss, out = fn(*xs)
    rng = np.random.default_rng(cot_seed)
    ct = gc.tensor(rng.standard_normal(out.shape).astype(np.float32))
    (loss + (out * ct).sum()).backward()
    return loss.detach().numpy(), out.detach().numpy(), [None if x.grad is None else x.grad.numpy() for x in xs]


@pytest.mark.parametrize("seed", range(220))
def test_random_program_eager_vs_compiled(seed):
    prog = make_program(seed)
    fn = prog.function()
    xs = _inputs(prog, seed)
    eager = _run(fn, xs, seed)
    compiled = _run(gc.compile(fn), xs, seed)
    msg = f"program {seed} disagrees:\n{prog.source}"
    np.testing.assert_allclose(compiled[0], eager[0], rtol=1e-5, atol=1e-5, err_msg=msg)
    np.testing.assert_allclose(compiled[1], eager[1], rtol=1e-5, atol=1e-5, err_msg=msg)
    for ge, gc_ in zip(eager[2], compiled[2]):
        assert (ge is None) == (gc_ is None), msg
        if ge is not None:
            np.testing.assert_allclose(gc_, ge, rtol=1e-4, atol=1e-5, err_msg=msg)


def test_seed_scenario_compiled():
    a = gc.tensor([2.0, 3.0], requires_grad=True)
    b = gc.tensor([6.0, 4.0], requires_grad=True)
    q = gc.compile(lambda a, b: 3 * a**3 - b**2)(a, b)
    q.backward(gradient=gc.tensor([1.0, 1.0]))
    assert bool((9 * a**2 == a.grad).all()) and bool((-2 * b == b.grad).all())


def test_cache_hits_and_recompile_reasons():
    f = gc.compile(lambda x: (x * 2).sum())
    f(gc.ones(3))
    f(gc.ones(3))
    f(gc.ones(4))
    f(gc.ones(4, dtype=gc.float64))
    f(gc.ones(4, dtype=gc.float64, requires_grad=True))
    info = f.cache_info()
    assert info.entries == 4 and info.calls == 5
    assert info.reasons[0] == "x: shape (3,) -> (4,)"
    assert info.reasons[1] == "x: dtype 'float32' -> 'float64'"
    assert info.reasons[2] == "x: requires_grad False -> True"


def test_grad_mode_recompiles():
    f = gc.compile(lambda x: (x * x).sum())
    x = gc.ones(3, requires_grad=True)
    assert f(x).requires_grad
    with gc.no_grad():
        assert not f(x).requires_grad
    assert "(grad mode): enabled True -> False" in f.cache_info().reasons


@pytest.mark.parametrize("what", ["bool", "item", "int", "float", "tolist", "iter"])
def test_data_dependent_control_flow_raises_trace_error(what):
    def f(x):
        if what == "bool":
            if x.sum() > 0:  # line that must be named
                return x
        elif what == "item":
            return x * x.sum().item()
        elif what == "int":
            return x * int(x.sum())
        elif what == "float":
            return x * float(x.sum())
        elif what == "tolist":
            return x.tolist()
        else:
            return sum(x)
        return -x

    with pytest.raises(gc.TraceError) as e:
        gc.compile(f)(gc.ones(3))
    msg = str(e.value)
    assert "test_compile.py:" in msg and "gc.where" in msg


def test_python_scalars_are_static_arguments():
    f = gc.compile(lambda x, scale: x * scale)
    assert f(gc.ones(2), 2.0).tolist() == [2.0, 2.0]
    assert f(gc.ones(2), 3.0).tolist() == [3.0, 3.0]
    assert "scale: value 2.0 -> 3.0" in f.cache_info().reasons[0]


def test_nested_arguments_and_outputs():
    @gc.compile
    def f(pair, opts):
        a, b = pair
        return {"sum": a + b, "scaled": [a * opts["k"], 7]}

    out = f((gc.ones(2), gc.full((2,), 2.0)), {"k": gc.full((2,), 3.0)})
    assert out["sum"].tolist() == [3.0, 3.0]
    assert out["scaled"][0].tolist() == [3.0, 3.0] and out["scaled"][1] == 7


def test_random_ops_draw_new_numbers_each_call():
    f = gc.compile(lambda x: x + gc.rand(3))
    a, b = f(gc.zeros(3)).numpy(), f(gc.zeros(3)).numpy()
    assert not np.allclose(a, b)
    assert f.cache_info().entries == 1


def test_captured_tensor_updates_are_written_back():
    w = gc.ones(3, requires_grad=True)

    @gc.compile
    def step(x):
        loss = (w * x).sum()
        loss.backward()
        with gc.no_grad():
            w.sub_(w.grad * 0.5)
        w.grad = None
        return loss

    for _ in range(3):
        step(gc.full((3,), 2.0))
    np.testing.assert_allclose(w.detach().numpy(), [-2.0, -2.0, -2.0])
    assert w.grad is None and step.cache_info().entries == 1


def test_lowered_text_cost_and_dump(tmp_path):
    def f(x, w):
        return (x @ w).relu().sum()

    low = gc.compile(f).lower(gc.ones(2, 3), gc.ones(3, 4, requires_grad=True))
    text = low.as_text()
    assert "%matmul: f32[2,4] = matmul(%x, %w)" in text and "test_compile.py:" in text and "backward" in text
    cost = low.cost_analysis()
    assert cost["flops"] >= 2 * 2 * 3 * 4 and cost["bytes accessed"] > 0
    for fmt in ("text", "json", "dot"):
        p = tmp_path / f"g.{fmt}"
        low.dump(str(p), format=fmt)
        assert p.read_text()
    exe = low.compile()
    assert "def forward(x, w):" in exe.source and "k.matmul(x, w)" in exe.source


def test_executable_source_frees_buffers():
    f = gc.compile(lambda x: ((x + 1) * 2).exp().sum())
    src = f.lower(gc.ones(3)).compile().source
    assert "del " in src
    assert len([ln for ln in src.splitlines() if " = " in ln]) == 6


def test_results_that_are_none_or_plain_values():
    """None among the results (a training step that returns nothing, say) is a value, not a missing tensor."""
    w = gc.ones(3, requires_grad=True)

    @gc.compile
    def step(x):
        (w * x).sum().backward()

    assert step(gc.ones(3)) is None
    np.testing.assert_array_equal(w.grad.numpy(), [1, 1, 1])
    f = gc.compile(lambda x: (x * 2, None, 3, {"k": None}))
    out = f(gc.ones(2))
    assert out[1:] == (None, 3, {"k": None}) and np.array_equal(out[0].numpy(), [2, 2])
    assert f(gc.ones(2))[1] is None


def test_module_settings_are_part_of_the_cache_key():
    """BatchNorm's momentum, Dropout's p, ... are traced as constants: changing one retraces (no stale graph)."""
    from graphc import nn

    gc.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    twin = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    twin.load_state_dict(model.state_dict())
    f = gc.compile(model)
    x = gc.randn(6, 3)
    for momentum in (0.1, 0.1, 0.5):
        model[1].momentum = twin[1].momentum = momentum
        np.testing.assert_allclose(f(x).detach().numpy(), twin(x).detach().numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(model[1].running_mean.numpy(), twin[1].running_mean.numpy(), rtol=1e-6)
    info = f.cache_info()
    assert info.entries == 2 and any("1 (BatchNorm1d): momentum 0.1 -> 0.5" in r for r in info.reasons)


def test_state_reached_through_a_plain_object():
    """A config or trainer object named by the function: its tensors, modules and optimizers are found one
    attribute deep, so rebinding cfg.w retraces and trainer.opt's momentum carries over (eager is the oracle)."""
    from types import SimpleNamespace

    from graphc import nn, optim

    cfg = SimpleNamespace(w=gc.tensor([1.0, 2.0]))
    f = gc.compile(lambda x: x * cfg.w)
    assert f(gc.ones(2)).tolist() == [1.0, 2.0]
    cfg.w = gc.tensor([5.0, 6.0])
    assert f(gc.ones(2)).tolist() == [5.0, 6.0]
    assert "cfg.w: a different tensor object" in f.cache_info().reasons[0]

    class Trainer:
        def __init__(self):
            gc.manual_seed(0)
            self.model = nn.Linear(3, 2)
            self.opt = optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)

    trainer, twin = Trainer(), Trainer()

    def step(x, t=trainer):  # the compiled step names the global `trainer`; the twin runs eagerly
        t.opt.zero_grad()
        loss = (t.model(x) ** 2).sum()
        loss.backward()
        t.opt.step()
        return loss

    def global_step(x):
        return step(x, trainer)

    compiled = gc.compile(global_step)
    for _ in range(3):
        x = gc.randn(4, 3)
        np.testing.assert_allclose(compiled(x).item(), step(x, twin).item(), rtol=1e-5)
    for p, q in zip(trainer.model.parameters(), twin.model.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_building_a_graph_pauses_the_garbage_collector_and_restores_it():
    """Graph builds run with Python's cyclic GC held off (graphc.context.gc_paused); afterwards, even after a
    build that fails, the collector is as the caller left it."""
    import gc as pygc

    seen = []

    @gc.compile
    def f(x):
        seen.append(pygc.isenabled())
        return x * 2

    @gc.compile
    def bad(x):
        raise ValueError("user error")

    x = gc.tensor(np.ones(3, dtype=np.float32))
    assert pygc.isenabled()
    f(x)
    assert seen == [False] and pygc.isenabled()
    with pytest.raises(ValueError):
        bad(x)
    assert pygc.isenabled()
    pygc.disable()
    try:
        f(gc.tensor(np.ones(4, dtype=np.float32)))  # a new shape: a second build
        assert seen == [False, False] and not pygc.isenabled()
    finally:
        pygc.enable()
