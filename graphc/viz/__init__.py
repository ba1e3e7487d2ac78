"""Renderers of graphs for people and tools: text, JSON, DOT."""
from __future__ import annotations

from typing import Any

from ..ir.graph import Graph


def _graph(obj: Any) -> Graph:
    return obj.graph if hasattr(obj, "graph") and not isinstance(obj, Graph) else obj


def render(obj: Any, format: str = "text") -> str:
    """obj: a Graph or a Lowered. format: text | json | dot."""
    g = _graph(obj)
    if format == "text":
        return obj.as_text() if hasattr(obj, "as_text") else str(g)
    if format == "json":
        from ..ir.serialize import graph_to_json

        return graph_to_json(g)
    if format == "dot":
        from .dot import to_dot

        return to_dot(g)
    raise ValueError(f"unknown dump format {format!r}; use one of text, json, dot")
