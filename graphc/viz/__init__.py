"""Renderers of graphs for people and tools: text, JSON, DOT, SVG (via Graphviz) and a self-contained HTML viewer.

All of them except text and JSON draw from one GraphView (viz.model), so every picture agrees on
phases, module paths, frozen regions and fused groups.
"""
from __future__ import annotations

from typing import Any

FORMATS = ("text", "json", "dot", "svg", "html")
#: file name extension of each format
EXTENSIONS = {"text": "txt", "json": "json", "dot": "dot", "svg": "svg", "html": "html"}


def render(obj: Any, format: str = "text", stage: str | None = None) -> str:
    """obj: a Graph or a Lowered. format: text | json | dot | svg | html. stage: a Lowered's stage to show
    ("traced", "optimized" (the default), or a pass name such as "cse"); html embeds every stage and opens on it."""
    from .model import build_view, stage_graph

    if format not in FORMATS:
        raise ValueError(f"unknown dump format {format!r}; use one of {', '.join(FORMATS)}")
    if format == "html":
        from .html import to_html

        return to_html(obj, stage)
    g = stage_graph(obj, stage)
    if format == "text":
        final = stage in (None, "optimized", "final")
        return obj.as_text() if final and hasattr(obj, "as_text") else str(g)
    if format == "json":
        from ..ir.serialize import graph_to_json

        return graph_to_json(g)
    from .dot import to_dot

    dot = to_dot(build_view(g, None if g is obj else obj))
    if format == "dot":
        return dot
    from .svg import dot_to_svg

    return dot_to_svg(dot)
