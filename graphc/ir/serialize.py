"""JSON form of a Graph (schema versioned), for artifacts and other tools."""
from __future__ import annotations

import json
from typing import Any

from .graph import Graph, Node, Value
from .types import TensorType, dtype_of

SCHEMA_VERSION = 1


def _enc(v: Any) -> Any:
    if isinstance(v, tuple):
        return {"tuple": [_enc(x) for x in v]}
    if isinstance(v, list):
        return [_enc(x) for x in v]
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return {"float": repr(v)}
    return v


def _dec(v: Any) -> Any:
    if isinstance(v, dict):
        if "tuple" in v:
            return tuple(_dec(x) for x in v["tuple"])
        if "float" in v:
            return float(v["float"])
    if isinstance(v, list):
        return [_dec(x) for x in v]
    return v


def _type(t: TensorType) -> dict:
    return {"shape": list(t.shape), "dtype": t.dtype.name}


def graph_to_dict(g: Graph) -> dict:
    return {
        "schema": SCHEMA_VERSION,
        "name": g.name,
        "inputs": [{"name": v.name, "type": _type(v.type)} for v in g.inputs],
        "nodes": [
            {
                "op": n.op,
                "inputs": [v.name for v in n.inputs],
                "attrs": {k: _enc(a) for k, a in n.attrs.items()},
                "outputs": [{"name": v.name, "type": _type(v.type)} for v in n.outputs],
                "meta": {k: _enc(m) for k, m in n.meta.items()},
            }
            for n in g.nodes
        ],
        "outputs": [v.name for v in g.outputs],
        "meta": {k: _enc(m) for k, m in g.meta.items()},
    }


def graph_from_dict(d: dict) -> Graph:
    if d.get("schema") != SCHEMA_VERSION:
        raise ValueError(f"graph JSON has schema {d.get('schema')!r}; this graphc reads schema {SCHEMA_VERSION}")
    g = Graph(d["name"])
    env: dict[str, Value] = {}

    def ttype(t: dict) -> TensorType:
        return TensorType(tuple(t["shape"]), dtype_of(t["dtype"]))

    for i in d["inputs"]:
        v = Value(i["name"], ttype(i["type"]))
        g._names[v.name] = 1
        g.inputs.append(v)
        env[v.name] = v
    for nd in d["nodes"]:
        node = Node(nd["op"], [env[n] for n in nd["inputs"]], {k: _dec(a) for k, a in nd["attrs"].items()})
        node.meta = {k: _dec(m) for k, m in nd["meta"].items()}
        for j, o in enumerate(nd["outputs"]):
            v = Value(o["name"], ttype(o["type"]), node, j)
            g._names[v.name] = 1
            node.outputs.append(v)
            env[v.name] = v
        g.nodes.append(node)
    g.outputs = [env[n] for n in d["outputs"]]
    g.meta = {k: _dec(m) for k, m in d.get("meta", {}).items()}
    return g


def graph_to_json(g: Graph, indent: int | None = 1) -> str:
    return json.dumps(graph_to_dict(g), indent=indent)


def graph_from_json(text: str) -> Graph:
    return graph_from_dict(json.loads(text))
