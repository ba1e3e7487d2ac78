"""Simplification passes, each a pure Graph -> Graph function: dead-code elimination,
common-subexpression elimination, constant folding and algebraic identities."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.graph import Graph, Node, Value
from ..ir.rewrite import extract, rewrite
from ..ir.types import TensorType
from ..ops import OPS


def dce(g: Graph) -> Graph:
    """Drop nodes no output depends on (inputs stay: they are the calling convention)."""
    return extract(g, g.inputs, g.outputs)


def _freeze(a: Any) -> Any:
    if isinstance(a, (list, tuple)):
        return tuple(_freeze(x) for x in a)
    if isinstance(a, float) and a != a:
        return "nan"
    return a


def cse(g: Graph) -> Graph:
    """Merge nodes with the same op, inputs and attrs (op equality from attributes, as in PyTensor)."""
    seen: dict[tuple, list[Value]] = {}

    def visit(node: Node, ins: list[Value], new: Graph) -> list[Value] | None:
        if OPS[node.op].kind == "random":
            return None
        key = (node.op, tuple(id(v) for v in ins), tuple(sorted((k, _freeze(a)) for k, a in node.attrs.items())))
        hit = seen.get(key)
        if hit is not None:
            return hit
        from ..ir.rewrite import copy_node

        tmp: dict[int, Value] = {}
        nn = copy_node(new, node, ins, tmp)
        seen[key] = nn.outputs
        return nn.outputs

    return rewrite(g, visit)


def _const(v: Value) -> Any:
    """The scalar value of a `full` node's output, else None."""
    p = v.producer
    return p.attrs["value"] if p is not None and p.op == "full" else None


def fold_constants(g: Graph) -> Graph:
    """Evaluate elementwise ops and views whose inputs are all uniform constants (`full`)."""
    from ..backends.numpy import KERNELS

    def visit(node: Node, ins: list[Value], new: Graph) -> list[Value] | None:
        op = OPS[node.op]
        if not ins or op.kind not in ("elementwise", "view") or node.op == "index" or len(node.outputs) != 1:
            return None
        vals = [_const(v) for v in ins]
        if any(x is None for x in vals):
            return None
        arrays = [np.asarray(x, dtype=v.type.dtype.np) for x, v in zip(vals, ins)]
        attrs = dict(node.attrs)
        if op.kind == "view":  # a uniform tensor stays uniform under any view
            value = arrays[0]
        else:
            value = np.asarray(KERNELS[node.op](*arrays, **attrs))
        out = node.outputs[0]
        nn = new.add_node("full", [], {"shape": out.type.shape, "value": value.item(), "dtype": out.type.dtype.name},
                          [out.type], node.meta, names=[out.name])
        return nn.outputs

    return rewrite(g, visit)


def _transpose_2d(v: Value, new: Graph, meta: dict) -> Value:
    """v.T in new: the matrix v is a transpose of, or a permute node."""
    p = v.producer
    if p is not None and p.op == "permute" and tuple(p.attrs["perm"]) == (1, 0):
        return p.inputs[0]
    rows, cols = v.type.shape
    return new.add_node("permute", [v], {"perm": (1, 0)}, [TensorType((cols, rows), v.type.dtype)], meta).outputs[0]


def algebraic(g: Graph) -> Graph:
    """x*1, x+0, x-0, x/1, x**1, neg(neg x), double permute, reshape of reshape, no-op reshape/expand/cast, and the
    transpose of a 2-d matmul nothing else reads as the matmul of the transposes: (a @ b).T = b.T @ a.T.

    The last one is nn.Linear's weight gradient, (x.T @ g).T: computed as g.T @ x (torch's own formula) it comes
    out in the weight's layout, so the step neither copies a transposed view into .grad nor keeps a second
    buffer for it (the kernel can write it into the old .grad: graphc/passes/memory.py)."""
    readers = g.users()
    returned = {id(v) for v in g.outputs}

    def same_type(v: Value, node: Node) -> bool:
        return v.type == node.outputs[0].type

    def visit(node: Node, ins: list[Value], new: Graph) -> list[Value] | None:
        op = node.op
        if op in ("mul", "add", "sub", "div"):
            a, b = ins
            unit = 1 if op in ("mul", "div") else 0
            if _const(b) == unit and same_type(a, node):
                return [a]
            if op in ("mul", "add") and _const(a) == unit and same_type(b, node):
                return [b]
        if op == "pow" and _const(ins[1]) == 1 and same_type(ins[0], node):
            return [ins[0]]
        if op in ("reshape", "expand") and ins[0].type == node.outputs[0].type:
            return [ins[0]]
        if op == "cast" and ins[0].type == node.outputs[0].type:
            return [ins[0]]
        p = ins[0].producer if ins else None
        if p is None:
            return None
        if op == "neg" and p.op == "neg":
            return [p.inputs[0]]
        if op == "reshape" and p.op == "reshape":
            if p.inputs[0].type.shape == node.attrs["shape"]:
                return [p.inputs[0]]
            return new.add_node("reshape", [p.inputs[0]], node.attrs, [node.outputs[0].type], node.meta,
                                names=[node.outputs[0].name]).outputs
        if (op == "permute" and p.op == "matmul" and tuple(node.attrs["perm"]) == (1, 0)
                and all(v.type.ndim == 2 for v in p.inputs) and id(node.inputs[0]) not in returned
                and len(readers[id(node.inputs[0])]) == 1):
            a, b = p.inputs
            return new.add_node("matmul", [_transpose_2d(b, new, node.meta), _transpose_2d(a, new, node.meta)], {},
                                [node.outputs[0].type], node.meta).outputs
        if op == "permute" and p.op == "permute":
            inner, outer = p.attrs["perm"], node.attrs["perm"]
            perm = tuple(inner[i] for i in outer)
            if perm == tuple(range(len(perm))):
                return [p.inputs[0]]
            return new.add_node("permute", [p.inputs[0]], {"perm": perm}, [node.outputs[0].type], node.meta,
                                names=[node.outputs[0].name]).outputs
        return None

    return rewrite(g, visit)


def _axes(node: Node) -> tuple:
    return tuple(node.attrs["axes"])


def centered_variance(g: Graph) -> Graph:
    """var(x) as sum((x - mean(x))^2) / (n - correction) over the centered x the graph computes anyway.

    A BatchNorm in training computes mean(x), var(x) and x - mean(x); the var kernel centers x again by itself
    (a mean, a full-size subtraction and its buffer). Written over the graph's own x - mean(x), which cse then
    merges with the existing one, var costs one square and one sum: at ResNet-18's batch 16, 20 variances take
    2.7 ms instead of 6.5. The numpy result is the same bits (the var kernel takes the same mean, subtraction,
    square, sum and division, in that order). Only where the graph has that subtraction: elsewhere var stays one
    node."""
    centered = set()
    for n in g.nodes:
        if n.op == "sub" and n.inputs[1].producer is not None:
            m = n.inputs[1].producer
            if m.op == "mean" and m.attrs.get("keepdim") and m.inputs[0] is n.inputs[0]:
                centered.add((id(n.inputs[0]), _axes(m)))
    if not centered:
        return g

    def visit(node: Node, ins: list[Value], new: Graph) -> list[Value] | None:
        if node.op != "var" or (id(node.inputs[0]), _axes(node)) not in centered:
            return None
        x, out, meta = ins[0], node.outputs[0], node.meta
        if not x.type.dtype.is_floating_point:
            return None
        axes, keepdim = _axes(node), bool(node.attrs["keepdim"])
        count = 1
        for a in axes:
            count *= x.type.shape[a]
        full_t = TensorType(tuple(1 if i in axes else d for i, d in enumerate(x.type.shape)), x.type.dtype)
        mean = new.add_node("mean", [x], {"axes": axes, "keepdim": True}, [full_t], meta).outputs[0]
        c = new.add_node("sub", [x, mean], {}, [x.type], meta).outputs[0]
        sq = new.add_node("mul", [c, c], {}, [x.type], meta).outputs[0]
        total = new.add_node("sum", [sq], {"axes": axes, "keepdim": keepdim}, [out.type], meta).outputs[0]
        n = new.add_node("full", [], {"shape": (), "value": float(max(count - node.attrs["correction"], 0)),
                                      "dtype": x.type.dtype.name}, [TensorType((), x.type.dtype)], meta).outputs[0]
        return new.add_node("div", [total, n], {}, [out.type], meta, names=[out.name]).outputs

    return rewrite(g, visit)


_POOLS = ("max_pool2d", "max_pool2d_with_indices")


def _is_zero(v: Value) -> bool:
    return _const(v) == 0 and v.type.ndim == 0


def pool_before_relu(g: Graph) -> Graph:
    """maxpool(relu(x)) as relu(maxpool(x)), and relu's gradient taken on the pooled tensor.

    max and relu commute (relu is monotone), so the relu, its mask (out <= 0) and the mask's select in the
    backward pass run on the pooled tensor, a quarter of the size for 2x2 windows: LeNet's two relu+pool layers
    at batch 64 move 0.3 ms of elementwise work out of a 3.8 ms step. The numbers are the same: a window's winner
    is the same input when its maximum is positive, and where it is not, both forms give the output 0 and every
    input of the window the gradient 0 (relu's gradient is 0 wherever its output is <= 0, at the winner too).
    Only the sign of a pooled zero may differ (relu(-0.0) is -0.0). Rewritten where the relu is read by one max
    pool and by relu's own gradient (where(out <= 0, 0, g)) and nothing else, with g that pool's gradient, and
    the pool's indices (which may change where a maximum is <= 0) are read by that gradient alone."""
    users = g.users()
    returned = {id(v) for v in g.outputs}
    plans: dict[int, tuple] = {}  # id(relu node) -> (its pool, its mask nodes, their selects, the pool gradients)
    for node in g.nodes:
        if node.op != "relu" or id(node.outputs[0]) in returned:
            continue
        r = node.outputs[0]
        readers = users.get(id(r), [])
        pools = [n for n in readers if n.op in _POOLS and n.inputs[0] is r]
        masks = [n for n in readers if n.op == "le" and n.inputs[0] is r and _is_zero(n.inputs[1])]
        if len(pools) != 1 or len(pools) + len(masks) != len(readers):
            continue
        pool, ok, selects, grads = pools[0], True, [], []
        idx = pool.outputs[1] if pool.op == "max_pool2d_with_indices" else None
        for m in masks:
            for w in users.get(id(m.outputs[0]), []):
                gv = w.inputs[2] if w.op == "where" else None
                p = gv.producer if gv is not None else None
                if (w.inputs[0] is not m.outputs[0] or not _is_zero(w.inputs[1]) or p is None or idx is None
                        or p.op != "max_pool2d_indices_grad" or p.inputs[1] is not idx
                        or len(users.get(id(gv), [])) != 1 or id(gv) in returned or w.outputs[0].type != r.type):
                    ok = False
                selects.append(w)
                grads.append(p)
            ok = ok and id(m.outputs[0]) not in returned
        # the winners change where a window's maximum is <= 0: only the rewritten gradients may read them
        if idx is not None and (id(idx) in returned or any(n not in grads for n in users.get(id(idx), []))):
            ok = False
        if ok:
            plans[id(node)] = (pool, masks, selects, grads)
    if not plans:
        return g
    role: dict[int, tuple[str, int]] = {}
    for rid, (pool, masks, selects, grads) in plans.items():
        role[id(pool)] = ("pool", rid)
        role.update({id(n): ("drop", rid) for n in masks + grads})
        role.update({id(n): ("select", rid) for n in selects})
    made: dict[int, dict] = {}  # id(relu node) -> the new graph's values
    pending: dict[int, Value] = {}  # id(old pool gradient node) -> the new graph's incoming gradient

    def visit(node: Node, ins: list[Value], new: Graph) -> list[Value] | None:
        if id(node) in plans:  # the relu: nothing yet (its pool computes the pooled relu)
            made[id(node)] = {"x": ins[0], "relu": node}
            return [ins[0]]  # read by no one after this pass (its readers are all rewritten)
        job = role.get(id(node))
        if job is None:
            return None
        kind, rid = job
        st = made[rid]
        if kind == "pool":
            relu = st["relu"]
            out = node.outputs[0]
            pooled = new.add_node(node.op, [st["x"]], node.attrs, [v.type for v in node.outputs], node.meta,
                                  names=[f"{out.name}_max"] + [v.name for v in node.outputs[1:]]).outputs
            p = new.add_node("relu", [pooled[0]], {}, [out.type], relu.meta, names=[out.name]).outputs[0]
            st["pooled"], st["indices"] = p, pooled[1] if len(pooled) > 1 else None
            return [p, *pooled[1:]]
        if kind == "drop":  # a mask or a pool gradient: its one reader (a select) is rewritten below
            if node.op == "max_pool2d_indices_grad":
                pending[id(node)] = ins[0]
            return [ins[0]]
        # the select: relu's gradient on the pooled tensor, then the pool's gradient
        grad = node.inputs[2].producer
        p, zero = st["pooled"], ins[1]
        mask = new.add_node("le", [p, zero], {}, [TensorType(p.type.shape, node.inputs[0].type.dtype)],
                            node.meta).outputs[0]
        gp = new.add_node("where", [mask, zero, pending[id(grad)]], {}, [pending[id(grad)].type], node.meta,
                          names=[node.outputs[0].name]).outputs[0]
        return new.add_node(grad.op, [gp, st["indices"]], grad.attrs, [node.outputs[0].type], grad.meta,
                            names=[grad.outputs[0].name]).outputs

    return rewrite(g, visit)


def sum_before_pool_gradient(g: Graph) -> Graph:
    """A sum over the spatial axes of max pooling's gradient as the same sum of the pooled gradient.

    The pooling gradient scatters each pooled value to its window's winner (adding where windows overlap), so every
    value lands in its own plane exactly once, and a sum over H and W (a convolution's bias gradient, over N, H
    and W) has the same terms either way: LeNet's two bias gradients then read 86 K and 37 K values instead of
    345 K and 173 K (mostly zeros). The terms are added in another order, so the sum may differ in its last bits,
    as torch's own order differs from numpy's."""
    def visit(node: Node, ins: list[Value], new: Graph) -> list[Value] | None:
        q = ins[0].producer if node.op == "sum" else None
        if q is None or q.op != "max_pool2d_indices_grad" or not {2, 3} <= set(_axes(node)):
            return None
        return new.add_node("sum", [q.inputs[0]], node.attrs, [node.outputs[0].type], node.meta,
                            names=[node.outputs[0].name]).outputs

    return rewrite(g, visit)


DEFAULT_PIPELINE = (("fold_constants", fold_constants), ("algebraic", algebraic),
                    ("centered_variance", centered_variance), ("cse", cse),
                    ("pool_before_relu", pool_before_relu), ("sum_before_pool_gradient", sum_before_pool_gradient),
                    ("dce", dce))
