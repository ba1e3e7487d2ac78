"""gc.autograd: backward(), grad(), grad modes and anomaly detection.

Both backward() and grad() are the autodiff pass (graphc/passes/autodiff.py) applied to
the DAG that eager ops recorded; tracing records the same DAG, so loss.backward() inside
a compiled function emits backward nodes into the graph being traced.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import api_boundary
from ..passes.autodiff import run_backward
from .anomaly import detect_anomaly
from .function import AccumulateGrad, GradFn
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled


def _as_list(x: Any) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def backward(tensors: Any, grad_tensors: Any = None, retain_graph: bool | None = None, create_graph: bool = False,
             inputs: Sequence[Any] | None = None) -> None:
    """Accumulate d(tensors)/d(leaf) into every reachable leaf's .grad (or only into `inputs`)."""
    roots = _as_list(tensors)
    run_backward(roots, _as_list(grad_tensors) or [None] * len(roots),
                 retain_graph=create_graph if retain_graph is None else retain_graph,
                 create_graph=create_graph, inputs=_as_list(inputs) or None, accumulate=True)


def grad(outputs: Any, inputs: Any, grad_outputs: Any = None, retain_graph: bool | None = None,
         create_graph: bool = False, allow_unused: bool | None = None) -> tuple:
    """Return d(outputs)/d(inputs) without touching any .grad."""
    roots, ins = _as_list(outputs), _as_list(inputs)
    res = run_backward(roots, _as_list(grad_outputs) or [None] * len(roots),
                       retain_graph=create_graph if retain_graph is None else retain_graph,
                       create_graph=create_graph, inputs=ins, accumulate=False)
    if not allow_unused:
        for i, g in enumerate(res):
            if g is None:
                raise RuntimeError(f"One of the differentiated Tensors (input {i}) appears to not have been used in "
                                   "the graph. Set allow_unused=True if this is the desired behavior.")
    return tuple(res)


_backward = backward  # for Tensor.backward, which is a boundary itself
backward, grad = api_boundary(backward), api_boundary(grad)  # errors end at the user's line

__all__ = ["AccumulateGrad", "GradFn", "backward", "detect_anomaly", "enable_grad", "grad", "is_grad_enabled",
           "no_grad", "set_grad_enabled"]
