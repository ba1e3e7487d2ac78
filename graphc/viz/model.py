"""What a picture of a graph shows, computed once so that DOT, SVG and HTML agree.

Renderers never walk the IR themselves: they draw a GraphView, a flat list of ViewNodes (graph
inputs included) that already carry everything a person asks about a node: its phase, the
module it belongs to, where it came from, whether gradients flow through it (frozen), which
fused group it is in and which graph outputs it produces.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ir.graph import Graph, Value
from ..ir.printer import format_attr

PHASES = ("forward", "backward", "optimizer")
#: the pseudo-module that holds optimizer work done outside any module (SGD/Adam updates, their state)
OPTIMIZER = "(optimizer)"


@dataclass
class ViewNode:
    id: str  # the name of its first output value (graph inputs: the input's name): unique in a graph
    op: str  # the op, or "input"
    outputs: list[tuple[str, str]]  # (value name, type)
    inputs: list[tuple[str, str, str]]  # (producer's ViewNode id, value name, type)
    attrs: dict[str, str] = field(default_factory=dict)
    phase: str = "forward"  # forward | backward | optimizer | input
    module: str = ""  # the module path recorded while tracing ("" = top level)
    cluster: str = ""  # the module it is drawn in: `module`, an input's owner, or OPTIMIZER
    source: str = ""
    frozen: bool = False
    group: str | None = None  # fused group, when a fusion pass set meta["group"]
    kind: str | None = None  # graph inputs: arg | param | buffer | state | grad | tensor | seed | cotangent
    results: list[str] = field(default_factory=list)  # graph outputs it produces: "result 0", "update fc.weight"

    @property
    def type(self) -> str:
        return ", ".join(t for _, t in self.outputs)


@dataclass
class GraphView:
    name: str
    nodes: list[ViewNode]
    modules: dict[str, list[str]]  # module path -> child module paths; "" is the root

    def edges(self) -> list[tuple[str, str, str]]:
        """(source id, target id, tensor type), one per use of a value."""
        return [(src, n.id, t) for n in self.nodes for src, _, t in n.inputs]


def node_id(v: Value) -> str:
    return v.name if v.producer is None else v.producer.outputs[0].name


def _owner(name: str, modules: set[str]) -> str:
    """The module a lifted tensor belongs to, from its name: layer1.0.conv1.weight -> layer1.0.conv1."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:cut]) in modules:
            return ".".join(parts[:cut])
    return ""


def _result_labels(obj: Any, g: Graph) -> list[str]:
    slots = getattr(getattr(obj, "traced", None), "outputs", None) or []
    labels = []
    for i in range(len(g.outputs)):
        s = slots[i] if i < len(slots) else None
        if s is None:
            labels.append(f"output {i}")
        elif s.kind == "result":
            labels.append(f"result {i}")
        else:
            labels.append(f"{s.kind.replace('_', ' ')} {s.name}")
    return labels


def build_view(g: Graph, obj: Any = None) -> GraphView:
    """The view of g. obj (a Lowered) supplies what the graph alone does not know: where each input
    comes from and whether it requires grad, and what each output means."""
    slots = getattr(getattr(obj, "traced", None), "inputs", None) or []
    modules = {n.meta["module"] for n in g.nodes if n.meta.get("module")}
    modules |= {".".join(m.split(".")[:k]) for m in modules for k in range(1, m.count(".") + 1)}
    live: set[str] = set()  # values that depend on something requiring grad
    nodes: list[ViewNode] = []
    for i, v in enumerate(g.inputs):
        s = slots[i] if i < len(slots) else None
        kind = s.kind if s is not None else ("cotangent" if slots else None)
        if s is not None and s.requires_grad and s.kind != "grad":
            live.add(v.name)
        owner = _owner(v.name.removeprefix("grad."), modules)
        nodes.append(ViewNode(v.name, "input", [(v.name, str(v.type))], [], phase="input", module=owner,
                              cluster=owner, kind=kind))
    frozen_known = bool(live) or any("frozen" in n.meta for n in g.nodes)
    phases = _phases(g)
    opt_cluster = _optimizer_clusters(g, phases, slots)
    for i, v in enumerate(g.inputs):
        if v.name in opt_cluster:
            nodes[i].module = nodes[i].cluster = opt_cluster[v.name]
    for n in g.nodes:
        phase = phases[id(n)]
        is_live = any(v.name in live for v in n.inputs)
        if is_live:
            live.update(o.name for o in n.outputs)
        module = n.meta.get("module") or ""
        # frozen = forward work that no gradient flows through (constants and update steps are not "frozen")
        frozen = bool(n.meta["frozen"]) if "frozen" in n.meta else (
            frozen_known and phase == "forward" and bool(n.inputs) and not is_live)
        nodes.append(ViewNode(
            n.outputs[0].name if n.outputs else f"{n.op}#{len(nodes)}", n.op,
            [(o.name, str(o.type)) for o in n.outputs], [(node_id(v), v.name, str(v.type)) for v in n.inputs],
            {k: format_attr(a) for k, a in n.attrs.items()}, phase, module,
            module or opt_cluster.get(n.outputs[0].name if n.outputs else "", ""), str(n.meta.get("source") or ""),
            frozen,
            None if n.meta.get("group") is None else str(n.meta["group"])))
    for node in nodes[:len(g.inputs)]:
        node.frozen = frozen_known and node.id not in live and node.kind in ("param", "buffer", "tensor")
    by_id = {n.id: n for n in nodes}
    for v, label in zip(g.outputs, _result_labels(obj, g), strict=True):
        by_id[node_id(v)].results.append(label)
    return GraphView(g.name, nodes, module_tree(n.cluster for n in nodes))


def _phases(g: Graph) -> dict[int, str]:
    """id(node) -> phase. Nodes without a phase tag are forward; in a graph with a backward pass, "forward"
    work that reads backward results, or that only optimizer work reads, is the update step (an optimizer
    traced without phase tags, or the user's own update code such as gradient clipping)."""
    phase = {id(n): n.meta.get("phase") or "forward" for n in g.nodes}
    if "backward" not in phase.values():
        return phase
    of_value: dict[str, str] = {}
    for n in g.nodes:
        if phase[id(n)] == "forward" and any(of_value.get(v.name) in ("backward", "optimizer") for v in n.inputs):
            phase[id(n)] = "optimizer"
        of_value.update((o.name, phase[id(n)]) for o in n.outputs)
    users = g.users()
    outputs = {id(v) for v in g.outputs}
    for n in reversed(g.nodes):
        us = [u for o in n.outputs for u in users.get(id(o), [])]
        if (phase[id(n)] == "forward" and us and all(phase[id(u)] == "optimizer" for u in us)
                and not any(id(o) in outputs for o in n.outputs)):
            phase[id(n)] = "optimizer"
    return phase


def _optimizer_clusters(g: Graph, phases: dict[int, str], slots: list[Any]) -> dict[str, str]:
    """Value name -> "(optimizer).<param>" for the optimizer's own inputs (its state) and for update work done
    outside any module, so that each parameter's update is drawn as one small cluster. The parameter is found
    from state names (opt.fc.weight.momentum_buffer) and then along the data flow, forwards and backwards."""
    params = sorted((s.name for s in slots if s.kind == "param"), key=len, reverse=True)

    def param_of(name: str) -> str | None:
        return next((p for p in params if f".{p}." in f".{name}."), None)

    owner: dict[str, str] = {}
    for i, v in enumerate(g.inputs):
        s = slots[i] if i < len(slots) else None
        if s is not None and s.kind in ("param", "state") and param_of(v.name):
            owner[v.name] = param_of(v.name)
    work = [n for n in g.nodes if phases[id(n)] == "optimizer" and not n.meta.get("module") and n.outputs]
    for n in work:
        found = next((owner[v.name] for v in n.inputs if v.name in owner), None)
        if found:
            owner.update((o.name, found) for o in n.outputs)
    users = g.users()
    for n in reversed(work):
        if n.outputs[0].name not in owner:
            theirs = {owner.get(u.outputs[0].name) for o in n.outputs for u in users.get(id(o), []) if u.outputs}
            if len(theirs) == 1 and None not in theirs:
                owner.update((o.name, theirs.pop()) for o in n.outputs)
    out = {o.name: OPTIMIZER for n in work for o in n.outputs}
    out.update((v.name, OPTIMIZER) for v, s in zip(g.inputs, slots, strict=False) if s.kind == "state")
    out.update((name, f"{OPTIMIZER}.{p}") for name, p in owner.items() if name in out)
    return out


def module_tree(paths: Any) -> dict[str, list[str]]:
    """Module path -> its child paths in first-seen order, every ancestor included ("" is the root)."""
    tree: dict[str, list[str]] = {"": []}
    for p in paths:
        if not p or p in tree:
            continue
        parts = p.split(".")
        for k in range(1, len(parts) + 1):
            path, parent = ".".join(parts[:k]), ".".join(parts[:k - 1])
            if path not in tree:
                tree[path] = []
                tree[parent].append(path)
    return tree


def stage_graph(obj: Any, stage: str | None = None) -> Graph:
    """The graph of one stage of a Lowered ("traced", "optimized", or a stage name such as "cse");
    a Graph is its own only stage."""
    if isinstance(obj, Graph):
        return obj
    if stage in (None, "optimized", "final"):
        return obj.graph
    for name, g in obj.stages:
        if name == stage:
            return g
    raise ValueError(f"no stage {stage!r}; this graph has stages {', '.join(n for n, _ in obj.stages)} and optimized")
