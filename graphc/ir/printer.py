"""Readable text form of a Graph: one line per node, types like f32[1,3,64,64]."""
from __future__ import annotations

from typing import Any

from .graph import Graph


def format_attr(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(format_attr(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return repr(v) if isinstance(v, str) else str(v)


def format_graph(g: Graph, show_meta: bool = True) -> str:
    ins = ", ".join(f"%{v.name}: {v.type}" for v in g.inputs)
    lines = [f"graph {g.name}({ins}):"]
    for node in g.nodes:
        outs = ", ".join(f"%{v.name}: {v.type}" for v in node.outputs)
        args = [f"%{v.name}" for v in node.inputs]
        args += [f"{k}={format_attr(v)}" for k, v in node.attrs.items()]
        line = f"  {outs} = {node.op}({', '.join(args)})"
        if show_meta:
            bits = [node.meta[k] for k in ("phase",) if node.meta.get(k)]
            if node.meta.get("module"):
                bits.append(f"[{node.meta['module']}]")
            if node.meta.get("source"):
                bits.append(node.meta["source"])
            if bits:
                line += "  # " + " ".join(bits)
        lines.append(line)
    lines.append(f"  return ({', '.join('%' + v.name for v in g.outputs)}{',' if len(g.outputs) == 1 else ''})")
    return "\n".join(lines)
