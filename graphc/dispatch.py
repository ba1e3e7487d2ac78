"""apply(): the one place an op runs. Eagerly it calls the numpy kernel; under tracing it
records a node. Either way, when grad mode is on and an input requires grad, it records
the op in the autograd DAG (a GradFn), which the autodiff pass later walks.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .backends.numpy import KERNELS
from .context import state
from .errors import located
from .ops import OPS, ShapeError


def apply(name: str, inputs: Sequence[Any], attrs: dict[str, Any]) -> Any:
    from .autograd.function import GradFn
    from .tensor import Tensor

    op = OPS[name]
    try:
        out_types = op.infer_types([t.type for t in inputs], attrs)
    except ShapeError as e:
        raise ShapeError(located(f"{name}: {e}")) from None
    tracer = state.tracer
    if tracer is not None:
        outs = tracer.record(op, inputs, attrs, out_types)
    else:
        with np.errstate(all="ignore"):  # log(-1) is nan without a warning, as in torch
            res = KERNELS[name](*[t._data for t in inputs], **attrs)
        arrays = res if op.nout > 1 else (res,)
        outs = []
        for a, t in zip(arrays, out_types):
            a = np.asarray(a)
            if a.dtype != t.dtype.np:
                a = a.astype(t.dtype.np)
            outs.append(Tensor._make(a, None, t.dtype))
        if op.kind == "view":  # a view shares its base's version counter, as in torch
            for o in outs:
                o._vc = inputs[0]._vc
    if op.kind == "view":  # in-place updates of a view reach its base (Tensor._inplace)
        for o in outs:
            o._view = (inputs[0], name, attrs)
    if state.grad_enabled and op.vjp is not None:
        for t in inputs:
            if t.requires_grad:
                GradFn.record(op, attrs, inputs, outs)
                break
    if state.anomaly:
        from .autograd.anomaly import check_forward

        check_forward(name, outs)
    return outs[0] if op.nout == 1 else tuple(outs)
