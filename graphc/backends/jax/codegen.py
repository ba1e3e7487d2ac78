"""Lower a Graph to one straight-line Python function over jax arrays, for jax.jit.

The function calls the op lowerings of LOWERINGS, one line per node, named after the
graph's values, with the user's source line as a comment: the same readable shape as the
numpy backend's generated code. Python runs it once, while jax traces it; at run time XLA
executes the compiled computation and no per-op Python dispatch is left.
"""
from __future__ import annotations

import linecache
import math
from collections.abc import Callable
from types import SimpleNamespace

from ...ir.graph import Graph
from ..numpy.codegen import _ident, _literal
from .lowering import LOWERINGS

_counter = 0


def generate(g: Graph, fn_name: str = "run") -> tuple[str, Callable[..., tuple]]:
    """-> (source, function(*input_arrays) -> tuple of output arrays), traceable by jax.jit.

    No `del` lines: under jit, buffer lifetimes are XLA's business (it plans memory for the whole
    computation), so freeing names early would only clutter the source.
    """
    global _counter
    missing = sorted({n.op for n in g.nodes if n.op not in LOWERINGS})
    if missing:
        raise NotImplementedError(f"{g.name}: the jax backend has no lowering for {', '.join(missing)}")
    taken: set[str] = {"L"}
    names = {id(v): _ident(v.name, taken) for v in g.inputs}
    for node in g.nodes:
        for v in node.outputs:
            names[id(v)] = _ident(v.name, taken)

    lines = [f"def {fn_name}({', '.join(names[id(v)] for v in g.inputs)}):"]
    for node in g.nodes:
        args = [names[id(v)] for v in node.inputs]
        args += [f"{k}={_literal(a)}" for k, a in node.attrs.items()]
        outs = ", ".join(names[id(v)] for v in node.outputs)
        line = f"    {outs} = L.{node.op}({', '.join(args)})"
        notes = [node.meta["source"]] if node.meta.get("source") else []
        if node.meta.get("module"):
            notes.insert(0, f"[{node.meta['module']}]")
        if node.meta.get("phase") and node.meta["phase"] != "forward":
            notes.insert(0, node.meta["phase"])
        if notes:
            line += "  # " + " ".join(notes)
        lines.append(line)
    outs = ", ".join(names[id(v)] for v in g.outputs)
    lines.append(f"    return ({outs}{',' if len(g.outputs) == 1 else ''})")
    source = "\n".join(lines) + "\n"

    _counter += 1
    filename = f"<graphc-jax:{g.name}:{_counter}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    env = {"L": SimpleNamespace(**LOWERINGS), "inf": math.inf, "nan": math.nan}
    exec(compile(source, filename, "exec"), env)  # noqa: S102  (our own generated code)
    return source, env[fn_name]
