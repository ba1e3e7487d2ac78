"""Reverse-mode autodiff: walk the recorded DAG from the outputs back to the leaves,
calling each op's VJP rule from the op table.

This one walk serves eager `.backward()` / `gc.autograd.grad` (on the DAG eager ops record)
and the compiler (tracing records the same DAG, so the VJPs emit backward nodes into the
graph being built). Only ops that had an input requiring grad were recorded at all, and
only inputs that need a grad get one: frozen subgraphs cost nothing (JAX's symbolic zeros).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..autograd.anomaly import check_backward
from ..autograd.function import AccumulateGrad, GradFn, accumulator
from ..context import phase, state
from ..dispatch import apply
from ..ir.graph import Graph

BACKWARD_TWICE = (
    "Trying to backward through the graph a second time (or directly access saved tensors after they have "
    "already been freed). Saved intermediate values of the graph are freed when you call .backward() or "
    "autograd.grad(). Specify retain_graph=True if you need to backward through the graph a second time or if you "
    "need to access saved tensors after calling backward."
)

#: figures of the last walk: how many recorded ops ran a VJP, and how many leaves received a gradient
last_stats: dict[str, int] = {"nodes_executed": 0, "leaves": 0}


class _Ctx:
    """What a VJP rule sees (graphc.ops.VjpContext)."""

    __slots__ = ("fn", "attrs", "needs", "inputs", "history")

    def __init__(self, fn: Any, history: bool) -> None:
        self.fn, self.attrs, self.needs, self.history = fn, fn.attrs, fn.needs, history
        self.inputs = fn.saved_inputs()  # torch's error for a saved input updated in place since

    @property
    def outputs(self) -> list[Any]:
        return [self.fn.output(i, self.history) for i in range(self.fn.op.nout)]

    def call(self, op: str, *inputs: Any, **attrs: Any) -> Any:
        return apply(op, inputs, attrs)


def _seed_grad(i: int, root: Any, g: Any) -> Any:
    if not root.requires_grad:
        raise RuntimeError(f"element {i} of tensors does not require grad and does not have a grad_fn")
    if g is None:
        from ..factories import ones_like  # (graphc.tensor imports this module)

        if root.numel() != 1:
            raise RuntimeError("grad can be implicitly created only for scalar outputs")
        return ones_like(root)
    if not isinstance(g, root._tensor_class):
        g = root._lift(g)
    if g.shape != root.shape:
        raise RuntimeError(f"Mismatch in shape: grad_output[{i}] has a shape of {g.shape} and output[{i}] has a "
                           f"shape of {root.shape}.")
    return g if g._dtype is root._dtype else g.to(root.dtype)


def _accumulate(leaf: Any, g: Any, create_graph: bool) -> None:
    if g._dtype is not leaf._dtype and g._dtype != leaf._dtype:
        g = g.to(leaf.dtype)
    if leaf.grad is None:
        if not create_graph and g._data is not None and state.tracer is None:
            g = g._alias()  # no history: already what detach() gives
            g._data = g._data.copy()  # .grad owns its memory: VJPs may hand one array to several inputs
            leaf.grad = g
            return
        leaf.grad = g if create_graph else g.detach()
    elif create_graph or state.tracer is not None or leaf.grad._data is None or not leaf.grad._data.flags.writeable:
        leaf.grad = leaf.grad + g
    else:
        leaf.grad._data += g._data  # torch accumulates into the existing .grad tensor


def run_backward(roots: Sequence[Any], root_grads: Sequence[Any], *, retain_graph: bool, create_graph: bool,
                 inputs: Sequence[Any] | None, accumulate: bool) -> list[Any] | None:
    if len(roots) == 1 and inputs is None and accumulate and not create_graph and state.tracer is None:
        fn = roots[0].grad_fn
        if type(fn) is GradFn and all(e is None or type(e) is AccumulateGrad for e, _ in fn.edges):
            _backward_one(roots[0], root_grads[0], fn, retain_graph)
            return None
    prev_grad = state.grad_enabled
    state.grad_enabled = create_graph
    try:
        with phase("backward"):
            seeds = []
            for i, (r, g) in enumerate(zip(roots, root_grads)):
                g = _seed_grad(i, r, g)
                seeds.append(((r.grad_fn, r._out_index) if r.grad_fn is not None else (accumulator(r), 0), g))

            # which inputs to capture: leaves by accumulator, non-leaves by (grad_fn, output index)
            want: dict[tuple[int, int], int] = {}
            for k, t in enumerate(inputs or ()):
                key = (id(t.grad_fn), t._out_index) if t.grad_fn is not None else (id(accumulator(t)), 0)
                want[key] = k
            captured: list[Any] = [None] * len(inputs or ())

            # discover the reachable DAG and count each function's consumers
            deps: dict[int, int] = {}
            seen: dict[int, Any] = {}
            stack = [e[0] for e, _ in seeds if isinstance(e[0], GradFn)]
            while stack:
                fn = stack.pop()
                if id(fn) in seen:
                    continue
                seen[id(fn)] = fn
                for nf, _ in fn.edges:
                    if isinstance(nf, GradFn):
                        deps[id(nf)] = deps.get(id(nf), 0) + 1
                        if id(nf) not in seen:
                            stack.append(nf)

            buffers: dict[int, list[Any]] = {}
            n_leaves = 0

            def deliver(edge: tuple[Any, int], g: Any) -> None:
                nonlocal n_leaves
                fn, idx = edge
                if fn is None or g is None:
                    return
                if isinstance(fn, AccumulateGrad):
                    k = want.get((id(fn), 0))
                    if k is not None:
                        captured[k] = g if captured[k] is None else captured[k] + g
                    if accumulate and (inputs is None or k is not None):
                        _accumulate(fn.variable, g, create_graph)
                        n_leaves += 1
                    return
                slot = buffers.setdefault(id(fn), [None] * fn.op.nout)
                slot[idx] = g if slot[idx] is None else slot[idx] + g

            for edge, g in seeds:
                deliver(edge, g)
            ready = [fn for fn in {id(e[0]): e[0] for e, _ in seeds if isinstance(e[0], GradFn)}.values()
                     if deps.get(id(fn), 0) == 0]
            executed = 0
            while ready:
                fn = ready.pop()
                gouts = buffers.pop(id(fn), None)
                if fn.freed:
                    raise RuntimeError(BACKWARD_TWICE)
                if gouts is not None and any(g is not None for g in gouts):
                    for idx, g in enumerate(gouts):
                        k = want.get((id(fn), idx))
                        if k is not None and g is not None:
                            captured[k] = g
                        ref = fn.retained.get(idx) if fn.retained else None
                        t = ref() if ref is not None else None
                        if t is None and k is not None and accumulate:  # backward(inputs=[non-leaf]) fills its .grad
                            t = inputs[k]
                        if t is not None and g is not None:
                            _accumulate(t, g, create_graph)
                    if state.tracer is not None:  # backward nodes point at the forward op's source line
                        state.meta_override = {"source": fn.source, "module": fn.module}
                    try:
                        grads = fn.op.vjp(_Ctx(fn, create_graph), *gouts)
                    finally:
                        state.meta_override = None
                    executed += 1
                    if state.anomaly:
                        check_backward(fn, grads)
                    for edge, need, g in zip(fn.edges, fn.needs, grads):
                        if need:
                            deliver(edge, g)
                for nf, _ in fn.edges:
                    if isinstance(nf, GradFn):
                        deps[id(nf)] -= 1
                        if deps[id(nf)] == 0:
                            ready.append(nf)
            last_stats.update(nodes_executed=executed, leaves=n_leaves)
            if state.tracer is not None:  # the pass report of a traced graph
                g = state.tracer.graph
                fwd = sum(1 for n in g.nodes if n.meta.get("phase") == "forward")
                g.meta["autodiff"] = {"forward_ops": fwd, "differentiated": executed,
                                      "without_backward": fwd - executed}
            if not retain_graph:
                for fn in seen.values():
                    fn.release()
    finally:
        state.grad_enabled = prev_grad
    if inputs is not None and not accumulate:
        return [g if g is None or create_graph else g.detach() for g in captured]
    return None


def _backward_one(root: Any, g: Any, fn: Any, retain_graph: bool) -> None:
    """run_backward's walk when the DAG is one function whose inputs are leaves (a compiled function called
    on leaf tensors, one eager op): the same steps in the same order, without the bookkeeping of a walk."""
    prev_grad, prev_phase = state.grad_enabled, state.phase
    state.grad_enabled, state.phase = False, "backward"
    try:
        g = _seed_grad(0, root, g)
        if fn.freed:
            raise RuntimeError(BACKWARD_TWICE)
        idx = root._out_index
        gouts: list[Any] = [None] * fn.op.nout
        gouts[idx] = g
        ref = fn.retained.get(idx) if fn.retained else None
        t = ref() if ref is not None else None
        if t is not None:  # the root's retain_grad()
            _accumulate(t, g, False)
        grads = fn.op.vjp(_Ctx(fn, False), *gouts)
        if state.anomaly:
            check_backward(fn, grads)
        n_leaves = 0
        for (acc, _), need, gr in zip(fn.edges, fn.needs, grads):
            if need and acc is not None and gr is not None:
                _accumulate(acc.variable, gr, False)
                n_leaves += 1
        last_stats.update(nodes_executed=1, leaves=n_leaves)
        if not retain_graph:
            fn.release()
    finally:
        state.grad_enabled, state.phase = prev_grad, prev_phase


def differentiate(g: Graph, wrt: Sequence[int], outs: Sequence[int] | None = None) -> Graph:
    """The joint forward+backward graph of g, by the same walk as eager backward.

    The graph is replayed under a tracer with the `wrt` inputs requiring grad; each output
    listed in `outs` (default: all) that depends on them gets a cotangent input `grad_<name>`.
    Outputs: g's outputs, then the gradient of every `wrt` input (zeros where an input does not reach any output).
    """
    from ..factories import zeros
    from ..tensor import Tensor
    from ..trace import InputSlot, Tracer

    tracer = Tracer(g.name, {})
    env: dict[int, Any] = {}
    wrt_set = set(wrt)
    for i, v in enumerate(g.inputs):
        nv = tracer.graph.add_input(v.name, v.type)
        tracer.inputs.append(InputSlot("arg", nv.name, i))
        t = Tensor._make(None, nv, v.type.dtype)
        t._requires_grad = i in wrt_set and v.type.dtype.is_floating_point
        env[id(v)] = t
    prev = (state.tracer, state.grad_enabled, state.meta_override)
    state.tracer, state.grad_enabled = tracer, True
    try:
        for node in g.nodes:
            state.meta_override = node.meta
            state.grad_enabled = not node.meta.get("no_grad", False)  # traced under no_grad or detached
            res = apply(node.op, [env[id(v)] for v in node.inputs], node.attrs)
            for v, r in zip(node.outputs, res if isinstance(res, tuple) else (res,)):
                env[id(v)] = r
        state.meta_override, state.grad_enabled = None, True
        results = [env[id(v)] for v in g.outputs]
        chosen = set(range(len(g.outputs)) if outs is None else outs)
        roots, cts, which = [], [], []
        for k, (v, t) in enumerate(zip(g.outputs, results)):
            if t.requires_grad and k in chosen:
                cv = tracer.graph.add_input(f"grad_{v.name}", v.type)
                roots.append(t)
                cts.append(Tensor._make(None, cv, v.type.dtype))
                which.append(k)
        tracer.graph.meta["cotangents"] = which  # output index of each cotangent input
        wrt_tensors = [env[id(g.inputs[i])] for i in wrt]
        grads = run_backward(roots, cts, retain_graph=True, create_graph=False, inputs=wrt_tensors,
                             accumulate=False) if roots else [None] * len(wrt)
        tracer.graph.meta["unused"] = [k for k, gr in enumerate(grads) if gr is None]  # as eager: .grad stays None
        grads = [gr if gr is not None else zeros(t.shape, dtype=t.dtype) for gr, t in zip(grads, wrt_tensors)]
        tracer.graph.outputs = [t._sym for t in results] + [tracer.value_of(gr) for gr in grads]
    finally:
        state.tracer, state.grad_enabled, state.meta_override = prev
    return tracer.graph
