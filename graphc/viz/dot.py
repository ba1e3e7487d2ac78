"""Graphviz DOT: one box per node coloured by phase, edges labelled with tensor types."""
from __future__ import annotations

from ..ir.graph import Graph

PHASE_COLORS = {"forward": "#dbeafe", "backward": "#fde68a", "optimizer": "#bbf7d0"}


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(g: Graph) -> str:
    lines = [f"digraph {_q(g.name)} {{", "  rankdir=TB;", '  node [shape=box, style="rounded,filled", fontname="monospace"];']
    for v in g.inputs:
        lines.append(f"  {_q(v.name)} [label={_q(f'{v.name}: {v.type}')}, shape=ellipse, fillcolor=\"#f3f4f6\"];")
    for n in g.nodes:
        key = n.outputs[0].name
        color = PHASE_COLORS.get(n.meta.get("phase", "forward"), "#ffffff")
        label = f"{n.op}\\n{', '.join(str(o.type) for o in n.outputs)}"
        lines.append(f"  {_q(key)} [label={_q(label)}, fillcolor={_q(color)}];")
        for v in n.inputs:
            src = v.name if v.producer is None else v.producer.outputs[0].name
            lines.append(f"  {_q(src)} -> {_q(key)} [label={_q(str(v.type))}];")
    for i, v in enumerate(g.outputs):
        src = v.name if v.producer is None else v.producer.outputs[0].name
        lines.append(f"  {_q(f'output{i}')} [shape=plaintext, label={_q(f'output {i}')}];")
        lines.append(f"  {_q(src)} -> {_q(f'output{i}')};")
    lines.append("}")
    return "\n".join(lines) + "\n"
