"""Random programs over the whole op table agree everywhere: eager vs compiled (numpy) vs compiled (jax),
forward and gradients, and every optimization pass against the graph before it (tests/fuzzgen.py).

CI runs 500 programs (the jax leg on every 25th); GRAPHC_FUZZ=20000 runs more, GRAPHC_FUZZ_START=N starts
at another seed, GRAPHC_FUZZ_JAX_EVERY=K runs the jax leg on every Kth program (0: never). A failure prints
the program shrunk to a minimal repro, as code.
"""
from __future__ import annotations

import os

import fuzzgen as fz
import pytest

N = int(os.environ.get("GRAPHC_FUZZ", "500"))
START = int(os.environ.get("GRAPHC_FUZZ_START", "0"))
JAX_EVERY = int(os.environ.get("GRAPHC_FUZZ_JAX_EVERY", "25"))
CHUNK = 25
CHUNKS = [range(s, min(s + CHUNK, START + N)) for s in range(START, START + N, CHUNK)]
_JAX_MISSING: list[str | None] = []


def _jax_missing() -> str | None:
    if not _JAX_MISSING:
        _JAX_MISSING.append(fz.jax_available())
    return _JAX_MISSING[0]


def _legs(seed: int) -> list[str]:
    legs = ["numpy", "passes"]
    if JAX_EVERY and seed % JAX_EVERY == 0 and _jax_missing() is None:
        legs.append("jax")
    return legs


@pytest.mark.parametrize("seeds", CHUNKS, ids=[f"{c.start}-{c.stop - 1}" for c in CHUNKS])
def test_random_programs_agree_everywhere(seeds):
    report = fz.fuzz(seeds, _legs)
    assert report.programs == len(seeds)
    assert not report.failures, "\n\n".join(report.failures)


def test_jax_leg_runs():
    """Visible as a skip (with the reason) when the jax leg of the fuzzer cannot run here."""
    why = _jax_missing()
    if why:
        pytest.skip(f"jax leg of the fuzzer skipped: {why}")
    assert fz.failing(fz.make_program(0), "jax") is None


def test_programs_cover_the_whole_op_table():
    from graphc.ops import OPS

    used: set[str] = set()
    for seed in range(150):
        used |= fz.ops_used(fz.make_program(seed))
    assert set(OPS) - used == set(), "ops no fuzz program reaches"


def test_programs_are_deterministic_and_valid():
    a, b = fz.make_program(123), fz.make_program(123)
    assert a.source() == b.source() and a.inputs == b.inputs
    assert fz._tame(a)


def _broken_algebraic(g):
    """A planted bug: a 'simplification' that turns every subtraction into an addition."""
    from graphc.ir.rewrite import rewrite

    def visit(node, ins, new):
        if node.op != "sub":
            return None
        return new.add_node("add", ins, node.attrs, [v.type for v in node.outputs], node.meta).outputs

    return rewrite(g, visit)


def test_a_planted_pass_bug_is_found_and_shrunk(monkeypatch):
    import importlib

    gcc = importlib.import_module("graphc.compile")  # (gc.compile is the function)

    monkeypatch.setattr(gcc, "DEFAULT_PIPELINE", [("broken", _broken_algebraic)] + list(gcc.DEFAULT_PIPELINE))
    seed = next(s for s in range(200) if " - " in fz.make_program(s).source())
    prog = fz.make_program(seed)
    assert fz.failing(prog, "numpy") and fz.failing(prog, "passes")
    small, why = fz.shrink(prog, "passes")
    assert "pass broken" in why
    assert small.nodes() <= 2, small.source()
    env: dict = {}
    exec(compile(small.repro(), "<repro>", "exec"), env)  # noqa: S102  (the printed repro runs)
    report = fz.fuzz([seed], lambda s: ["numpy"])
    assert len(report.failures) == 1 and "minimal repro" in report.failures[0]
    assert "def prog(" in report.failures[0]
