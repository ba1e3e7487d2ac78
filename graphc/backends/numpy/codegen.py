"""Lower a Graph to one straight-line Python function over numpy arrays.

One line per node, named after the graph's values, with the user's source line as a
comment; each buffer is dropped (`del`) right after its last use. The source is kept so
`exe.source` shows it and a debugger can step through it (linecache registration).

The memory plan (graphc/passes/memory.py) turns lines into in-place ufuncs (`out=`) where an
input dies at that line, so a fused group (graphc/passes/fusion.py, emitted together under a
comment) runs its elementwise chain in one buffer.

A large fused group of same-shaped elementwise ops is emitted twice: as a function over one chunk of
elements, run chunk by chunk on two threads (graphc/backends/numpy/chunks.py), when every array it
touches is contiguous and none it writes overlaps another, and as the whole-array lines otherwise.
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
from ..allocator import keep_freed_memory
from . import chunks, native
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
    return {"np": np, "k": SimpleNamespace(**KERNELS), "inf": math.inf, "nan": math.nan, "const": _read_only,
            "chunks": chunks, "native": native}


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
    # new gradients the caller may give the old .grad's buffer for (extra parameters after the graph's inputs,
    # None when it has none): {id(value): the buffer parameter's name}
    into = {id(g.outputs[k]): _ident(f"{name}_buffer", taken) for k, name in plan.grad_buffers.items()} \
        if plan else {}
    hoisted = hoistable(g)
    prelude = []
    for node in g.nodes:
        if id(node.outputs[0]) in hoisted if node.outputs else False:
            n = names[id(node.outputs[0])]
            attrs = ", ".join(f"{k}={_literal(a)}" for k, a in node.attrs.items())
            prelude.append(f"{n} = const(k.{node.op}({attrs}))  # built once, read-only{_note(node)[3:] and ';'}"
                           f"{_note(node)[3:]}")

    def line(i: int, node: Node, ind: str = "    ") -> list[str]:
        args = [names[id(v)] for v in node.inputs]
        args += [f"{k}={_literal(a)}" for k, a in node.attrs.items()]
        if len(node.outputs) == 1 and id(node.outputs[0]) in reuse:
            args.append(f"out={names[id(reuse[id(node.outputs[0])])]}")
        elif len(node.outputs) == 1 and id(node.outputs[0]) in into:
            args.append(f"out={into[id(node.outputs[0])]}")
        fn = f"np.{_UFUNCS[node.op].__name__}" if node.op in _UFUNCS else f"k.{node.op}"
        outs = ", ".join(names[id(v)] for v in node.outputs)
        out = [f"{ind}{outs} = {fn}({', '.join(args)}){_note(node)}"]
        dead = dying(i, node)
        if dead:
            out.append(f"{ind}del {', '.join(dead)}")
        return out

    def dying(i: int, node: Node) -> list[str]:
        used = list(node.inputs) + ([reuse[id(node.outputs[0])]] if len(node.outputs) == 1
                                    and id(node.outputs[0]) in reuse else [])
        dead = [names[id(v)] for v in dict.fromkeys(used)
                if last.get(id(v)) == i and id(v) not in keep and id(v) not in hoisted]
        return dead + [names[id(v)] for v in node.outputs if id(v) not in last and id(v) not in keep]  # never read

    params = [names[id(v)] for v in g.inputs] + [f"{b}=None" for b in into.values()]
    natives: list[str] = []  # the C loops (native.Group) of chunked groups, built once at load time
    lines = [f"def {fn_name}({', '.join(params)}):"]
    group = None
    i = 0
    while i < len(g.nodes):
        node = g.nodes[i]
        if node.outputs and id(node.outputs[0]) in hoisted:
            i += 1
            continue
        gid = node.meta.get("group")
        if gid is not None and gid != group:
            members = list(itertools.takewhile(lambda n: n.meta.get("group") == gid, g.nodes[i:]))
            lines.append(f"    # fused {gid}: {', '.join(n.op for n in members)}")
            if _chunkable(members, hoisted):
                lines += _chunked(gid, i, members, names, taken, reuse, last, keep, line, dying, natives)
                group = gid
                i += len(members)
                continue
        group = gid
        lines += line(i, node)
        i += 1
    outs = ", ".join(names[id(v)] for v in g.outputs)
    lines.append(f"    return ({outs}{',' if len(g.outputs) == 1 else ''})")
    source = "\n".join(prelude + natives + lines) + "\n"

    _counter += 1
    filename = f"<graphc:{g.name}:{_counter}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    env = runtime_env()
    exec(compile(source, filename, "exec"), env)  # noqa: S102  (our own generated code)
    return source, with_blas_policy(env[fn_name])


def _literal_names(ns: list[str]) -> str:
    return "(" + ", ".join(ns) + ("," if len(ns) == 1 else "") + ")"


def _chunkable(members: list[Node], hoisted: set[int]) -> bool:
    """A fused group that can run chunk by chunk: ufuncs only, every operand of one shape (or a scalar), and
    large enough to gain from it (smaller when a C loop can run it: one call instead of a ufunc per op)."""
    if len(members) < 2:
        return False
    shape = members[0].outputs[0].type.shape if members[0].outputs else None
    if shape is None or math.prod(shape) < native.MIN_ELEMENTS:
        return False
    for n in members:
        if n.op not in _UFUNCS or n.attrs or len(n.outputs) != 1 or id(n.outputs[0]) in hoisted:
            return False
        if any(v.type.shape not in (shape, ()) for v in n.inputs) or n.outputs[0].type.shape != shape:
            return False
    return math.prod(shape) >= chunks.MIN_ELEMENTS or (native.enabled() and native.supports(members) is not None)


def _chunked(gid: str, first: int, members: list[Node], names: dict[int, str], taken: set[str],
             reuse: dict[int, Any], last: dict[int, int], keep: set[int], line: Callable, dying: Callable,
             natives: list[str]) -> list[str]:
    """Lines running a _chunkable group as a C loop where one can run it (native.py; the group's object is
    added to natives), else chunk by chunk (see chunks.py), with the whole-array lines as fallback.

    Inside the chunk function every array from outside the group is a flat view (a default argument of the
    same name), values that live on after the group are written into full-size arrays, and the rest are
    chunk-sized temporaries."""
    end = first + len(members)
    made = {id(n.outputs[0]) for n in members}
    shape = members[0].outputs[0].type.shape
    escapes = [n.outputs[0] for n in members if id(n.outputs[0]) in keep or last.get(id(n.outputs[0]), -1) >= end]
    outer: dict[int, Any] = {}  # arrays from outside the group, full-size (read, or written through out=)
    written: set[int] = set()
    for n in members:
        for v in n.inputs:
            if id(v) not in made and v.type.shape == shape:
                outer.setdefault(id(v), v)
        r = reuse.get(id(n.outputs[0]))
        if r is not None and id(r) not in made:
            outer.setdefault(id(r), r)
            written.add(id(r))
    fresh = [v for v in escapes if reuse.get(id(v)) is None or id(reuse[id(v)]) in made]  # need a full array
    fn = _ident(f"chunk_{gid}", taken)
    reads = [names[id(v)] for v in outer.values()]
    writes = [names[id(v)] for v in outer.values() if id(v) in written]
    out = [f"    if chunks.fits({_literal_names(reads)}, {_literal_names(writes)}):"]
    for v in fresh:
        out.append(f"        {names[id(v)]} = np.empty({v.type.shape!r}, dtype=np.{np.dtype(v.type.dtype.np).name})")
    flat = [names[id(v)] for v in outer.values()] + [names[id(v)] for v in fresh]
    ind = "        "
    group = _native_group(members, outer, fresh, reuse, names, math.prod(shape))
    if group is not None:
        obj = _ident(f"native_{gid}", taken)
        natives.append(f"{obj} = {group[0]}")
        out.append(f"        if not {obj}({', '.join(group[1])}):")
        ind = "            "
    out.append(f"{ind}def {fn}(s, e, {', '.join(f'{n}={n}.reshape(-1)' for n in flat)}):")
    full = {names[id(v)] for v in fresh} | {names[id(v)] for v in outer.values()}
    fresh_ids = {id(v) for v in fresh}
    for n in members:
        v = n.outputs[0]
        args = [f"{names[id(a)]}[s:e]" if names[id(a)] in full else names[id(a)] for a in n.inputs]
        r = reuse.get(id(v))
        call = f"np.{_UFUNCS[n.op].__name__}"
        if id(v) in fresh_ids:  # into its full-size array; later ops read its chunk as name[s:e]
            out.append(f"{ind}    {call}({', '.join(args)}, out={names[id(v)]}[s:e])")
            continue
        if r is not None:
            args.append(f"out={names[id(r)]}[s:e]" if names[id(r)] in full else f"out={names[id(r)]}")
        out.append(f"{ind}    {names[id(v)]} = {call}({', '.join(args)})")
    out.append(f"{ind}chunks.run_chunks({fn}, {math.prod(shape)})")
    if group is not None:
        out.append(f"{ind}del {fn}")
    bound = [v for v in escapes if id(v) not in fresh_ids]  # written into an outside buffer: that buffer
    if bound:
        out.append(f"        {', '.join(names[id(v)] for v in bound)} = "
                   f"{', '.join(names[id(reuse[id(v)])] for v in bound)}")
    dead = [d for i, n in enumerate(members, first) for d in dying(i, n)]
    inside = {names[id(n.outputs[0])] for n in members} - {names[id(v)] for v in escapes}
    gone = ([] if group is not None else [fn]) + [d for d in dead if d not in inside]
    if gone:
        out.append(f"        del {', '.join(gone)}")
    out.append("    else:")
    for i, n in enumerate(members, first):
        out += line(i, n, "        ")
    return out


def _native_group(members: list[Node], outer: dict[int, Any], fresh: list[Any], reuse: dict[int, Any],
                  names: dict[int, str], size: int) -> tuple[str, list[str]] | None:
    """(the expression building a chunked group's native.Group, the names to call it with) or None when no C
    loop can run it (another op or dtype, GRAPHC_NATIVE=0). Slots: first the full-size arrays (read, written
    through out=, or made for values that outlive the group), then, in the order the group meets them, the
    scalars it reads and one register per value that lives only inside it; a value computed in place (out=)
    shares its buffer's slot."""
    dtype = native.supports(members)
    if dtype is None or not native.enabled():
        return None
    slot_of: dict[int, int] = {}
    kinds: list[int] = []
    args: list[str] = []

    def add(v: Any, kind: int) -> None:
        slot_of[id(v)] = len(kinds)
        kinds.append(kind)
        args.append("None" if kind == native.TEMP else names[id(v)])

    for v in list(outer.values()) + fresh:
        add(v, native.ARRAY)
    made = {id(n.outputs[0]) for n in members}
    for n in members:
        for v in n.inputs:
            if id(v) not in slot_of and id(v) not in made:
                add(v, native.SCALAR)
        v = n.outputs[0]
        if id(v) in slot_of:  # a fresh full-size array
            continue
        r = reuse.get(id(v))
        if r is not None:
            slot_of[id(v)] = slot_of[id(r)]
        else:
            add(v, native.TEMP)
    program = native.program(members, slot_of)
    return f"native.Group({dtype!r}, {kinds!r}, {program!r}, {size})", args
