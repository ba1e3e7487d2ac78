"""detect_anomaly: raise on the first NaN/Inf any op produces, naming the op, phase and user line."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..context import state
from ..errors import located


class detect_anomaly:  # noqa: N801  (torch's name)
    def __init__(self, check_nan: bool = True) -> None:
        self.check_nan = check_nan

    def __enter__(self) -> detect_anomaly:
        self._prev = state.anomaly
        state.anomaly = self.check_nan
        return self

    def __exit__(self, *exc: Any) -> None:
        state.anomaly = self._prev


def _bad(t: Any) -> bool:
    a = t._data
    return a is not None and a.dtype.kind == "f" and not np.isfinite(a).all()


def check_forward(op: str, outs: list[Any]) -> None:
    if state.phase == "backward":  # the ops inside a VJP: check_backward names the Function and its forward line
        return
    for t in outs:
        if _bad(t):
            raise RuntimeError(located(f"detect_anomaly: op '{op}' produced NaN/Inf in its output during the "
                                       f"{state.phase} phase"))


def check_backward(fn: Any, grads: Any) -> None:
    for i, g in enumerate(grads):
        if g is not None and _bad(g):
            what = "nan" if np.isnan(g._data).any() else "inf"
            msg = (f"detect_anomaly: Function '{fn.name()}' returned {what} values in its {i}th output during the "
                   f"backward phase")
            # the forward op's line when it ran under detect_anomaly, else the line that called backward
            raise RuntimeError(f"{msg} (forward op recorded at {fn.source})" if fn.source else located(msg))


def run_checked(graph: Any, arrays: Any) -> tuple:
    """Interpret a graph node by node with the numpy kernels, raising on the first NaN/Inf a node produces
    (the compiled-code twin of check_forward/check_backward). -> the graph's outputs."""
    from ..backends.numpy import KERNELS

    env = {id(v): a for v, a in zip(graph.inputs, arrays)}
    with np.errstate(all="ignore"):
        for node in graph.nodes:
            res = KERNELS[node.op](*[env[id(v)] for v in node.inputs], **node.attrs)
            for v, a in zip(node.outputs, res if len(node.outputs) > 1 else (res,)):
                a = np.asarray(a)
                if a.dtype != v.type.dtype.np:
                    a = a.astype(v.type.dtype.np)
                if a.dtype.kind == "f" and not np.isfinite(a).all():
                    meta = node.meta
                    where = [f"in module {meta['module']}"] if meta.get("module") else []
                    where += [f"at {meta['source']}"] if meta.get("source") else []
                    raise RuntimeError(f"detect_anomaly: op '{node.op}' produced NaN/Inf in its output during the "
                                       f"{meta.get('phase', 'forward')} phase of a compiled graph"
                                       + (f" ({', '.join(where)})" if where else ""))
                env[id(v)] = a
    return tuple(env[id(v)] for v in graph.outputs)
