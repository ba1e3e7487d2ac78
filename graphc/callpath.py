"""The steady-state call of a compiled function whose graph depends on its tensor arguments only.

CompiledFunction's full path describes every call (argument tree, shapes, dtypes, requires_grad, grad
mode, every reachable module's parameters and flags, optimizer state), freezes and sorts that into a
cache key, and the Executable then flattens and checks the arguments again. For a function that reaches
no module, optimizer or captured tensor, that key is a function of (grad mode, each argument's shape,
dtype and requires_grad) alone, so a memo from that short fingerprint to the Executable gives the same
answer. It is trusted only while:

* every argument is a tensor and there are no keyword arguments (the tree is then fixed by their count),
* no tracer is active (a compiled function called while tracing takes the full path),
* the objects the function can reach (trace.reach: named globals, closure cells, defaults, bound
  object) are the very objects that were reachable when the entry was made, so find_state_owners
  would still find no owner, and the Executable has no hyperparameter guards.

Anything else goes down the full path, which makes or refreshes the memo entry. An Executable with
nothing to write back (every output is a result) is then run by a precomputed CallPlan; one with
write-backs (an argument updated in place, .grad set inside) runs its ordinary __call__.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .autograd.anomaly import run_checked
from .autograd.function import GradFn, watch_saved
from .backends.numpy.quiet import quietly
from .context import state
from .ir.graph import Graph
from .tensor import Tensor, _dt
from .trace import reach, rebuild_outputs


def fingerprint(args: tuple) -> tuple | None:
    """(shape, dtype, requires_grad) of each argument, or None when one is not a concrete tensor (a value,
    a symbolic tensor)."""
    out = []
    for a in args:
        if not isinstance(a, Tensor) or a._data is None or a._sym is not None:
            return None
        out.append((a._data.shape, a._dtype.name, a._requires_grad))
    return tuple(out)


class FastCalls:
    """fingerprint -> (reach snapshot, Executable, CallPlan or None), for functions without state owners."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.memo: dict[tuple, tuple[dict[str, Any], Any, CallPlan | None]] = {}

    def lookup(self, args: tuple) -> tuple[Any, CallPlan | None] | None:
        """The Executable the full path would choose for these arguments, if that is certain without it."""
        if not self.memo or state.tracer is not None:
            return None
        fp = fingerprint(args)
        if fp is None:
            return None
        hit = self.memo.get((state.grad_enabled, fp))
        if hit is None:
            return None
        snapshot, exe, plan = hit
        now = reach(self.fn)
        if len(now) != len(snapshot):
            return None
        for k, v in snapshot.items():
            if now.get(k, _MISSING) is not v:
                return None
        return exe, plan

    def remember(self, args: tuple, kwargs: dict, exe: Any, reached: dict[str, Any]) -> None:
        """After the full path chose exe for a call that reached no state owner (find_state_owners found no
        module and no optimizer in `reached` and the arguments): memoize it when the fingerprint alone
        determines that choice."""
        if kwargs or exe.guards or state.tracer is not None:
            return
        fp = fingerprint(args)
        if fp is None:
            return
        old = self.memo.get((state.grad_enabled, fp))
        plan = old[2] if old is not None and old[1] is exe else CallPlan.of(exe)
        self.memo[(state.grad_enabled, fp)] = (reached, exe, plan)


_MISSING = object()


def run_generated(fn: Callable, graph: Graph, arrays: list[Any]) -> tuple:
    """Run generated code; under gc.detect_anomaly() interpret the graph instead, checking every node's output
    for NaN/Inf and naming its op, phase and user line (as eager mode does)."""
    if state.anomaly:
        return run_checked(graph, [np.asarray(a) for a in arrays])  # device arrays too: numpy interprets
    return quietly(fn, arrays)  # log(-1) is nan without a warning, as in eager mode and torch


class CallPlan:
    """Executable.__call__ for an Executable with nothing to write back, with its per-call decisions made once:
    where each input comes from, which tensors a compiled backward records, how results form the output tree.
    The arguments were already checked against the Executable's types by the fingerprint."""

    __slots__ = ("exe", "arg_only", "arg_refs", "n_out", "record", "wrt", "every", "diff", "single",
                 "out_static", "out_tree")

    @staticmethod
    def of(exe: Any) -> CallPlan | None:
        if any(s.kind != "result" for s in exe.outputs):
            return None
        return CallPlan(exe)

    def __init__(self, exe: Any) -> None:
        self.exe = exe
        self.arg_only = all(s.kind == "arg" for s in exe.inputs)
        self.arg_refs = [s.ref for s in exe.inputs] if self.arg_only else []
        self.n_out = len(exe.outputs)
        self.record = exe._bwd is not None
        if self.record:  # as Executable.__call__: leaf index for arguments, the captured tensor otherwise
            self.wrt = [(s.ref, None) if s.kind == "arg" else (None, s.ref) for s in (exe.inputs[i] for i in exe._wrt)]
            self.every = [(s.ref, None) if s.kind == "arg" else (None, s.ref) for s in exe.inputs
                          if s.kind in ("arg", "param", "buffer", "tensor", "state")]
            self.diff = list(exe._cotangents)  # every output is a result: output index = result index
        self.single = exe.out_tree == "*" and exe.out_static == [None]
        self.out_static, self.out_tree = exe.out_static, exe.out_tree

    def __call__(self, args: tuple) -> Any:
        exe = self.exe
        if self.arg_only:
            arrays = [args[i]._data for i in self.arg_refs]
        else:
            arrays = exe._gather(list(args))
        outs = run_generated(exe._fn, exe.graph, arrays)
        n_out = self.n_out
        results = []
        for a in outs[:n_out]:
            if type(a) is not np.ndarray:
                a = np.asarray(a)
            results.append(Tensor._make(a, None, _dt(a)))
        if self.record and state.grad_enabled:
            saved = outs[n_out:]
            ins = [args[i] if t is None else t for i, t in self.wrt]
            every = [args[i] if t is None else t for i, t in self.every]
            GradFn.record(exe._op, {"saved": saved, "watch": watch_saved(every + results, saved)}, ins,
                          [results[k] for k in self.diff])
        if self.single:
            return results[0]
        return rebuild_outputs(self.out_tree, self.out_static, results)
