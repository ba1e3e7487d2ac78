"""A self-contained HTML viewer: one file, no network, the graph data embedded as JSON.

Every stage of a Lowered (traced, autodiff, one per pass) is embedded so the page can show the
graph before and after passes; a node that several stages share is stored once. Layout happens
in the page (viewer.js: longest-path layering, barycenter ordering, one block per expanded
module), because the picture depends on which modules the reader has collapsed, and a layout
computed ahead of time could only serve one such choice.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ..ir.graph import Graph
from .model import OPTIMIZER, ViewNode, build_view, stage_graph

_HERE = Path(__file__).parent
#: graphs with more nodes than this open with every module collapsed
COLLAPSE_ABOVE = 200


def _node_dict(n: ViewNode) -> dict[str, Any]:
    d: dict[str, Any] = {"id": n.id, "op": n.op, "ty": n.type, "ph": n.phase}
    optional = {"outs": n.outputs if len(n.outputs) > 1 else None, "in": [list(i) for i in n.inputs],
                "at": n.attrs, "mod": n.module, "cl": n.cluster, "src": n.source, "fz": 1 if n.frozen else 0,
                "g": n.group, "k": n.kind, "res": n.results}
    d.update({k: v for k, v in optional.items() if v})
    return d


def graph_data(obj: Any, stage: str | None = None) -> dict[str, Any]:
    """The JSON the page reads: a table of nodes shared by all stages, and per stage its node list."""
    stages = [("graph", obj)] if isinstance(obj, Graph) else list(obj.stages)
    ms = {r.name: round(r.ms, 3) for r in getattr(obj, "report", [])}
    table: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    modules: dict[str, list[str]] = {"": []}
    out_stages = []
    for name, g in stages:
        view = build_view(g, None if isinstance(obj, Graph) else obj)
        ids = []
        for n in view.nodes:
            d = _node_dict(n)
            key = json.dumps(d, sort_keys=True)
            if key not in index:
                index[key] = len(table)
                table.append(d)
            ids.append(index[key])
        for path, children in view.modules.items():
            known = modules.setdefault(path, [])
            known.extend(c for c in children if c not in known)
        out_stages.append({"name": name, "nodes": ids, "ops": len(g.nodes), "ms": ms.get(name)})
    initial = len(stages) - 1
    if stage not in (None, "optimized", "final"):
        stage_graph(obj, stage)  # raises a clear error for an unknown stage
        initial = next(i for i, (n, _) in enumerate(stages) if n == stage)
    name = stages[-1][1].name
    return {"name": name, "stages": out_stages, "initial": initial, "nodes": table, "modules": modules,
            "collapseAbove": COLLAPSE_ABOVE, "optimizerModule": OPTIMIZER}


def to_html(obj: Any, stage: str | None = None) -> str:
    """One HTML page showing obj (a Lowered or a Graph), opened on `stage` (default: the optimized graph)."""
    d = graph_data(obj, stage)
    data = json.dumps(d, separators=(",", ":"))
    data = data.replace("<", "\\u003c")  # nothing in the data can close the script tag
    css = (_HERE / "viewer.css").read_text()
    js = (_HERE / "viewer.js").read_text()
    title = html.escape(f"graphc: {d['name']}")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
            f"<style>\n{css}</style>\n</head>\n<body>\n{_BODY}"
            f'<script type="application/json" id="graph-data">{data}</script>\n'
            f"<script>\n{js}</script>\n</body>\n</html>\n")


_BODY = """<div id="app">
<header>
  <strong id="title"></strong> <span id="stage-name"></span> <span id="counts"></span>
  <span class="tools">
    <input id="search" placeholder="find node (Enter)" size="18">
    <button id="fit">Fit</button><button id="expand-all">Expand all</button>
    <button id="collapse-all">Collapse all</button>
  </span>
</header>
<main>
  <svg id="canvas"><defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" markerHeight="7"
    orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#6b7280"/></marker></defs><g id="viewport"></g></svg>
  <aside>
    <section><h3>Node</h3><div id="details"><p class="hint">Click a node for its op, attributes, shapes,
      module and source line. Click a module box to expand it, a module's header to collapse it.
      Drag to pan, wheel to zoom.</p></div></section>
    <section><h3>Before / after passes</h3><table id="stages"></table></section>
    <section><h3>Modules</h3><div id="tree"></div></section>
    <section><h3>Legend</h3><div id="legend"></div></section>
  </aside>
</main>
</div>
"""
