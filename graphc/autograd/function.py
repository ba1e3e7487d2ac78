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
                 "scalar_exponent", "versions", "__weakref__")

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
        fn.versions = [t._vc[0] for t in saved]  # an in-place update after this point invalidates the saved value
        # x ** 2 is torch's pow(Tensor, Scalar): its grad_fn has one edge, not an edge for the constant
        fn.scalar_exponent = op.name == "pow" and getattr(inputs[1], "_name", None) == "#const"
        fn.out_payload = [(o._data, o._sym, o._dtype, o._vc, o._vc[0]) for o in outs]
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
    def saved_inputs(self) -> list[Any]:
        """The inputs as recorded; one modified in place since then reads as torch's error (see _Modified)."""
        out = list(self.inputs)
        for i, (t, v) in enumerate(zip(out, self.versions)):
            if t._vc[0] != v:
                by = f", which is output {t._out_index} of {_short(t.grad_fn)}," if t.grad_fn is not None else ""
                out[i] = _Modified(t, self._modified_message(t, by, v))
        return out

    def _modified_message(self, t: Any, by: str, version: int) -> str:
        hint = (f"Hint: the value was saved by {_short(self)} at {self.source}; use the out-of-place op or .clone() "
                f"the tensor before updating it." if self.source else
                "Hint: enable anomaly detection to find the operation that failed to compute its gradient, with "
                "gc.detect_anomaly().")
        return (f"one of the variables needed for gradient computation has been modified by an inplace operation: "
                f"[graphc.{_TYPE_NAMES.get(t.dtype.name, 'Tensor')} {list(t.shape)}]{by} is at version "
                f"{t._vc[0]}; expected version {version} instead. {hint}")

    def output(self, i: int, with_history: bool) -> Any:
        from ..tensor import Tensor

        data, sym, dtype, vc, version = self.out_payload[i]
        t = Tensor._make(data, sym, dtype)
        if vc[0] != version:
            t._vc = vc
            return _Modified(t, self._modified_message(t, f", which is output {i} of {_short(self)},", version))
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


def _base_id(a: Any) -> int:
    while getattr(a, "base", None) is not None:
        a = a.base
    return id(a)


def watch_saved(tensors: Any, saved: Any) -> list[tuple]:
    """For a compiled function's backward, whose saved values are plain arrays: the version of every tensor
    whose array is (or is viewed by) a saved array, so check_watched can refuse a stale backward as torch does."""
    bases = {_base_id(a) for a in saved}
    return [(t._vc, t._vc[0], t._dtype.name, tuple(t.shape)) for t in tensors
            if t._data is not None and _base_id(t._data) in bases]


def check_watched(watched: Any) -> None:
    for vc, version, dtype, shape in watched:
        if vc[0] != version:
            raise RuntimeError(
                f"one of the variables needed for gradient computation has been modified by an inplace operation: "
                f"[graphc.{_TYPE_NAMES.get(dtype, 'Tensor')} {list(shape)}] is at version {vc[0]}; expected version "
                f"{version} instead. Hint: a compiled function saved it for its backward; use the out-of-place op or "
                f".clone() the tensor before updating it.")


_TYPE_NAMES = {"float32": "FloatTensor", "float64": "DoubleTensor", "int64": "LongTensor", "int32": "IntTensor",
               "bool": "BoolTensor"}


def _short(fn: Any) -> str:
    """torch's node name in this message: ExpBackward0 -> Exp."""
    name = fn.name()
    return name[:-len("Backward0")] if name.endswith("Backward0") else name


def _modified_class() -> type:
    from ..tensor import Tensor

    def _fail(self: Any) -> Any:
        raise RuntimeError(self._why)

    class _Modified(Tensor):
        """What a VJP receives for a saved tensor that was updated in place after the op saved it: its shape and
        dtype still read, its value raises torch's error, so only a VJP that needs the value fails (as in torch,
        where only saved tensors are checked)."""

        __slots__ = ("_why", "_shape")
        _data = property(_fail)
        _sym = property(_fail)

        def __init__(self, t: Any, why: str) -> None:  # not Tensor.__init__: there is no value at all
            self._why, self._shape, self._dtype = why, tuple(t.shape), t._dtype
            self._requires_grad, self._grad, self.grad_fn, self._out_index = t._requires_grad, None, t.grad_fn, \
                t._out_index
            self._retains_grad, self._vc, self._base, self._accumulator, self._name = False, t._vc, None, None, None

        @property
        def shape(self) -> tuple[int, ...]:
            return self._shape

    return _Modified


_MODIFIED: Any = None


def _Modified(t: Any, why: str) -> Any:  # noqa: N802  (the class is built on first use: tensor.py imports later)
    global _MODIFIED
    if _MODIFIED is None:
        _MODIFIED = _modified_class()
    return _MODIFIED(t, why)
