"""Lower a Graph to one straight-line Python function over numpy arrays.

One line per node, named after the graph's values, with the user's source line as a
comment; each buffer is dropped (`del`) right after its last use. The source is kept so
`exe.source` shows it and a debugger can step through it (linecache registration).

The memory plan (graphc/passes/memory.py) turns lines into in-place ufuncs (`out=`) where an
input dies at that line, so a fused group (graphc/passes/fusion.py, emitted together under a
comment) runs its elementwise chain in one buffer.

Measured and left out: evaluating large fused groups in cache-sized chunks (one ufunc call per
op per 16-64K elements) was no faster than whole-array ufuncs for ResNet-18's SGD updates, whose
arrays (<= 9.4 MB) already stay in the last-level cache between the ops of a chain.
"""
from __future__ import annotations

import itertools
import keyword
import linecache
import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from ...ir.graph import Graph, Node
from .allocator import keep_freed_memory
from .elementwise import _UFUNCS
from .registry import KERNELS
from .threads import with_blas_policy

_counter = 0


def _ident(name: str, taken: set[str]) -> str:
    base = "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "v"
    if base[0].isdigit():
        base = "v" + base
    if keyword.iskeyword(base) or base in ("np", "k", "inf", "nan", "const"):
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


def runtime_env() -> dict[str, Any]:
    """The globals generated code runs with: numpy as np, the kernels as k."""
    return {"np": np, "k": SimpleNamespace(**KERNELS), "inf": math.inf, "nan": math.nan, "const": _read_only}


def _read_only(a: np.ndarray) -> np.ndarray:
    """A constant shared by every call of a generated function: writing to it would be a bug, so it raises."""
    a.flags.writeable = False
    return a


def hoistable(g: Graph) -> set[int]:
    """ids of constant values (full, iota: no inputs) that the generated code builds once, at load time,
    as read-only arrays, instead of on every call. A constant that is, or is viewed by, a graph output
    stays in the function: the caller owns outputs and may write to them."""
    from ...passes.memory import storages

    owner = storages(g)
    escaping = {owner[id(v)] for v in g.outputs}
    return {id(n.outputs[0]) for n in g.nodes
            if n.op in ("full", "iota") and not n.inputs and id(n.outputs[0]) not in escaping}


def _note(node: Node) -> str:
    notes = [node.meta[k] for k in ("source",) if node.meta.get(k)]
    if node.meta.get("module"):
        notes.insert(0, f"[{node.meta['module']}]")
    if node.meta.get("phase") and node.meta["phase"] != "forward":
        notes.insert(0, node.meta["phase"])
    return "  # " + " ".join(notes) if notes else ""


def generate(g: Graph, fn_name: str = "run", plan: Any = None,
             donated: dict[int, int] | None = None) -> tuple[str, Callable[..., tuple]]:
    """-> (source, function(*input_arrays) -> tuple of output arrays).

    plan: a graphc.passes.memory.MemoryPlan to follow (None: plan now; False: no in-place reuse, the plain
    one-array-per-node code). donated: the inputs whose buffers the new values may overwrite (input index ->
    output index, see plan_memory); the caller must pass arrays it owns there. Nodes of one fused group
    (meta["group"], set by the fusion pass) are emitted together under a comment naming the group."""
    global _counter
    keep_freed_memory()
    if plan is None:
        from ...passes.memory import plan_memory

        plan = plan_memory(g, donated=donated)
    reuse = plan.out if plan else {}
    taken: set[str] = set()
    names = {id(v): _ident(v.name, taken) for v in g.inputs}
    for node in g.nodes:
        for v in node.outputs:
            names[id(v)] = _ident(v.name, taken)
    last: dict[int, int] = {}
    for i, node in enumerate(g.nodes):
        for v in node.inputs:
            last[id(v)] = i
        if len(node.outputs) == 1 and id(node.outputs[0]) in reuse:  # out= names the buffer: keep it till here
            last[id(reuse[id(node.outputs[0])])] = i
    keep = {id(v) for v in g.outputs}
    hoisted = hoistable(g)
    prelude = []
    for node in g.nodes:
        if id(node.outputs[0]) in hoisted if node.outputs else False:
            n = names[id(node.outputs[0])]
            attrs = ", ".join(f"{k}={_literal(a)}" for k, a in node.attrs.items())
            prelude.append(f"{n} = const(k.{node.op}({attrs}))  # built once, read-only{_note(node)[3:] and ';'}"
                           f"{_note(node)[3:]}")

    lines = prelude + [f"def {fn_name}({', '.join(names[id(v)] for v in g.inputs)}):"]
    group = None
    for i, node in enumerate(g.nodes):
        if node.outputs and id(node.outputs[0]) in hoisted:
            continue
        gid = node.meta.get("group")
        if gid is not None and gid != group:
            members = [n.op for n in itertools.takewhile(lambda n: n.meta.get("group") == gid, g.nodes[i:])]
            lines.append(f"    # fused {gid}: {', '.join(members)}")
        group = gid
        args = [names[id(v)] for v in node.inputs]
        args += [f"{k}={_literal(a)}" for k, a in node.attrs.items()]
        if len(node.outputs) == 1 and id(node.outputs[0]) in reuse:
            args.append(f"out={names[id(reuse[id(node.outputs[0])])]}")
        fn = f"np.{_UFUNCS[node.op].__name__}" if node.op in _UFUNCS else f"k.{node.op}"
        outs = ", ".join(names[id(v)] for v in node.outputs)
        lines.append(f"    {outs} = {fn}({', '.join(args)}){_note(node)}")
        used = list(node.inputs) + ([reuse[id(node.outputs[0])]] if len(node.outputs) == 1
                                    and id(node.outputs[0]) in reuse else [])
        dead = [names[id(v)] for v in dict.fromkeys(used)
                if last.get(id(v)) == i and id(v) not in keep and id(v) not in hoisted]
        dead += [names[id(v)] for v in node.outputs if id(v) not in last and id(v) not in keep]  # never read
        if dead:
            lines.append(f"    del {', '.join(dead)}")
    outs = ", ".join(names[id(v)] for v in g.outputs)
    lines.append(f"    return ({outs}{',' if len(g.outputs) == 1 else ''})")
    source = "\n".join(lines) + "\n"

    _counter += 1
    filename = f"<graphc:{g.name}:{_counter}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    env = runtime_env()
    exec(compile(source, filename, "exec"), env)  # noqa: S102  (our own generated code)
    return source, with_blas_policy(env[fn_name])
