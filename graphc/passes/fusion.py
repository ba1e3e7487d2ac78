"""Fusion for the numpy backend: elementwise chains (and a trailing reduction) become fused groups.

A fused group is a set of nodes marked meta["group"] = "f<k>" and placed next to each other in
the graph, rather than one opaque node: every view of the graph (text, JSON, DOT/HTML, the
generated code) still shows each op, the op table needs no "fused" entry (so autodiff, the JAX
backend and the artifact format know nothing new), and the group is a scheduling unit that the
numpy code generator and memory plan evaluate in ONE buffer with in-place ufuncs (`out=`).

Passes here (each Graph -> Graph, verified by the pass manager, tested for equivalence):
  * sink_broadcasts: an elementwise op on expanded operands is computed before the expand, at the
    small shape (`expand(s) / n` -> `expand(s / n)`); `sum(neg(x))` -> `neg(sum(x))`. Both take
    full-size passes out of every BatchNorm backward.
  * fold_batchnorm: in eval mode (statistics that do not depend on the conv output) the
    per-channel affine after a convolution is folded into its weights, when that moves fewer bytes.
  * fuse: the grouping. A node joins the group of one of its producers, the one whose value it
    reads carries the most bytes (the memory traffic saved by keeping it inside), if all its other
    inputs exist before the group starts. The group is emitted where its first member was, so the
    result stays in topological order: fusion can never create a cycle. A reduction may end a group
    but nothing inside the group may read it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..ir.graph import Graph, Node, Value
from ..ir.rewrite import rewrite
from ..ir.types import TensorType
from ..ops import OPS
from ..ops.registry import broadcast_shapes

TRAILING_REDUCTIONS = frozenset({"sum", "mean", "amax", "amin"})


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _elementwise(node: Node) -> bool:
    return OPS[node.op].kind == "elementwise" and len(node.outputs) == 1


# ---- pre-fusion rewrites --------------------------------------------------------------------------

def sink_broadcasts(g: Graph) -> Graph:
    """Compute elementwise ops on expanded operands at the small shape, then expand; move a negation
    out of a sum. Both leave values and dtypes unchanged and remove full-size passes."""
    users: dict[int, int] = {}
    for n in g.nodes:
        for v in n.inputs:
            users[id(v)] = users.get(id(v), 0) + 1

    def visit(node: Node, ins: list[Value], new: Graph) -> list[Value] | None:
        out = node.outputs[0] if node.outputs else None
        if _elementwise(node) and any(v.producer is not None and v.producer.op == "expand" for v in ins):
            small = [v.producer.inputs[0] if v.producer is not None and v.producer.op == "expand" else v for v in ins]
            try:
                shape = broadcast_shapes(*(v.type.shape for v in small))
                types = OPS[node.op].infer_types([v.type for v in small], node.attrs)
            except Exception:  # noqa: BLE001  (the op rejects the small operands: leave it as it is)
                return None
            if _numel(shape) >= out.type.numel or len(types) != 1 or len(shape) > out.type.ndim:
                return None
            inner = new.add_node(node.op, small, node.attrs, types, node.meta, names=[out.name + "_small"])
            return new.add_node("expand", inner.outputs, {"shape": out.type.shape}, [out.type], node.meta,
                                names=[out.name]).outputs
        if node.op == "sum" and ins[0].producer is not None and ins[0].producer.op == "neg" \
                and users.get(id(node.inputs[0])) == 1:
            inner = new.add_node("sum", ins[0].producer.inputs, node.attrs, [out.type], node.meta,
                                 names=[out.name + "_pos"])
            return new.add_node("neg", inner.outputs, {}, [out.type], node.meta, names=[out.name]).outputs
        return None

    return rewrite(g, visit)


def _channel_const(v: Value, conv: Node, c: int) -> bool:
    """v is a per-channel (or single) value for an (N, C, H, W) conv output that does not depend on the conv."""
    t = v.type
    if t.numel != 1 and not (t.ndim == 4 and t.shape == (1, c, 1, 1)) and not (t.ndim == 3 and t.shape == (c, 1, 1)):
        return False
    stack, seen = [v], set()
    while stack:  # the operand's ancestry (a few small nodes: reshapes of statistics, rsqrt(var + eps))
        u = stack.pop()
        p = u.producer
        if p is None or id(p) in seen:
            continue
        if p is conv:
            return False
        seen.add(id(p))
        stack.extend(p.inputs)
    return True


def fold_batchnorm(g: Graph) -> Graph:
    """conv2d followed by a per-channel affine chain (eval-mode BatchNorm: sub mean, mul rsqrt(var+eps),
    mul weight, add bias) -> conv2d with scaled weights plus one per-channel bias add.

    Applies only when the chain's operands do not depend on the conv output (running statistics,
    not batch statistics), every intermediate has a single user, and folding moves fewer bytes: the
    weights are rescaled on every call (they are inputs, not constants), the activations are not."""
    users = g.users()
    outputs = {id(v) for v in g.outputs}
    plans: dict[int, tuple[Node, list[tuple[Node, Value]]]] = {}  # id(last chain node) -> (conv, [(node, operand)])
    skip: set[int] = set()
    for conv in g.nodes:
        if conv.op != "conv2d" or conv.attrs.get("groups", 1) != 1:
            continue
        o = conv.outputs[0]
        c = o.type.shape[1]
        chain: list[tuple[Node, Value]] = []
        v = o
        while True:
            us = users.get(id(v), [])
            if len(us) != 1 or id(v) in outputs:
                break
            u = us[0]
            if u.op not in ("add", "sub", "mul") or u.outputs[0].type != o.type:
                break
            other = [w for w in u.inputs if w is not v]
            if len(other) != 1 or (u.op == "sub" and u.inputs[0] is not v):
                break
            if not _channel_const(other[0], conv, c):
                break
            chain.append((u, other[0]))
            v = u.outputs[0]
        if len(chain) < 2:
            continue
        act, wt = o.type.numel, conv.inputs[1].type.numel
        if (len(chain) - 1) * act <= wt:
            continue
        plans[id(chain[-1][0])] = (conv, chain)
        skip.add(id(conv))
        skip.update(id(n) for n, _ in chain[:-1])

    if not plans:
        return g

    def visit(node: Node, ins: list[Value], new: Graph) -> list[Value] | None:
        if id(node) in skip:
            return []  # emitted with the chain's last node
        if id(node) not in plans:
            return None
        conv, chain = plans[id(node)]
        m = visit.m  # type: ignore[attr-defined]
        o = conv.outputs[0]
        c, dt = o.type.shape[1], o.type.dtype
        ctype = TensorType((1, c, 1, 1), dt)
        scale: Value | None = None
        bias: Value | None = None
        for n, old in chain:
            operand = _to_channel(new, m[id(old)], ctype, n.meta)
            if n.op == "mul":
                scale = operand if scale is None else _bin(new, "mul", scale, operand, n.meta)
                bias = None if bias is None else _bin(new, "mul", bias, operand, n.meta)
            else:
                term = operand if n.op == "add" else _un(new, "neg", operand, n.meta)
                bias = term if bias is None else _bin(new, "add", bias, term, n.meta)
        x, w = m[id(conv.inputs[0])], m[id(conv.inputs[1])]
        if scale is not None:
            ws = new.add_node("reshape", [scale], {"shape": (c, 1, 1, 1)}, [TensorType((c, 1, 1, 1), dt)],
                              conv.meta, names=[o.name + "_scale"]).outputs[0]
            w = new.add_node("mul", [w, ws], {}, [w.type], conv.meta, names=[o.name + "_folded_weight"]).outputs[0]
        y = new.add_node("conv2d", [x, w], conv.attrs, [o.type], conv.meta, names=[o.name]).outputs[0]
        if bias is not None:
            y = new.add_node("add", [y, bias], {}, [o.type], node.meta, names=[node.outputs[0].name]).outputs[0]
        return [y]

    return _rewrite_with_map(g, visit)


def _rewrite_with_map(g: Graph, visit: Callable) -> Graph:
    """rewrite(), with the old-value -> new-value map visible to visit (as visit.m)."""
    new = Graph(g.name)
    new.meta = dict(g.meta)
    m: dict[int, Value] = {}
    visit.m = m  # type: ignore[attr-defined]
    from ..ir.rewrite import copy_node

    for v in g.inputs:
        m[id(v)] = new.add_input(v.name, v.type)
    for node in g.nodes:
        ins = [m[id(v)] for v in node.inputs if id(v) in m]
        repl = visit(node, ins, new)
        if repl is None:
            copy_node(new, node, [m[id(v)] for v in node.inputs], m)
        else:
            for old, v in zip(node.outputs, repl):
                m[id(old)] = v
    new.outputs = [m[id(v)] for v in g.outputs]
    return new


def _bin(new: Graph, op: str, a: Value, b: Value, meta: dict) -> Value:
    t = OPS[op].infer_types([a.type, b.type], {})[0]
    return new.add_node(op, [a, b], {}, [t], meta, names=[f"{a.name}_{op}"]).outputs[0]


def _un(new: Graph, op: str, a: Value, meta: dict) -> Value:
    return new.add_node(op, [a], {}, [a.type], meta, names=[f"{a.name}_{op}"]).outputs[0]


def _to_channel(new: Graph, v: Value, ctype: TensorType, meta: dict) -> Value:
    """A per-channel (or scalar) operand as a (1, C, 1, 1) tensor."""
    if v.type.shape == ctype.shape:
        return v
    if v.type.numel == 1:
        return new.add_node("expand", [v], {"shape": ctype.shape}, [ctype], meta, names=[v.name + "_c"]).outputs[0]
    return new.add_node("reshape", [v], {"shape": ctype.shape}, [ctype], meta, names=[v.name + "_c"]).outputs[0]


# ---- grouping ----------------------------------------------------------------------------------------

class _Group:
    __slots__ = ("start", "members", "saved")

    def __init__(self, start: int, first: Node):
        self.start = start
        self.members = [first]
        self.saved = 0


def _fusible(node: Node) -> bool:
    return _elementwise(node) or (node.op in TRAILING_REDUCTIONS and len(node.outputs) == 1)


def _constant(node: Node) -> bool:
    """A node without inputs (full, iota): it can move up to wherever a group needs it."""
    return not node.inputs and OPS[node.op].kind == "factory"


def find_groups(g: Graph) -> list[list[Node]]:
    """Groups of two or more nodes, each in graph order (see the module docstring for the rule)."""
    pos = {id(n): i for i, n in enumerate(g.nodes)}
    group_of: dict[int, _Group] = {}
    groups: list[_Group] = []
    for i, node in enumerate(g.nodes):
        if not _fusible(node):
            continue
        score: dict[int, int] = {}
        cands: dict[int, _Group] = {}
        big = max(v.type.nbytes for v in node.outputs)
        for v in node.inputs:
            p = v.producer
            # joining through a small broadcast operand (a scalar, a per-channel statistic) keeps nothing
            # inside the group: such a node starts a group of its own instead
            if p is None or id(p) not in group_of or OPS[p.op].kind == "reduction" or 2 * v.type.nbytes < big:
                continue
            grp = group_of[id(p)]
            cands[id(grp)] = grp
            score[id(grp)] = score.get(id(grp), 0) + v.type.nbytes
        chosen = None
        for gid in sorted(score, key=lambda k: -score[k]):
            grp = cands[gid]
            if all(v.producer is None or pos[id(v.producer)] < grp.start or _constant(v.producer)
                   or (group_of.get(id(v.producer)) is grp and OPS[v.producer.op].kind != "reduction")
                   for v in node.inputs):
                chosen = grp
                break
        if chosen is None:
            chosen = _Group(i, node)
            groups.append(chosen)
        else:
            chosen.members.append(node)
            chosen.saved += score[id(chosen)]
        group_of[id(node)] = chosen
    return [grp.members for grp in groups if len(grp.members) > 1]


def group_graph(g: Graph) -> Graph:
    """Mark fused groups (meta["group"]) and place each group's members together at its first member."""
    groups = find_groups(g)
    if not groups:
        return g
    first: dict[int, list[Node]] = {id(m[0]): m for m in groups}
    later = {id(n) for m in groups for n in m[1:]}
    order: list[Node] = []
    placed: set[int] = set()
    for node in g.nodes:
        if id(node) in first:
            for member in first[id(node)]:  # constants a member reads move up in front of the group
                for v in member.inputs:
                    if v.producer is not None and _constant(v.producer) and id(v.producer) not in placed:
                        placed.add(id(v.producer))
                        order.append(v.producer)
            order.extend(first[id(node)])
        elif id(node) not in later and id(node) not in placed:
            placed.add(id(node))
            order.append(node)
    label = {id(n): f"f{k}" for k, m in enumerate(groups) for n in m}
    new = Graph(g.name)
    new.meta = dict(g.meta)
    m: dict[int, Value] = {}
    from ..ir.rewrite import copy_node

    for v in g.inputs:
        m[id(v)] = new.add_input(v.name, v.type)
    for node in order:
        nn = copy_node(new, node, [m[id(v)] for v in node.inputs], m)
        nn.meta.pop("group", None)
        if id(node) in label:
            nn.meta["group"] = label[id(node)]
    new.outputs = [m[id(v)] for v in g.outputs]
    return new


def fused_groups(g: Graph) -> list[dict[str, Any]]:
    """Each fused group of g: its label, member ops, and the bytes that stay inside it (values that no
    node outside the group reads and that are not graph outputs: never a separate allocation)."""
    users = g.users()
    outputs = {id(v) for v in g.outputs}
    by: dict[str, list[Node]] = {}
    for n in g.nodes:
        if n.meta.get("group") is not None:
            by.setdefault(str(n.meta["group"]), []).append(n)
    out = []
    for label, members in by.items():
        ids = {id(n) for n in members}
        inside = [v for n in members for v in n.outputs
                  if id(v) not in outputs and users.get(id(v)) and all(id(u) in ids for u in users[id(v)])]
        out.append({"group": label, "ops": [n.op for n in members], "values": [n.outputs[0].name for n in members],
                    "internal_bytes": sum(v.type.nbytes for v in inside),
                    "shape": max((n.outputs[0].type for n in members), key=lambda t: t.numel).shape})
    return out


def describe_groups(g: Graph, limit: int = 40) -> list[str]:
    """Readable lines for as_text(): one per fused group, largest savings first."""
    groups = sorted(fused_groups(g), key=lambda d: -d["internal_bytes"])
    if not groups:
        return []
    total = sum(d["internal_bytes"] for d in groups)
    lines = [f"# fusion: {len(groups)} fused groups, {sum(len(d['ops']) for d in groups)} ops, "
             f"{total / 2**20:.1f} MiB of intermediates never materialized separately"]
    for d in groups[:limit]:
        lines.append(f"#   {d['group']}: {' -> '.join(d['ops'])} over {list(d['shape'])} "
                     f"({d['internal_bytes'] / 2**10:.0f} KiB inside; %{d['values'][0]} .. %{d['values'][-1]})")
    if len(groups) > limit:
        lines.append(f"#   ... {len(groups) - limit} more")
    return lines


def _dce(g: Graph) -> Graph:
    from .simplify import dce

    return dce(g)


def fuse(g: Graph) -> Graph:
    """The whole numpy-backend fusion: rewrites (and the dead code they leave), then grouping."""
    return group_graph(_dce(sink_broadcasts(fold_batchnorm(g))))


#: (name, pass) pairs for passes.manager.run_passes on the numpy backend, after the simplification pipeline
NUMPY_PIPELINE: tuple[tuple[str, Callable[[Graph], Graph]], ...] = (
    ("fold_batchnorm", fold_batchnorm), ("sink_broadcasts", sink_broadcasts), ("dce", _dce), ("fusion", group_graph))
