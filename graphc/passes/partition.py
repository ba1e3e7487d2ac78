"""Split a joint forward+backward graph into a forward graph (that also returns the values
the backward needs) and a backward graph (saved values + cotangents -> gradients)."""
from __future__ import annotations

from dataclasses import dataclass

from ..ir.graph import Graph, Value
from ..ir.rewrite import extract


@dataclass
class Partition:
    forward: Graph  # primal inputs -> primal outputs + saved
    backward: Graph  # saved + cotangents -> gradients
    n_saved: int


def partition(joint: Graph, n_primal_inputs: int, n_primal_outputs: int) -> Partition:
    primal_in = joint.inputs[:n_primal_inputs]
    cotangents = joint.inputs[n_primal_inputs:]
    outs, grads = joint.outputs[:n_primal_outputs], joint.outputs[n_primal_outputs:]
    # values that depend on a cotangent must run in the backward graph; everything else runs forward
    tainted = {id(v) for v in cotangents}
    for node in joint.nodes:
        if any(id(v) in tainted for v in node.inputs):
            tainted.update(id(v) for v in node.outputs)
    saved: dict[int, Value] = {}
    backward_nodes = [n for n in joint.nodes if id(n.outputs[0]) in tainted] if joint.nodes else []
    needed_by_bwd = [v for n in backward_nodes for v in n.inputs] + list(grads)
    for v in needed_by_bwd:
        # constants are recomputed in the backward graph rather than saved
        if id(v) not in tainted and not (v.producer is not None and v.producer.op in ("full", "iota")):
            saved.setdefault(id(v), v)
    saved_list = list(saved.values())
    fwd = extract(joint, primal_in, outs + saved_list, name=f"{joint.name}_forward")
    for node in fwd.nodes:
        node.meta.setdefault("phase", "forward")
    bwd = extract(joint, saved_list + list(cotangents), grads, name=f"{joint.name}_backward")
    return Partition(fwd, bwd, len(saved_list))
