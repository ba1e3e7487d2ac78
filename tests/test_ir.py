"""The IR on its own (graphc/ir): graphs built by hand from the op table's type rules, verify(), the text
printer (golden text), networkx export, the JSON schema, tensor types and dtype promotion."""
from __future__ import annotations

import json

import numpy as np
import pytest

from graphc.ir import (
    SCHEMA_VERSION,
    Graph,
    GraphError,
    TensorType,
    Value,
    bool_,
    dtype_of,
    float32,
    float64,
    format_graph,
    graph_from_json,
    graph_to_json,
    int32,
    int64,
    promote,
)
from graphc.ops import OPS

F32 = float32


def _node(g: Graph, op: str, ins: list[Value], meta: dict | None = None, **attrs):
    """A node whose output types come from the op table's rule."""
    return g.add_node(op, ins, attrs, OPS[op].infer_types([v.type for v in ins], attrs), meta)


def _net() -> Graph:
    g = Graph("net")
    x = g.add_input("x", TensorType((1, 3, 64, 64), F32))
    w = g.add_input("w", TensorType((8, 3, 3, 3), F32))
    c = _node(g, "conv2d", [x, w], {"source": "model.py:12", "module": "conv1", "phase": "forward"},
              stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
    r = _node(g, "relu", c.outputs)
    s = _node(g, "sum", r.outputs, axes=(1, 2, 3), keepdim=False)
    m = _node(g, "max_dim", r.outputs, axis=1, keepdim=True)
    i = _node(g, "index", r.outputs, index=(("i", 0), ("s", 0, 8, 2), ("n",), ("s", 0, 64, 1), ("s", 63, 64, 1)))
    cl = _node(g, "clamp", s.outputs, {"phase": "backward"}, min=0.0, max=float("inf"))
    g.outputs = [cl.outputs[0], m.outputs[1], i.outputs[0]]
    return g


NET_TEXT = """\
graph net(%x: f32[1,3,64,64], %w: f32[8,3,3,3]):
  %conv2d: f32[1,8,64,64] = conv2d(%x, %w, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)  \
# forward [conv1] model.py:12
  %relu: f32[1,8,64,64] = relu(%conv2d)
  %sum: f32[1] = sum(%relu, axes=(1, 2, 3), keepdim=False)
  %max_dim_out0: f32[1,1,64,64], %max_dim_out1: i64[1,1,64,64] = max_dim(%relu, axis=1, keepdim=True)
  %index: f32[4,1,64,1] = index(%relu, index=(('i', 0), ('s', 0, 8, 2), ('n',), ('s', 0, 64, 1), ('s', 63, 64, 1)))
  %clamp: f32[1] = clamp(%sum, min=0.0, max=inf)  # backward
  return (%clamp, %max_dim_out1, %index)"""


# ---- verify --------------------------------------------------------------------------------------------

def test_good_graph_verifies():
    g = _net()
    assert g.verify() is g
    assert len(g) == 6
    assert [v.name for v in g.inputs] == ["x", "w"]


def test_verify_rejects_use_before_def():
    g = _net()
    g.nodes[0], g.nodes[1] = g.nodes[1], g.nodes[0]  # relu now reads conv2d's output before conv2d runs
    with pytest.raises(GraphError, match="%conv2d used by relu before it is defined"):
        g.verify()


def test_verify_rejects_a_value_from_another_graph():
    other = Graph("other")
    stray = other.add_input("stray", TensorType((2,), F32))
    g = Graph("g")
    x = g.add_input("x", TensorType((2,), F32))
    _node(g, "add", [x, stray])
    with pytest.raises(GraphError, match="%stray used by add before it is defined"):
        g.verify()


def test_verify_rejects_wrong_output_type():
    g = Graph("g")
    x = g.add_input("x", TensorType((2, 3), F32))
    n = g.add_node("sum", [x], {"axes": (1,), "keepdim": False}, [TensorType((3,), F32)])
    g.outputs = n.outputs
    with pytest.raises(GraphError, match=r"sum outputs f32\[3\] but its type rule gives f32\[2\]"):
        g.verify()
    g2 = Graph("g2")
    x = g2.add_input("x", TensorType((2,), F32))
    g2.add_node("neg", [x], {}, [TensorType((2,), float64)])
    with pytest.raises(GraphError, match=r"f64\[2\] but its type rule gives f32\[2\]"):
        g2.verify()


def test_verify_rejects_ill_typed_inputs():
    g = Graph("g")
    a = g.add_input("a", TensorType((2, 3), F32))
    b = g.add_input("b", TensorType((4, 5), F32))
    g.add_node("matmul", [a, b], {}, [TensorType((2, 5), F32)])
    with pytest.raises(GraphError, match=r"matmul rejects its inputs or attrs: .*\(2x3 and 4x5\)"):
        g.verify()
    g2 = Graph("g2")
    x = g2.add_input("x", TensorType((2, 3), F32))
    g2.add_node("sum", [x], {"axis": 1}, [TensorType((2,), F32)])  # the attr is called axes
    with pytest.raises(GraphError, match="sum rejects its inputs or attrs"):
        g2.verify()


def test_verify_rejects_unknown_op():
    g = Graph("g")
    x = g.add_input("x", TensorType((2,), F32))
    g.add_node("frobnicate", [x], {}, [TensorType((2,), F32)])
    with pytest.raises(GraphError, match="unknown op 'frobnicate'"):
        g.verify()


def test_verify_rejects_duplicate_names():
    g = Graph("g")
    x = g.add_input("x", TensorType((2,), F32))
    g.inputs.append(Value("x", TensorType((2,), F32)))
    with pytest.raises(GraphError, match="%x defined twice"):
        g.verify()
    g = Graph("g")
    x = g.add_input("x", TensorType((2,), F32))
    n = _node(g, "neg", [x])
    n.outputs[0].name = "x"
    with pytest.raises(GraphError, match="%x defined twice"):
        g.verify()


def test_fresh_names_never_collide():
    g = Graph("g")
    x = g.add_input("relu", TensorType((2,), F32))
    names = [x.name] + [_node(g, "relu", [x]).outputs[0].name for _ in range(3)]
    names.append(g.add_input("relu_1", TensorType((2,), F32)).name)
    assert len(set(names)) == len(names)
    assert names[:4] == ["relu", "relu_1", "relu_2", "relu_3"]
    g.outputs = [g.inputs[0]]
    g.verify()


def test_verify_rejects_dangling_outputs():
    g = _net()
    g.outputs = [Value("ghost", TensorType((1,), F32))]
    with pytest.raises(GraphError, match="output %ghost is not defined in the graph"):
        g.verify()


def test_verify_rejects_broken_producer_links():
    g = Graph("g")
    x = g.add_input("x", TensorType((2,), F32))
    n = _node(g, "neg", [x])
    n.outputs[0].producer = None
    with pytest.raises(GraphError, match="does not point back at its producer"):
        g.verify()
    g = Graph("g")
    x = g.add_input("x", TensorType((2,), F32))
    n = _node(g, "neg", [x])
    x.producer = n
    with pytest.raises(GraphError, match="input %x has a producer"):
        g.verify()


# ---- text ------------------------------------------------------------------------------------------------

def test_printer_golden_text():
    g = _net()
    assert str(g) == NET_TEXT
    assert format_graph(g) == NET_TEXT
    lines = str(g).splitlines()
    assert len(lines) == len(g.nodes) + 2  # header, one line per node, return


def test_printer_without_meta_and_single_output():
    g = Graph("f")
    x = g.add_input("x", TensorType((), float64))
    n = _node(g, "exp", [x], {"source": "a.py:1", "phase": "forward"})
    g.outputs = n.outputs
    assert format_graph(g, show_meta=False) == "graph f(%x: f64[]):\n  %exp: f64[] = exp(%x)\n  return (%exp,)"
    assert "# forward a.py:1" in str(g)


def test_value_and_node_repr():
    g = _net()
    assert repr(g.inputs[0]) == "%x: f32[1,3,64,64]"
    assert repr(g.nodes[3]) == "Node(max_dim, ['max_dim_out0', 'max_dim_out1'])"


# ---- networkx ---------------------------------------------------------------------------------------------

def test_to_networkx_counts():
    pytest.importorskip("networkx")
    g = _net()
    nxg = g.to_networkx()
    assert nxg.number_of_nodes() == len(g.inputs) + len(g.nodes)
    assert nxg.number_of_edges() == sum(len(n.inputs) for n in g.nodes)
    assert nxg.nodes["x"]["op"] == "input" and nxg.nodes["x"]["type"] == "f32[1,3,64,64]"
    assert nxg.nodes["conv2d"]["op"] == "conv2d" and nxg.nodes["conv2d"]["source"] == "model.py:12"
    assert set(nxg.successors("relu")) == {"sum", "max_dim_out0", "index"}
    import networkx as nx

    assert nx.is_directed_acyclic_graph(nxg)
    assert list(nx.topological_sort(nxg))[-1] in {"clamp", "max_dim_out0", "index"}


def test_to_networkx_counts_repeated_uses():
    g = Graph("sq")
    x = g.add_input("x", TensorType((2,), F32))
    n = _node(g, "mul", [x, x])
    g.outputs = n.outputs
    nxg = g.to_networkx()
    assert nxg.number_of_nodes() == 2 and nxg.number_of_edges() == 2


# ---- JSON ------------------------------------------------------------------------------------------------

def test_json_round_trip():
    g = _net()
    text = graph_to_json(g)
    d = json.loads(text)
    assert d["schema"] == SCHEMA_VERSION and d["name"] == "net"
    g2 = graph_from_json(text)
    assert str(g2) == str(g) == NET_TEXT
    g2.verify()
    assert g2.nodes[0].attrs["stride"] == (1, 1)
    assert g2.nodes[4].attrs["index"][2] == ("n",)
    assert g2.nodes[5].attrs["max"] == float("inf")
    assert g2.nodes[0].meta == {"source": "model.py:12", "module": "conv1", "phase": "forward"}
    assert graph_to_json(g2) == text
    assert graph_to_json(g2, indent=None) == json.dumps(d)


def test_json_round_trip_keeps_graph_meta_and_names_fresh():
    g = _net()
    g.meta["autodiff"] = {"forward_ops": 3}
    g2 = graph_from_json(graph_to_json(g))
    assert g2.meta == {"autodiff": {"forward_ops": 3}}
    # names loaded from JSON are taken: new nodes get fresh ones
    n = _node(g2, "relu", [g2.inputs[0]])
    assert n.outputs[0].name == "relu_1"
    g2.verify()


def test_json_wrong_schema_raises():
    d = json.loads(graph_to_json(_net()))
    d["schema"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match=f"schema {SCHEMA_VERSION + 1}"):
        graph_from_json(json.dumps(d))
    del d["schema"]
    with pytest.raises(ValueError, match="schema None"):
        graph_from_json(json.dumps(d))


def test_json_nan_attr_round_trip():
    g = Graph("g")
    x = g.add_input("x", TensorType((2,), F32))
    n = _node(g, "clamp", [x], min=float("-inf"), max=float("nan"))
    g.outputs = n.outputs
    text = graph_to_json(g)
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    a = graph_from_json(text).nodes[0].attrs
    assert a["min"] == float("-inf") and a["max"] != a["max"]


# ---- types --------------------------------------------------------------------------------------------

def test_tensor_type_str_and_properties():
    t = TensorType((1, 3, 64, 64), F32)
    assert str(t) == "f32[1,3,64,64]"
    assert t.ndim == 4 and t.numel == 3 * 64 * 64 and t.nbytes == 4 * 3 * 64 * 64
    assert str(TensorType((), float64)) == "f64[]"
    assert str(TensorType((2,), bool_)) == "bool[2]"
    assert str(TensorType((0, 5), int64)) == "i64[0,5]"
    assert str(TensorType((7,), int32)) == "i32[7]"
    assert TensorType((2,), F32) == TensorType((2,), F32) and TensorType((2,), F32) != TensorType((2,), float64)
    assert hash(TensorType((2,), F32)) == hash(TensorType((2,), F32))
    assert TensorType((), F32).numel == 1


def test_dtypes():
    assert F32.is_floating_point and float64.is_floating_point
    assert not int64.is_floating_point and not bool_.is_floating_point
    assert (F32.itemsize, float64.itemsize, int32.itemsize, int64.itemsize, bool_.itemsize) == (4, 8, 4, 8, 1)
    assert repr(F32) == "graphc.float32"
    assert dtype_of("float32") is F32 and dtype_of("f64") is float64 and dtype_of(np.dtype("int32")) is int32
    assert dtype_of(np.int64) is int64 and dtype_of(np.bool_) is bool_ and dtype_of(F32) is F32
    assert F32.np == np.float32
    with pytest.raises(TypeError, match="does not support dtype float16"):
        dtype_of(np.float16)


@pytest.mark.parametrize("a,b,out", [
    (F32, F32, F32), (F32, float64, float64), (int64, F32, F32), (int32, float64, float64), (int32, int64, int64),
    (bool_, int32, int32), (bool_, F32, F32), (bool_, bool_, bool_), (int64, bool_, int64), (float64, int64, float64),
])
def test_promote(a, b, out):
    assert promote(a, b) == out
    assert promote(b, a) == out


@pytest.mark.torch
def test_promote_matches_torch():
    torch = pytest.importorskip("torch")
    names = ["float32", "float64", "int32", "int64", "bool"]
    for a in names:
        for b in names:
            expect = str(torch.promote_types(getattr(torch, a), getattr(torch, b))).removeprefix("torch.")
            assert promote(dtype_of(a), dtype_of(b)).name == expect, (a, b)


def test_every_op_output_type_comes_from_its_rule():
    """The graphs above are built only from OPS[op].infer_types; the rule refuses bad inputs with ShapeError."""
    from graphc.ops import ShapeError

    with pytest.raises(ShapeError):
        OPS["add"].infer_types([TensorType((2,), F32), TensorType((3,), F32)], {})
    with pytest.raises(ShapeError):
        OPS["add"].infer_types([TensorType((2,), F32), TensorType((2,), float64)], {})
    assert OPS["add"].infer_types([TensorType((2, 1), F32), TensorType((3,), F32)], {}) == [TensorType((2, 3), F32)]
    assert OPS["lt"].infer_types([TensorType((2,), F32), TensorType((2,), F32)], {}) == [TensorType((2,), bool_)]


def test_remembered_type_answers_are_the_rules_answers():
    """infer_types remembers answers per (input types, attrs): a remembered answer must be what the rule says for
    exactly these arguments (1, 1.0 and True are equal keys to a dict, not to a rule), a caller may change the list
    it gets, a rejection raises every time, and unhashable attrs still get an answer."""
    from graphc.ops import ShapeError
    from graphc.ops.registry import OpDef

    calls = []

    def rule(x, *, v, shape=()):
        calls.append(v)
        if v == 0:
            raise ShapeError("v must not be 0")
        kind = type(v[0]) if isinstance(v, tuple) else type(v)
        return [TensorType(x.shape + tuple(shape), {bool: bool_, int: int64, float: float64}[kind])]

    op = OpDef("probe", rule, kind="opaque")
    x = TensorType((2,), F32)
    assert op.infer_types([x], {"v": True}) == [TensorType((2,), bool_)]
    assert op.infer_types([x], {"v": 1}) == [TensorType((2,), int64)]
    assert op.infer_types([x], {"v": 1.0}) == [TensorType((2,), float64)]
    assert op.infer_types([x], {"v": (True,)}) == [TensorType((2,), bool_)]  # inside tuples too
    assert op.infer_types([x], {"v": (1,)}) == [TensorType((2,), int64)]
    got = op.infer_types([x], {"v": 1})
    got.append("changed by the caller")
    n = len(calls)
    assert op.infer_types([x], {"v": 1}) == [TensorType((2,), int64)] and len(calls) == n  # remembered, unchanged
    assert op.infer_types([TensorType((3,), F32)], {"v": 1}) == [TensorType((3,), int64)]  # other types: asked
    for _ in range(2):
        with pytest.raises(ShapeError, match="must not be 0"):
            op.infer_types([x], {"v": 0})
    assert calls.count(0) == 2
    assert op.infer_types([x], {"v": 2, "shape": [4]}) == [TensorType((2, 4), int64)]  # a list attr: no key
