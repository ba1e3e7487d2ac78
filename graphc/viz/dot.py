"""Graphviz DOT from a GraphView: one cluster per module and phase, nodes coloured by phase,
frozen nodes faded, fused groups as dashed sub-clusters, edges labelled with tensor types.

Clusters are per (module, phase) rather than per module because a module's forward and backward
work sit at opposite ends of a training step; one box around both would span the whole picture.
"""
from __future__ import annotations

from .model import OPTIMIZER, GraphView

PHASE_COLORS = {"forward": "#dbeafe", "backward": "#fde68a", "optimizer": "#bbf7d0", "input": "#f3f4f6"}
PHASE_BORDERS = {"forward": "#3b82f6", "backward": "#d97706", "optimizer": "#16a34a", "input": "#9ca3af"}
FROZEN_FILL, FROZEN_TEXT = "#f9fafb", "#9ca3af"


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _cluster_phase(phase: str, cluster: str) -> str:
    if phase != "input":
        return phase
    return "optimizer" if cluster.startswith(OPTIMIZER) else "forward"


#: above this many nodes edges carry their type as a tooltip, not a label, and dot is told to spend less
#: effort on crossings: labels and crossing search are what make dot take minutes on a ResNet training step
LARGE = 300
FAST = "  mclimit=0.2; nslimit=2; nslimit1=2; searchsize=20; splines=line;"


def to_dot(view: GraphView, edge_labels: bool | None = None) -> str:
    """The DOT text of a view (Graphviz lays it out top to bottom). edge_labels: default only for small graphs."""
    large = len(view.nodes) > LARGE
    edge_labels = not large if edge_labels is None else edge_labels
    lines = [f"digraph {_q(view.name)} {{", "  rankdir=TB; compound=true; fontname=\"monospace\";",
             '  node [shape=box, style="rounded,filled", fontname="monospace", fontsize=10];',
             '  edge [fontname="monospace", fontsize=8, color="#6b7280"];'] + ([FAST] if large else [])
    # (module, phase) -> node lines; a cluster's sub-clusters are its child modules in the same phase
    members: dict[tuple[str, str], list[tuple[str | None, str]]] = {}
    for n in view.nodes:
        fill, border, text = PHASE_COLORS[n.phase], PHASE_BORDERS[n.phase], "#111827"
        if n.frozen:
            fill, text = FROZEN_FILL, FROZEN_TEXT
        label = f"{n.id}\n{n.type}" if n.op == "input" else f"{n.op}\n{n.type}"
        extra = ", shape=ellipse" if n.op == "input" else ""
        if n.results:
            extra += f", peripheries=2, tooltip={_q('; '.join(n.results))}"
        line = (f"{_q(n.id)} [label={_q(label)}, fillcolor={_q(fill)}, color={_q(border)}, "
                f"fontcolor={_q(text)}{extra}];")
        members.setdefault((n.cluster, _cluster_phase(n.phase, n.cluster)), []).append((n.group, line))

    def emit(path: str, phase: str, depth: int) -> None:
        pad = "  " * depth
        items = members.get((path, phase), [])
        groups: dict[str, list[str]] = {}
        for group, line in items:
            if group is None:
                lines.append(pad + line)
            else:
                groups.setdefault(group, []).append(line)
        for gi, (group, glines) in enumerate(groups.items()):
            lines.append(f"{pad}subgraph {_q(f'cluster_{path}|{phase}|group{gi}')} {{")
            lines.append(f'{pad}  label={_q(f"fused {group}")}; style="dashed,rounded"; color="#7c3aed";')
            lines.extend(pad + "  " + gline for gline in glines)
            lines.append(pad + "}")
        for child in view.modules.get(path, []):
            if not _has_members(child, phase):
                continue
            lines.append(f"{pad}subgraph {_q(f'cluster_{child}|{phase}')} {{")
            lines.append(f'{pad}  label={_q(f"{child} ({phase})")}; style="rounded,filled"; '
                         f'fillcolor="#ffffff"; color={_q(PHASE_BORDERS[phase])};')
            emit(child, phase, depth + 1)
            lines.append(pad + "}")

    def _has_members(path: str, phase: str) -> bool:
        return bool(members.get((path, phase))) or any(_has_members(c, phase) for c in view.modules.get(path, []))

    for phase in ("forward", "backward", "optimizer"):
        emit("", phase, 1)
    for src, dst, t in view.edges():
        lines.append(f"  {_q(src)} -> {_q(dst)} [{'label' if edge_labels else 'tooltip'}={_q(t)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
