"""The recorded autograd DAG: GradFn (one per op application) and AccumulateGrad (one per leaf).

A GradFn keeps what the op's VJP needs: its attrs, the primal inputs (snapshots carrying
the autograd edge they had when recorded, so later in-place updates cannot re-route it) and
the primal outputs. It never holds its output tensors, so no reference cycles arise.
"""
from __future__ import annotations

import weakref
from typing import Any

from ..context import module_path, state
from ..errors import user_location


class AccumulateGrad:
    __slots__ = ("variable", "__weakref__")

    def __init__(self, variable: Any) -> None:
        self.variable = variable

    def name(self) -> str:
        return "AccumulateGrad"

    @property
    def next_functions(self) -> tuple:
        return ()

    def __repr__(self) -> str:
        return "<AccumulateGrad>"


def accumulator(t: Any) -> AccumulateGrad:
    acc = t._accumulator
    if acc is None:
        acc = t._accumulator = AccumulateGrad(t)
    return acc


class GradFn:
    __slots__ = ("op", "attrs", "inputs", "edges", "needs", "out_payload", "retained", "freed", "source", "module",
                 "scalar_exponent", "__weakref__")

    @staticmethod
    def record(op: Any, attrs: dict, inputs: Any, outs: list[Any]) -> GradFn:
        fn = GradFn()
        fn.op, fn.attrs = op, attrs
        saved, edges, needs = [], [], []
        for t in inputs:
            if t.grad_fn is not None:
                s = t._alias()
                s._requires_grad, s.grad_fn, s._out_index = True, t.grad_fn, t._out_index
                saved.append(s)
                edges.append((t.grad_fn, t._out_index))
                needs.append(True)
            else:
                saved.append(t)
                edges.append((accumulator(t), 0) if t._requires_grad else (None, 0))
                needs.append(t._requires_grad)
        fn.inputs, fn.edges, fn.needs = saved, edges, needs
        # x ** 2 is torch's pow(Tensor, Scalar): its grad_fn has one edge, not an edge for the constant
        fn.scalar_exponent = op.name == "pow" and getattr(inputs[1], "_name", None) == "#const"
        fn.out_payload = [(o._data, o._sym, o._dtype) for o in outs]
        fn.retained, fn.freed = None, False
        over = state.meta_override
        if over is not None:  # replaying a graph: keep the original node's user line
            fn.source, fn.module = over.get("source"), over.get("module")
        else:
            fn.source = user_location() if (state.anomaly or state.tracer is not None) else None
            fn.module = module_path() if state.tracer is not None else None
        for i, o in enumerate(outs):
            if o._dtype.is_floating_point:
                o._requires_grad, o.grad_fn, o._out_index = True, fn, i
        return fn

    # ---- torch-compatible introspection ----------------------------------------------------------
    def name(self) -> str:
        return self.op.grad_name

    @property
    def next_functions(self) -> tuple:
        return tuple(self.edges[:1] if self.scalar_exponent else self.edges)

    def __repr__(self) -> str:
        return f"<{self.name()}>"

    # ---- used by the autodiff pass ---------------------------------------------------------------
    def output(self, i: int, with_history: bool) -> Any:
        from ..tensor import Tensor

        data, sym, dtype = self.out_payload[i]
        t = Tensor._make(data, sym, dtype)
        if with_history and dtype.is_floating_point:
            t._requires_grad, t.grad_fn, t._out_index = True, self, i
        return t

    def retain(self, index: int, tensor: Any) -> None:
        if self.retained is None:
            self.retained = {}
        self.retained[index] = weakref.ref(tensor)

    def release(self) -> None:
        """Free saved values after a backward without retain_graph."""
        self.inputs, self.out_payload, self.freed = None, None, True
