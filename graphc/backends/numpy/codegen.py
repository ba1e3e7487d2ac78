"""Lower a Graph to one straight-line Python function over numpy arrays.

One line per node, named after the graph's values, with the user's source line as a
comment; each buffer is dropped (`del`) right after its last use. The source is kept so
`exe.source` shows it and a debugger can step through it (linecache registration).
"""
from __future__ import annotations

import keyword
import linecache
import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from ...ir.graph import Graph
from .elementwise import _UFUNCS
from .registry import KERNELS

_counter = 0


def _ident(name: str, taken: set[str]) -> str:
    base = "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "v"
    if base[0].isdigit():
        base = "v" + base
    if keyword.iskeyword(base) or base in ("np", "k", "inf", "nan"):
        base += "_"
    cand, i = base, 1
    while cand in taken:
        cand, i = f"{base}_{i}", i + 1
    taken.add(cand)
    return cand


def _literal(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
    if isinstance(v, tuple):
        return "(" + ", ".join(_literal(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return repr(v)


def generate(g: Graph, fn_name: str = "run") -> tuple[str, Callable[..., tuple]]:
    """-> (source, function(*input_arrays) -> tuple of output arrays)."""
    global _counter
    taken: set[str] = set()
    names = {id(v): _ident(v.name, taken) for v in g.inputs}
    for node in g.nodes:
        for v in node.outputs:
            names[id(v)] = _ident(v.name, taken)
    last: dict[int, int] = {}
    for i, node in enumerate(g.nodes):
        for v in node.inputs:
            last[id(v)] = i
    keep = {id(v) for v in g.outputs}

    lines = [f"def {fn_name}({', '.join(names[id(v)] for v in g.inputs)}):"]
    for i, node in enumerate(g.nodes):
        args = [names[id(v)] for v in node.inputs]
        args += [f"{k}={_literal(a)}" for k, a in node.attrs.items()]
        fn = f"np.{_UFUNCS[node.op].__name__}" if node.op in _UFUNCS else f"k.{node.op}"
        outs = ", ".join(names[id(v)] for v in node.outputs)
        line = f"    {outs} = {fn}({', '.join(args)})"
        notes = [node.meta[k] for k in ("source",) if node.meta.get(k)]
        if node.meta.get("module"):
            notes.insert(0, f"[{node.meta['module']}]")
        if node.meta.get("phase") and node.meta["phase"] != "forward":
            notes.insert(0, node.meta["phase"])
        if notes:
            line += "  # " + " ".join(notes)
        lines.append(line)
        dead = [names[id(v)] for v in dict.fromkeys(node.inputs) if last.get(id(v)) == i and id(v) not in keep]
        if dead:
            lines.append(f"    del {', '.join(dead)}")
    outs = ", ".join(names[id(v)] for v in g.outputs)
    lines.append(f"    return ({outs}{',' if len(g.outputs) == 1 else ''})")
    source = "\n".join(lines) + "\n"

    _counter += 1
    filename = f"<graphc:{g.name}:{_counter}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    env = {"np": np, "k": SimpleNamespace(**KERNELS), "inf": math.inf, "nan": math.nan}
    exec(compile(source, filename, "exec"), env)  # noqa: S102  (our own generated code)
    return source, env[fn_name]
