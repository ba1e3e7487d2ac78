"""Building new graphs from old ones: the two moves every pass is made of."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from .graph import Graph, GraphError, Node, Value


def extract(g: Graph, inputs: Sequence[Value], outputs: Sequence[Value], name: str | None = None) -> Graph:
    """The subgraph computing `outputs` from `inputs` (a copy; dead nodes are left out)."""
    new = Graph(name or g.name)
    new.meta = dict(g.meta)
    m: dict[int, Value] = {}
    for v in inputs:
        m[id(v)] = new.add_input(v.name, v.type)
    needed: set[int] = set()
    stack = [v for v in outputs if id(v) not in m]
    while stack:
        v = stack.pop()
        node = v.producer
        if node is None or id(node) in needed:
            if node is None and id(v) not in m:
                raise GraphError(f"{new.name}: %{v.name} is needed but is neither computed nor an input")
            continue
        needed.add(id(node))
        stack.extend(x for x in node.inputs if id(x) not in m)
    for node in g.nodes:
        if id(node) in needed:
            copy_node(new, node, [m[id(v)] for v in node.inputs], m)
    new.outputs = [m[id(v)] for v in outputs]
    return new


def copy_node(new: Graph, node: Node, inputs: list[Value], m: dict[int, Value]) -> Node:
    nn = new.add_node(node.op, inputs, node.attrs, [v.type for v in node.outputs], node.meta,
                      names=[v.name for v in node.outputs])
    for old, v in zip(node.outputs, nn.outputs):
        m[id(old)] = v
    return nn


Visit = Callable[[Node, list[Value], Graph], list[Value] | None]


def rewrite(g: Graph, visit: Visit) -> Graph:
    """Copy g node by node; visit(node, new_inputs, new_graph) may return replacement values
    for the node's outputs (emitting new nodes into new_graph as it likes) or None to copy it."""
    new = Graph(g.name)
    new.meta = dict(g.meta)
    m: dict[int, Value] = {}
    for v in g.inputs:
        m[id(v)] = new.add_input(v.name, v.type)
    for node in g.nodes:
        ins = [m[id(v)] for v in node.inputs]
        repl = visit(node, ins, new)
        if repl is None:
            copy_node(new, node, ins, m)
        else:
            for old, v in zip(node.outputs, repl):
                m[id(old)] = v
    new.outputs = [m[id(v)] for v in g.outputs]
    return new
