"""Flops and bytes per node, from each op's cost rule (or a default by op kind)."""
from __future__ import annotations

from typing import Any

from ..ir.graph import Graph
from . import OPS


def node_flops(op: str, ins: list, outs: list, attrs: dict) -> int:
    d = OPS[op]
    if d.flops is not None:
        return int(d.flops(ins, outs, attrs))
    if d.kind in ("view", "factory", "random"):
        return 0
    if d.kind == "reduction":
        return ins[0].numel
    return sum(o.numel for o in outs)


def graph_cost(g: Graph) -> dict[str, Any]:
    """{'flops', 'bytes accessed', 'nodes': [{name, op, flops, bytes}]} like XLA's cost_analysis()."""
    rows = []
    for n in g.nodes:
        ins, outs = [v.type for v in n.inputs], [v.type for v in n.outputs]
        nbytes = sum(t.nbytes for t in ins) + sum(t.nbytes for t in outs)
        rows.append({"name": n.outputs[0].name if n.outputs else n.op, "op": n.op,
                     "flops": node_flops(n.op, ins, outs, n.attrs), "bytes": nbytes})
    return {"flops": sum(r["flops"] for r in rows), "bytes accessed": sum(r["bytes"] for r in rows), "nodes": rows}
