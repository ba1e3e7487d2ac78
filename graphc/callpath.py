"""The steady-state call of a compiled function: reusing the last call's choice of Executable.

CompiledFunction's full path describes every call (argument tree, shapes, dtypes, requires_grad, grad
mode, every reachable module's parameters and flags, optimizer state), freezes and sorts that into a
cache key, and the Executable then flattens and checks the arguments again: for LeNet that is several
times the cost of graphc's own generated code. FastCalls remembers, per short fingerprint (grad mode,
each argument's shape, dtype and requires_grad), which Executable the full path chose, and gives the
same answer again while nothing it depends on can have changed:

* every argument is a tensor and there are no keyword arguments (the tree is then fixed by their count),
  and no tracer is active (a compiled function called while tracing takes the full path);
* the objects the function can reach (trace.reach: named globals, closure cells, defaults, bound
  object) are the very objects reached then, and so are the attributes of the plain objects among them
  (find_state_owners looks one attribute into a config or trainer);
* when the function reached a module, an optimizer or a captured tensor: graphc.epoch.EPOCH has not moved
  since that key was computed (any change to modules, parameters' flags and gradients, optimizer groups
  and state moves it), and the Executable's hyperparameter guards hold (checked again only when some
  hyperparameter was set since they last held: graphc.epoch.HYPERS).

Anything else goes down the full path, which makes or refreshes the memo entry. With GRAPHC_VERIFY_CALLS=1
(the test suite sets it) every reused answer is checked against the full key. A numpy Executable with nothing
to write back (every output is a result) is then run by a precomputed CallPlan; any other skips straight to
Executable._run (its arguments' types are the fingerprint's, its state is what the key saw).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from .autograd.anomaly import run_checked
from .autograd.function import GradFn, watch_saved
from .backends.numpy.quiet import quietly
from .context import state
from .epoch import EPOCH, HYPERS
from .ir.graph import Graph
from .tensor import Tensor, _dt
from .trace import plain_object, reach, rebuild_outputs

#: check every reused answer against the full cache key (tests/conftest.py sets it)
VERIFY = os.environ.get("GRAPHC_VERIFY_CALLS", "") not in ("", "0")


def fingerprint(args: tuple) -> tuple | None:
    """(shape, dtype, requires_grad) of each argument, or None when one is not a concrete tensor (a value,
    a symbolic tensor)."""
    out = []
    for a in args:
        if not isinstance(a, Tensor) or a._sym is not None:
            return None
        d = a._dev  # (a value left on the device by a jax step: reading _data would copy it to the host)
        if d is None:
            d = a._data
            if d is None:
                return None
        out.append((d.shape, a._dtype.name, a._requires_grad))
    return tuple(out)


class Entry:
    """What the full path chose for one fingerprint, and what that choice depended on."""

    __slots__ = ("reached", "deep", "epoch", "exe", "plan", "key", "hypers")

    def __init__(self, reached: dict[str, Any], deep: list, epoch: int | None, exe: Any, plan: CallPlan | None,
                 key: tuple) -> None:
        self.reached, self.deep, self.epoch, self.exe, self.plan, self.key = reached, deep, epoch, exe, plan, key
        self.hypers = -1  # HYPERS[0] when the executable's hyperparameter guards last held

    def holds(self, now: dict[str, Any]) -> bool:
        if self.epoch is not None and self.epoch != EPOCH[0]:
            return False
        reached = self.reached
        if len(now) != len(reached):
            return False
        for k, v in reached.items():
            if now.get(k, _MISSING) is not v:
                return False
        for obj, items in self.deep:
            attrs = vars(obj)
            if len(attrs) != len(items):
                return False
            for k, v in items:
                if attrs.get(k, _MISSING) is not v:
                    return False
        exe = self.exe
        if exe.guards and self.hypers != HYPERS[0]:
            if exe.failed_guard() is not None:
                return False
            self.hypers = HYPERS[0]
        return True


def deep_attrs(reached: dict[str, Any]) -> list[tuple[Any, list[tuple[str, Any]]]]:
    """The attributes of the plain objects (a config, a trainer) among reached, which find_state_owners looks
    into for modules and optimizers."""
    return [(v, list(vars(v).items())) for v in reached.values() if plain_object(v)]


class FastCalls:
    """fingerprint -> Entry: the full path's last choice, reused while it provably still holds."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.memo: dict[tuple, Entry] = {}

    def lookup(self, args: tuple) -> Entry | None:
        """The entry whose Executable the full path would choose for these arguments, if that is certain
        without it."""
        if not self.memo or state.tracer is not None:
            return None
        fp = fingerprint(args)
        if fp is None:
            return None
        hit = self.memo.get((state.grad_enabled, fp))
        if hit is None or not hit.holds(reach(self.fn)):
            return None
        return hit

    def remember(self, args: tuple, kwargs: dict, exe: Any, reached: dict[str, Any], deep: list,
                 epoch: int | None, key: tuple) -> None:
        """After the full path chose exe for this call: memoize it when the fingerprint alone determines that
        choice, given the same reached objects and attributes (reached, deep: as taken before the key was
        computed) and, where the call reached a module, an optimizer or a captured tensor, no change since
        (epoch: EPOCH[0] read before the key was computed; None otherwise)."""
        if kwargs or state.tracer is not None:
            return
        fp = fingerprint(args)
        if fp is None:
            return
        old = self.memo.get((state.grad_enabled, fp))
        plan = old.plan if old is not None and old.exe is exe else CallPlan.of(exe)
        self.memo[(state.grad_enabled, fp)] = Entry(reached, deep, epoch, exe, plan, key)


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
        if exe._device or any(s.kind != "result" for s in exe.outputs):  # (jax results stay on the device)
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
