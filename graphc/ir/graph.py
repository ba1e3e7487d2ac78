"""The IR: Values flow between Nodes inside a Graph.

One node type for every op (as in torch.fx and tinygrad); what an op means lives in
the op table, not here. The IR knows nothing of tensors or backends.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .types import TensorType


class Value:
    """A typed SSA value: a graph input or one output of a node."""

    __slots__ = ("name", "type", "producer", "index")

    def __init__(self, name: str, type: TensorType, producer: Node | None = None, index: int = 0):
        self.name = name
        self.type = type
        self.producer = producer
        self.index = index

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


@dataclass(eq=False)
class Node:
    """One op application. meta holds source ("file:line"), module path and phase."""

    op: str
    inputs: list[Value]
    attrs: dict[str, Any]
    outputs: list[Value] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Node({self.op}, {[v.name for v in self.outputs]})"


class GraphError(RuntimeError):
    pass


class Graph:
    """Inputs, nodes in topological order, outputs. Names are unique within a graph."""

    def __init__(self, name: str = "graph"):
        self.name = name
        self.inputs: list[Value] = []
        self.nodes: list[Node] = []
        self.outputs: list[Value] = []
        self.meta: dict[str, Any] = {}
        self._names: dict[str, int] = {}

    def fresh_name(self, base: str) -> str:
        """A unique name derived from base: relu, relu_1, relu_2 ..."""
        base = base or "v"
        n = self._names.get(base)
        if n is None:
            self._names[base] = 1
            return base
        while True:
            cand = f"{base}_{n}"
            n += 1
            if cand not in self._names:
                self._names[base] = n
                self._names[cand] = 1
                return cand

    def add_input(self, name: str, type: TensorType) -> Value:
        v = Value(self.fresh_name(name), type)
        self.inputs.append(v)
        return v

    def add_node(
        self,
        op: str,
        inputs: list[Value],
        attrs: dict[str, Any],
        out_types: list[TensorType],
        meta: dict[str, Any] | None = None,
        names: list[str] | None = None,
    ) -> Node:
        node = Node(op, list(inputs), dict(attrs), [], dict(meta or {}))
        for i, t in enumerate(out_types):
            base = names[i] if names else (op if len(out_types) == 1 else f"{op}_out{i}")
            node.outputs.append(Value(self.fresh_name(base), t, node, i))
        self.nodes.append(node)
        return node

    def verify(self) -> Graph:
        """Check topological order, unique names, no dangling values and op types."""
        from ..ops import OPS  # the op table decides what a node's types must be

        defined: set[int] = set()
        names: set[str] = set()

        def define(v: Value) -> None:
            if v.name in names:
                raise GraphError(f"{self.name}: value name %{v.name} defined twice")
            names.add(v.name)
            defined.add(id(v))

        for v in self.inputs:
            if v.producer is not None:
                raise GraphError(f"{self.name}: input %{v.name} has a producer")
            define(v)
        for node in self.nodes:
            for v in node.inputs:
                if id(v) not in defined:
                    raise GraphError(f"{self.name}: %{v.name} used by {node.op} before it is defined")
            op = OPS.get(node.op)
            if op is None:
                raise GraphError(f"{self.name}: unknown op {node.op!r}")
            try:
                expected = op.infer_types([v.type for v in node.inputs], node.attrs)
            except Exception as e:  # ShapeError, or a missing/unexpected attr (TypeError)
                raise GraphError(f"{self.name}: {node.op} rejects its inputs or attrs: {e}") from e
            got = [v.type for v in node.outputs]
            if expected != got:
                raise GraphError(
                    f"{self.name}: {node.op} outputs {', '.join(map(str, got))} but its type rule gives "
                    f"{', '.join(map(str, expected))}"
                )
            for i, v in enumerate(node.outputs):
                if v.producer is not node or v.index != i:
                    raise GraphError(f"{self.name}: %{v.name} does not point back at its producer")
                define(v)
        for v in self.outputs:
            if id(v) not in defined:
                raise GraphError(f"{self.name}: output %{v.name} is not defined in the graph")
        return self

    def users(self) -> dict[int, list[Node]]:
        """id(value) -> the nodes that read it."""
        out: dict[int, list[Node]] = {}
        for node in self.nodes:
            for v in node.inputs:
                out.setdefault(id(v), []).append(node)
        return out

    def to_networkx(self):
        """A networkx MultiDiGraph: one vertex per node and graph input, one edge per use."""
        import networkx as nx

        g = nx.MultiDiGraph(name=self.name)
        for v in self.inputs:
            g.add_node(v.name, op="input", type=str(v.type))
        for node in self.nodes:
            key = node.outputs[0].name if node.outputs else f"{node.op}@{id(node)}"
            g.add_node(key, op=node.op, attrs=dict(node.attrs), type=[str(v.type) for v in node.outputs], **node.meta)
            for v in node.inputs:
                src = v.name if v.producer is None else v.producer.outputs[0].name
                g.add_edge(src, key, value=v.name, type=str(v.type))
        return g

    def __str__(self) -> str:
        from .printer import format_graph

        return format_graph(self)

    def __len__(self) -> int:
        return len(self.nodes)
