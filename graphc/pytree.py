"""Flatten nested lists/tuples/dicts of tensors and Python values, and rebuild them.

The tree description is hashable, so argument structure can be part of a cache key.
"""
from __future__ import annotations

from typing import Any


def flatten(obj: Any, path: str = "") -> tuple[list[tuple[str, Any]], Any]:
    """-> ([(path, leaf)], treedef). Leaves are everything that is not a list, tuple or dict."""
    leaves: list[tuple[str, Any]] = []

    def walk(o: Any, p: str) -> Any:
        if isinstance(o, (list, tuple)):
            return (type(o).__name__, tuple(walk(x, f"{p}[{i}]") for i, x in enumerate(o)))
        if isinstance(o, dict):
            keys = tuple(o.keys())
            return ("dict", keys, tuple(walk(o[k], f"{p}[{k!r}]") for k in keys))
        leaves.append((p, o))
        return "*"

    return leaves, walk(obj, path)


def unflatten(treedef: Any, leaves: list[Any]) -> Any:
    it = iter(leaves)

    def build(d: Any) -> Any:
        if d == "*":
            return next(it)
        if d[0] == "dict":
            return {k: build(s) for k, s in zip(d[1], d[2])}
        items = [build(s) for s in d[1]]
        return tuple(items) if d[0] == "tuple" else items

    return build(treedef)
