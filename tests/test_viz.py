"""Graph rendering: the shared view model, text, JSON, DOT, SVG, HTML, and dumps (dump=, GRAPHC_DUMP)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
from vizsteps import lenet_lowered, lenet_step

import graphc as gc
from graphc.ir.serialize import graph_from_json, graph_to_json
from graphc.viz import render
from graphc.viz.model import OPTIMIZER, build_view


@pytest.fixture(scope="module")
def low():
    return lenet_lowered()


def _graph_json(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="graph-data">(.*?)</script>', html, re.S)
    assert m, "the page embeds its graph as JSON"
    return json.loads(m.group(1))


def test_view_phases_modules_and_outputs(low):
    view = build_view(low.graph, low)
    phases = {n.phase for n in view.nodes}
    assert {"forward", "backward", "optimizer", "input"} <= phases
    assert {"conv1", "conv2", "fc1", "fc2", "fc3", OPTIMIZER} <= set(view.modules[""])
    conv = next(n for n in view.nodes if n.op == "conv2d")
    assert conv.module == "conv1" and conv.phase == "forward" and "vizsteps.py:" in conv.source
    assert conv.attrs["stride"] == "(1, 1)" and conv.outputs[0][1].startswith("f32[2,6,30,30]")
    assert any(r == "result 0" for n in view.nodes for r in n.results)
    assert any(r.startswith("update ") for n in view.nodes for r in n.results)
    # the update of a parameter is drawn in that parameter's optimizer cluster
    assert any(n.cluster == f"{OPTIMIZER}.fc1.weight" and n.phase == "optimizer" for n in view.nodes)
    assert not any(n.frozen for n in view.nodes)  # everything trains
    ids = {n.id for n in view.nodes}
    assert all(src in ids for src, _, _ in view.edges())


def test_view_frozen_parameters_and_their_region():
    low = lenet_lowered(freeze_conv1=True)
    view = build_view(low.graph, low)
    by_id = {n.id: n for n in view.nodes}
    assert by_id["conv1.weight"].frozen and by_id["conv1.bias"].frozen
    assert not by_id["fc1.weight"].frozen
    conv1 = [n for n in view.nodes if n.module == "conv1" and n.phase == "forward"]
    assert conv1 and all(n.frozen for n in conv1)
    assert not any(n.frozen for n in view.nodes if n.module == "fc1" and n.op != "input")
    assert not any(n.module == "conv1" and n.phase == "backward" for n in view.nodes)  # no backward work at all


def test_view_of_a_bare_graph_and_fused_groups(low):
    g = graph_from_json(graph_to_json(low.graph))
    for n in g.nodes:  # the numpy backend's fusion pass already groups nodes: start from none
        n.meta.pop("group", None)
    g.nodes[0].meta["group"] = "fused_0"
    g.nodes[1].meta["group"] = "fused_0"
    view = build_view(g)
    assert [n.group for n in view.nodes if n.group] == ["fused_0", "fused_0"]
    assert "fused fused_0" in render(g, "dot")
    assert _graph_json(render(g, "html"))["stages"][0]["name"] == "graph"


def test_text(low):
    assert render(low, "text") == low.as_text()
    traced = render(low, "text", stage="traced")
    assert traced.startswith("graph ") and str(low.stages[0][1]) == traced
    with pytest.raises(ValueError, match="no stage 'nope'"):
        render(low, "text", stage="nope")
    with pytest.raises(ValueError, match="unknown dump format"):
        render(low, "pdf")


def test_json_round_trips_to_an_equal_graph(low):
    for stage in ("traced", None):
        text = render(low, "json", stage=stage)
        g = graph_from_json(text).verify()
        assert graph_to_json(g) == text
        assert str(g) == str(low.graph if stage is None else low.stages[0][1])


def _check_dot_structure(dot: str) -> None:
    assert dot.startswith("digraph ") and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    declared = set(re.findall(r'^\s*"((?:[^"\\]|\\.)*)" \[label=', dot, re.M))
    for a, b in re.findall(r'^\s*"((?:[^"\\]|\\.)*)" -> "((?:[^"\\]|\\.)*)"', dot, re.M):
        assert a in declared and b in declared, (a, b)


def test_dot(low, tmp_path):
    dot = render(low, "dot")
    _check_dot_structure(dot)
    assert 'subgraph "cluster_conv1|forward"' in dot and 'subgraph "cluster_fc1|backward"' in dot
    assert "#bbf7d0" in dot  # optimizer colour
    try:
        import pydot  # noqa: F401
    except ImportError:
        pydot = None
    if pydot is not None:
        import networkx as nx

        path = tmp_path / "g.dot"
        path.write_text(dot)
        parsed = nx.nx_pydot.read_dot(str(path))
        assert parsed.number_of_nodes() >= len(low.graph.nodes)
    elif shutil.which("dot"):
        proc = subprocess.run(["dot", "-Tcanon"], input=dot, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr


def test_frozen_nodes_are_faded_in_dot():
    dot = render(lenet_lowered(freeze_conv1=True), "dot")
    line = next(ln for ln in dot.splitlines() if ln.strip().startswith('"conv1.weight" ['))
    assert "#9ca3af" in line  # faded text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot is not installed (apt-get install graphviz)")
def test_svg(low):
    svg = render(low, "svg")
    assert "<svg" in svg and "conv2d" in svg and svg.rstrip().endswith("</svg>")


def test_svg_without_graphviz_says_how_to_install(low, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="Install Graphviz.*apt-get install graphviz"):
        render(low, "svg")


def test_html_is_self_contained_and_embeds_every_stage(low):
    page = render(low, "html")
    assert not re.search(r"https?://|\bsrc=|@import|<link", page), "the page must not load anything"
    data = _graph_json(page)
    assert [s["name"] for s in data["stages"]] == [name for name, _ in low.stages]
    assert data["initial"] == len(low.stages) - 1
    assert [s["ops"] for s in data["stages"]] == [len(g) for _, g in low.stages]
    final = [data["nodes"][i] for i in data["stages"][-1]["nodes"]]
    assert len(final) == len(low.graph.inputs) + len(low.graph.nodes)
    conv = next(n for n in final if n["op"] == "conv2d")
    assert conv["mod"] == "conv1" and conv["ph"] == "forward" and conv["at"]["stride"] == "(1, 1)"
    assert {"conv1", OPTIMIZER} <= set(data["modules"][""])
    assert _graph_json(render(low, "html", stage="traced"))["initial"] == 0


def test_html_renders_the_resnet18_training_step():
    model = gc.models.resnet18(num_classes=10)
    opt = gc.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(x, y):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    low = gc.compile(step).lower(gc.randn(1, 3, 64, 64), gc.randn(1, 10))
    data = _graph_json(render(low, "html"))
    assert len(data["stages"][-1]["nodes"]) > data["collapseAbove"]  # opens with modules collapsed
    assert {"layer1", "layer4", "fc"} <= set(data["modules"][""]) and "layer1.0" in data["modules"]["layer1"]


def test_lowered_dump_writes_each_format(low, tmp_path):
    for fmt in ("text", "json", "dot", "html"):
        path = tmp_path / f"g.{fmt}"
        low.dump(str(path), format=fmt)
        assert path.stat().st_size > 100


def test_compile_dump_writes_every_build(tmp_path):
    step, x, y = lenet_step(dump=str(tmp_path))
    step(x, y)
    step(x, y)  # the momentum buffers now exist: a second build with its own files
    names = sorted(os.listdir(tmp_path))
    assert names == ["step_0.optimized.html", "step_0.traced.html", "step_1.optimized.html", "step_1.traced.html"]
    assert _graph_json((tmp_path / "step_0.traced.html").read_text())["initial"] == 0


def test_graphc_dump_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_DUMP", str(tmp_path))
    monkeypatch.setenv("GRAPHC_DUMP_FORMAT", "text,json")
    monkeypatch.setenv("GRAPHC_DUMP_STAGE", "all")
    f = gc.compile(lambda x, w: (x @ w).relu().sum())
    f(gc.ones(2, 3), gc.ones(3, 4, requires_grad=True))
    names = sorted(os.listdir(tmp_path))
    assert "_lambda__0.00-traced.txt" in names and "_lambda__0.00-traced.json" in names
    assert any(n.endswith("-dce.txt") for n in names)
    monkeypatch.setenv("GRAPHC_DUMP_STAGE", "bogus")
    with pytest.raises(ValueError, match="unknown dump stage 'bogus'"):
        gc.compile(lambda x: x * 2)(gc.ones(2))
