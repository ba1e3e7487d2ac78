"""gc.compile: guards and a cache in front of trace -> passes -> backend codegen.

A CompiledFunction keys its cache on everything that changes the traced graph (argument
structure, shapes, dtypes, requires_grad flags, grad mode, train/eval flags, parameter
identity and shapes, optimizer state layout); a miss is explained as a diff against the
nearest earlier key. `lower()` gives the static graph ahead of time, `compile()` the
Executable. A compiled function called on tensors that require grad returns tensors whose
`.backward()` runs a compiled backward graph (the joint graph partitioned in two).
"""
from __future__ import annotations

import functools
import inspect
import sys
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import callpath, factories
from .autograd.function import GradFn, check_watched, watch_saved
from .callpath import FastCalls, deep_attrs
from .callpath import run_generated as _run
from .context import gc_paused, state
from .device_io import DeviceIO
from .epoch import EPOCH, numeric
from .errors import api_boundary, guard_class
from .ir.graph import Graph
from .ir.types import dtype_of
from .ops.registry import OpDef
from .passes.autodiff import differentiate
from .passes.manager import PassRecord, run_passes
from .passes.partition import partition
from .passes.simplify import DEFAULT_PIPELINE
from .pytree import flatten
from .tensor import Tensor
from .trace import Traced, _arg_name, find_state_owners, reach, rebuild_outputs, state_names, trace

# ---- cache keys ----------------------------------------------------------------------------------

def _describe(fn: Callable, args: tuple, kwargs: dict, arg_names: list[str],
              owners: tuple[dict[str, Any], dict[str, Any]] | None = None) -> dict[str, tuple]:
    """Everything the traced graph depends on, as {readable path: (field, value) pairs}; owners: what
    find_state_owners(fn, args) gives, when the caller has it already."""

    flat, tree = flatten((args, kwargs))
    desc: dict[str, tuple] = {"(structure)": (("tree", tree),),
                              "(grad mode)": (("enabled", state.grad_enabled),)}
    for path, leaf in flat:
        name = _arg_name(path, arg_names)
        if isinstance(leaf, Tensor):
            desc[name] = (("shape", leaf.shape), ("dtype", leaf.dtype.name), ("requires_grad", leaf.requires_grad))
        else:
            desc[name] = (("value", leaf if isinstance(leaf, (int, float, str, bool, type(None))) else id(leaf)),)
    modules, optims = find_state_owners(fn, args) if owners is None else owners
    held: list[tuple[str, list[tuple[str, Tensor]]]] = []  # (variable, its parameters and buffers, named)
    for var, m in modules.items():
        pre = f"{var}." if var else ""
        walk = _submodules(m)
        if walk is None:  # not an nn.Module (captured tensors): its own listing
            tensors = list(m.named_parameters()) + list(m.named_buffers())
        else:
            tensors = _state_tensors(walk)
            for n, sub in walk:
                # training and every plain setting (BatchNorm momentum and eps, Dropout p, a conv's stride): traced
                # as constants, so a change retraces, as torch.compile guards on module attributes
                desc[f"{pre}{n or '(module)'} ({type(sub).__name__})"] = (("training", sub.training), *[
                    (k, v) for k, v in vars(sub).items() if type(v) in _SETTING and k[0] != "_" and k != "training"])
        held.append((var, tensors))
        for n, p in tensors:
            g = p.grad
            desc[pre + n] = (("tensor", id(p)), ("shape", p.shape), ("dtype", p._dtype.name),
                             ("requires_grad", p._requires_grad), ("grad", None if g is None else g.shape))
    # optimizer state is named by its parameter, as trace.state_names names it (variable prefix only when
    # several objects hold state)
    several = sum(1 for _, tensors in held if tensors) > 1
    names = {id(p): (f"{var}." if several and var else "") + n for var, tensors in reversed(held) for n, p in tensors}
    for var, opt in optims.items():
        for gi, group in enumerate(opt.param_groups):
            # numeric hyperparameters are graph inputs: only the decisions made on them matter (guards)
            hyper = tuple((k, v) for k, v in group.items() if k != "params" and not numeric(v))
            desc[f"{var}.param_groups[{gi}]"] = (("params", tuple(id(p) for p in group["params"])),) + hyper
        for p, st in opt.state.items():
            pname = names.get(id(p), f"param@{id(p)}")
            # the tensors by identity too: the executable reads and updates these very objects (a buffer
            # replaced, a loaded state_dict, state cleared and made again needs a new one)
            desc[f"{var}.state[{pname}]"] = tuple(
                (k, (id(v), v.shape, v.dtype.name) if isinstance(v, Tensor) else v) for k, v in st.items())
    return desc


_SETTING = frozenset({int, float, bool, str, tuple, type(None)})


def _submodules(m: Any) -> list[tuple[str, Any]] | None:
    """An nn.Module's submodules with their dotted names, each once, in named_modules() order, in one loop
    without generators (this runs on every call); None if m is not an nn.Module."""
    if not hasattr(m, "_parameters"):
        return None
    out, seen, stack = [], set(), [("", m)]
    while stack:
        name, sub = stack.pop()
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        out.append((name, sub))
        dot = name + "." if name else ""
        stack.extend((dot + k, c) for k, c in reversed(sub._modules.items()) if c is not None)
    return out


def _state_tensors(walk: list[tuple[str, Any]]) -> list[tuple[str, Tensor]]:
    """Parameters then buffers of the modules of a _submodules() walk, named and without duplicates, as
    named_parameters() and named_buffers() list them."""
    params, buffers, seen = [], [], set()
    for mp, sub in walk:
        dot = mp + "." if mp else ""
        for store, out in ((sub._parameters, params), (sub._buffers, buffers)):
            for k, v in store.items():
                if v is not None and id(v) not in seen:
                    seen.add(id(v))
                    out.append((dot + k, v))
    return params + buffers


def _freeze(desc: dict[str, tuple]) -> tuple:
    return tuple(sorted(desc.items(), key=lambda kv: kv[0]))


def explain_miss(old: dict[str, tuple], new: dict[str, tuple]) -> list[str]:
    """Readable differences between two cache keys: ['x: shape (3,) -> (4,)', ...]."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if a is None or b is None:
            out.append(f"{k}: {'new' if a is None else 'gone'}")
            continue
        da, db = dict(a), dict(b)
        for f in dict.fromkeys(list(da) + list(db)):
            if da.get(f) != db.get(f):
                what = "a different tensor object" if f == "tensor" else f"{da.get(f)!r} -> {db.get(f)!r}"
                out.append(f"{k}: {f} {what}" if f != "tensor" else f"{k}: {what}")
    return out


@dataclass
class CacheInfo:
    entries: int
    builds: int
    calls: int
    reasons: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.entries} graph(s) built over {self.calls} call(s)"]
        lines += [f"  recompile {i + 1}: {r}" for i, r in enumerate(self.reasons)]
        return "\n".join(lines)


# ---- lowering -----------------------------------------------------------------------------------

class Lowered:
    """The static graph(s) for one set of argument types, before code generation."""

    def __init__(self, traced: Traced, backend: str, optimize: bool = True, options: dict[str, Any] | None = None,
                 recompute: bool = False):
        self.traced = traced
        self.backend = backend
        self.options = dict(options or {})  # jax: device, data_parallel, mesh
        self._programs: Any = None
        self.stages: list[tuple[str, Graph]] = [("traced", traced.graph)]
        self.report: list[PassRecord] = []
        self.partition = None
        g = traced.graph
        wrt = [i for i, s in enumerate(traced.inputs) if _slot_requires_grad(s)]
        diff_outs = [i for i, o in enumerate(traced.outputs) if o.kind == "result" and o.requires_grad]
        # a training step (backward called inside) returns plain tensors; otherwise results carry a compiled backward
        has_backward = any(n.meta.get("phase") == "backward" for n in g.nodes)
        self.needs_backward = state.grad_enabled and bool(wrt) and bool(diff_outs) and not has_backward
        if self.needs_backward:
            g = differentiate(g, wrt, diff_outs).verify()
            self.stages.append(("autodiff", g))
        self.wrt = wrt
        if optimize:
            g, self.report = run_passes(g, DEFAULT_PIPELINE, keep=self.stages)
            if backend == "numpy":  # fused groups for the numpy code generator (XLA fuses by itself)
                from .passes.fusion import NUMPY_PIPELINE

                g, fused = run_passes(g, NUMPY_PIPELINE, keep=self.stages)
                self.report += fused
        self.graph = g
        if self.needs_backward:
            self.partition = partition(g, len(traced.graph.inputs), len(traced.graph.outputs), recompute)

    def as_text(self, dialect: str | None = None) -> str:
        """The readable graphc IR; on the jax backend, dialect="stablehlo" (or "hlo") gives what XLA receives."""
        from .ir.printer import format_graph

        if dialect is not None:
            return "\n".join(p.as_text(dialect) for p in self.programs() if p is not None)
        parts = [format_graph(self.graph)]
        ad = self.stages[-1][1].meta.get("autodiff") or self.traced.graph.meta.get("autodiff")
        if ad:
            parts.append(f"# autodiff: {ad['forward_ops']} forward ops, {ad['differentiated']} differentiated, "
                         f"{ad['without_backward']} without backward work (frozen, constant or not on a path "
                         f"to the loss)")
        if self.backend == "numpy":
            from .passes.fusion import describe_groups

            parts += describe_groups(self.graph)
        if self.report:
            parts.append("# passes: " + "; ".join(str(r) for r in self.report))
        return "\n".join(parts)

    def memory_analysis(self) -> dict[str, Any]:
        """The numpy backend's memory plan (graphc/passes/memory.py), in bytes: argument_bytes (inputs, held by
        the caller), temp_peak_bytes (live intermediates and kernel scratch at the worst node), peak_bytes (the
        two together), unplanned_peak_bytes (the same without in-place reuse), in_place_nodes, bytes_reused.
        A partitioned graph reports its forward and backward graphs, and the larger peak at the top level."""
        from .passes.memory import plan_memory

        donated = donations(self.traced.inputs, self.traced.outputs)
        if self.partition is None:
            fresh = fresh_grads(self.traced.inputs, self.traced.outputs)
            return plan_memory(self.graph, donated=donated, fresh_grads=fresh).as_dict()
        fwd = plan_memory(self.partition.forward, donated=donated).as_dict()
        bwd = plan_memory(self.partition.backward).as_dict()
        top = max(fwd, bwd, key=lambda d: d["peak_bytes"])
        return {**top, "forward": fwd, "backward": bwd}

    def cost_analysis(self) -> dict[str, Any]:
        """graphc's own flop/byte count; on the jax backend, XLA's cost analysis of the compiled programs."""
        if self.backend == "jax":
            from .backends.jax.program import total_cost

            return total_cost(self.programs())
        from .ops.cost import graph_cost

        return graph_cost(self.graph)

    def programs(self) -> tuple[Any, Any]:
        """jax backend: (forward or whole-step JaxProgram, backward JaxProgram or None), built once."""
        if self.backend != "jax":
            raise ValueError(f"XLA programs exist on the jax backend only; this graph was lowered for {self.backend!r}")
        if self._programs is None:
            from .backends.jax.program import Placement, build_programs

            fwd, bwd = (self.partition.forward, self.partition.backward) if self.partition else (self.graph, None)
            self._programs = build_programs(self.traced.inputs, self.traced.outputs, fwd, bwd,
                                            Placement(**self.options))
        return self._programs

    def dump(self, path: str, format: str = "text", stage: str | None = None) -> None:
        """Write the graph as text, json, dot, svg (needs Graphviz) or html; stage: "traced", a pass name, or
        None for the optimized graph."""
        from .viz import render

        with open(path, "w", encoding="utf-8") as f:
            f.write(render(self, format, stage=stage))

    def compile(self) -> Executable:
        with gc_paused():
            return Executable(self)


def _slot_requires_grad(slot: Any) -> bool:
    return slot.requires_grad and slot.kind != "grad"


def donations(inputs: list[Any], outputs: list[Any]) -> dict[int, int]:
    """{input index: output index} for state the call replaces: a parameter, buffer or optimizer state
    and its update, an existing .grad and the accumulated one. The numpy backend may write the new value
    into the old buffer (graphc/passes/memory.py), as torch's in-place optimizers do. Arguments are not
    donated: the caller passes them anew each call and may hold them elsewhere."""
    where = {(id(s.ref), s.kind == "grad"): i for i, s in enumerate(inputs)
             if s.kind in ("param", "buffer", "state", "tensor", "grad")}
    pairs = {}
    for k, o in enumerate(outputs):
        if o.kind in ("update", "grad") and not isinstance(o.ref, (int, tuple)):
            j = where.get((id(o.ref), o.kind == "grad"))
            if j is not None:
                pairs[j] = k
    return pairs


def fresh_grads(inputs: list[Any], outputs: list[Any]) -> dict[int, str]:
    """{output index: name} for the new .grad of a captured parameter that has one already and that the call
    computes afresh (no .grad input: the step cleared it with zero_grad first). The old .grad, thrown away by the
    write-back, may lend the kernel computing the new one its buffer (graphc/passes/memory.py, _lend_grads).
    Whether a parameter has a .grad is part of the cache key, so what it is now is what it is at every call."""
    read = {id(s.ref) for s in inputs if s.kind == "grad"}
    return {k: o.name for k, o in enumerate(outputs)
            if o.kind == "grad" and isinstance(o.ref, Tensor) and id(o.ref) not in read and o.ref.grad is not None}


# ---- executables ----------------------------------------------------------------------------------

class Executable:
    """Generated code for one static graph plus its calling convention: where each input comes
    from (argument, parameter, buffer, optimizer state, seed) and where each output goes."""

    def __init__(self, lowered: Lowered):
        t = lowered.traced
        self.lowered = lowered
        self.backend, self.options = lowered.backend, lowered.options
        self.inputs, self.outputs, self.out_tree, self.out_static = t.inputs, t.outputs, t.out_tree, t.out_static
        self.in_tree, self.arg_types, self.in_static = t.in_tree, t.arg_types, t.in_static
        self.guards = t.guards
        self._unused: set[int] = set(lowered.graph.meta.get("unused", ()))
        self._wrt = lowered.wrt
        if lowered.partition is not None:
            self._setup(lowered.partition.forward, lowered.partition.backward, lowered.graph.meta["cotangents"])
        else:
            self._setup(lowered.graph, None, [])

    def _setup(self, graph: Graph, backward: Graph | None, cotangents: list[int]) -> None:
        self.graph, self.bwd_graph = graph, backward
        self._bwd = None
        self._single = self.out_tree == "*" and self.out_static == [None]  # the output is one tensor
        self._donated: list[int] = []  # inputs whose buffers the generated code overwrites with their new value
        # (parameter, the new gradient's shape and numpy dtype) for each gradient its old .grad may take (_lend_grads)
        self._grad_buffers: list[tuple[Tensor, tuple, Any]] = []
        if getattr(self, "backend", "numpy") == "jax":  # one jitted XLA program per graph, compiled now
            from .backends.jax.program import Placement, build_programs

            if self.lowered is not None:
                progs = self.lowered.programs()
            elif getattr(self, "_exported", None) is not None:  # a loaded artifact's jax.export
                from .backends.jax.program import exported_program

                progs = (exported_program(self._exported, graph, Placement(**self.options)), None)
            else:
                progs = build_programs(self.inputs, self.outputs, graph, backward, Placement(**self.options))
            for p in progs:
                if p is not None:
                    p.compile()
            self._fn, self._bwd = progs
            self._device = True  # outputs stay on the device (JaxProgram.run), held by tensors (Tensor._on_device)
            self._io = DeviceIO(self.inputs, self.outputs, graph, self._fn)  # graphc/device_io.py
            self.source = "\n".join(p.source for p in progs if p is not None)
        else:
            from .backends.numpy.codegen import generate
            from .passes.memory import plan_memory

            self._device = False
            fresh = fresh_grads(self.inputs, self.outputs) if backward is None else {}
            plan = plan_memory(graph, donated=donations(self.inputs, self.outputs), fresh_grads=fresh)
            self._donated = [j for j, v in enumerate(graph.inputs) if any(src is v for src in plan.out.values())]
            self._grad_buffers = [(self.outputs[k].ref, graph.outputs[k].type.shape, graph.outputs[k].type.dtype.np)
                                  for k in plan.grad_buffers]
            self.source, self._fn = generate(graph, "forward" if backward is not None else "step", plan=plan)
            if backward is not None:
                bsrc, self._bwd = generate(backward, "backward")
                self.source += "\n" + bsrc
        if backward is not None:
            self._cotangents = cotangents
            self._op = OpDef(f"compiled_{graph.name}", lambda *a, **k: None, kind="opaque",
                             nout=len(cotangents), vjp=self._vjp)

    # ---- calling ----------------------------------------------------------------------------------
    def _leaves(self, args: tuple, kwargs: dict) -> list[Any]:
        leaves = [leaf for _, leaf in flatten((args, kwargs))[0]]
        tensors = [x for x in leaves if isinstance(x, Tensor)]
        if len(tensors) != len(self.arg_types) or len(leaves) != len(self.in_static):
            raise TypeError(f"{self.graph.name}() takes {len(self.arg_types)} tensor argument(s) and "
                            f"{len(self.in_static) - len(self.arg_types)} other value(s), as when it was compiled; "
                            f"got {len(tensors)} tensor(s) and {len(leaves) - len(tensors)} other value(s)")
        k = 0
        for i, (leaf, static) in enumerate(zip(leaves, self.in_static)):
            if isinstance(leaf, Tensor) and static is not None:
                raise TypeError(f"{self.graph.name}(): argument {i} is a tensor, but the executable was compiled "
                                f"with the static value {static!r} there")
            if isinstance(leaf, Tensor):
                want = self.arg_types[k]
                if leaf.shape != want.shape or leaf.dtype != want.dtype:
                    raise TypeError(f"{self.graph.name}(): tensor argument {k} has type {leaf.type}, but the "
                                    f"executable was compiled for {want}")
                k += 1
            elif isinstance(leaf, np.ndarray) or leaf != static:
                raise TypeError(f"{self.graph.name}(): argument {i} is {leaf!r}, but the executable was compiled "
                                f"with the static value {static!r}")
        return leaves

    def _gather(self, leaves: list[Any]) -> list[Any]:
        if self._device:
            return self._io.gather(leaves)[0]
        arrays = []
        for s in self.inputs:
            if s.kind == "arg":
                arrays.append(leaves[s.ref]._data)
            elif s.kind == "seed":
                arrays.append(np.int64(factories._rng.integers(0, 2**62)))
            elif s.kind == "grad":
                arrays.append(s.ref.grad._data)
            elif s.kind == "hyper":
                arrays.append(np.float64(s.ref()))
            else:
                arrays.append(s.ref._data)
        if self._donated:
            _own_donated(arrays, self._donated)
        return arrays

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        leaves = self._leaves(args, kwargs)
        self._check_state_is_new()
        return self._run(leaves)

    def _run(self, leaves: list[Any]) -> Any:
        """A call whose arguments are checked (and whose state matches what was traced): gather, run, write
        back. The call path (graphc/callpath.py) comes here directly when nothing can have changed."""
        device = self._device and not state.anomaly  # anomaly mode interprets the graph in numpy
        if device:
            arrays, placed = self._io.gather(leaves)
            outs = self._fn.run(*arrays, placed=placed)
        elif self._grad_buffers and not state.anomaly:
            arrays = self._gather(leaves)
            lent = _lend_grads(self._grad_buffers)
            try:
                outs = _run(self._fn, self.graph, arrays + lent)
            except BaseException:
                # a lent .grad may hold part of this call's work now: it goes, as the step's zero_grad() said
                for (p, _, _), buf in zip(self._grad_buffers, lent):
                    if buf is not None:
                        p.grad = None
                raise
        else:
            arrays = self._gather(leaves)
            outs = _run(self._fn, self.graph, arrays)
        n_out = len(self.outputs)
        saved = outs[n_out:]
        # every output is computed before anything is written back: a failing call changes nothing
        results = self._io.write_back(leaves, outs[:n_out]) if device else self._write_back(leaves, outs[:n_out])
        if self._bwd is not None and state.grad_enabled:
            result_pos = [i for i, o in enumerate(self.outputs) if o.kind == "result"]
            diff_results = [results[result_pos.index(k)] for k in self._cotangents]
            ins = [leaves[s.ref] if s.kind == "arg" else s.ref for s in (self.inputs[i] for i in self._wrt)]
            every = [leaves[s.ref] if s.kind == "arg" else s.ref for s in self.inputs
                     if s.kind in ("arg", "param", "buffer", "tensor", "state")]
            # device-saved values share no memory with any tensor's numpy array: nothing to watch
            watch = [] if device else watch_saved(every + results, saved)
            GradFn.record(self._op, {"saved": saved, "watch": watch}, ins, diff_results)
        if self._single:  # one tensor (a loss)
            return results[0]
        return rebuild_outputs(self.out_tree, self.out_static, results)

    def _write_back(self, leaves: list[Any], outs: Any) -> list[Tensor]:
        """numpy outputs: results become tensors, the rest replace the state they update.

        State owns its memory: one value in two places (a .grad and the momentum buffer cloned from it, a result
        that is also new state) becomes two arrays; results may share one, as torch returns one tensor twice."""
        results = []
        seen: set[int] = set()  # every array handed out so far
        state_arrays: set[int] = set()
        for slot, a in zip(self.outputs, outs):
            a = np.asarray(a)
            if slot.kind == "result":
                if id(a) in state_arrays:
                    a = a.copy()
                seen.add(id(a))
                results.append(Tensor._make(a, None, _dtype(a)))
                continue
            if a.base is not None or not a.flags.writeable or id(a) in seen:
                a = a.copy()
            seen.add(id(a))
            state_arrays.add(id(a))
            if isinstance(slot.ref, int):  # the argument passed at this call
                arg = leaves[slot.ref]
                if slot.kind == "grad":  # accumulates into an existing .grad, as backward() does
                    old = arg.grad
                    arg.grad = Tensor._make(a if old is None else old._data + a, None, arg.dtype)
                else:
                    arg._data, arg._sym, arg._dev = a, None, None
                    arg._version += 1
            elif slot.kind == "grad":
                old = slot.ref.grad
                if old is not None and old._data is a:  # accumulated into its own buffer (donated)
                    old._version += 1
                else:
                    slot.ref.grad = Tensor._make(a, None, slot.ref.dtype)
            elif isinstance(slot.ref, tuple):  # new optimizer state: (optimizer, parameter, key)
                opt, p, key = slot.ref
                opt.state[p][key] = Tensor._make(a, None, _dtype(a))
            else:  # update of a parameter, buffer or existing state
                slot.ref._data, slot.ref._sym, slot.ref._dev = a, None, None
                slot.ref._version += 1
        return results

    def _vjp(self, ctx: Any, *gouts: Any) -> tuple:
        if ctx.history:
            raise RuntimeError("create_graph=True through a compiled function is not supported yet; "
                               "differentiate the eager function instead")
        check_watched(ctx.attrs["watch"])
        outs = ctx.outputs if any(g is None for g in gouts) else None  # shapes for zero cotangents
        cts = [np.zeros(outs[i].shape, outs[i].dtype.np) if g is None else g._device_value() if self._device
               else g._data for i, g in enumerate(gouts)]
        grads = _run(self._bwd, self.bwd_graph, [*ctx.attrs["saved"], *cts])
        return tuple(Tensor._make(np.asarray(g), None, t.dtype) if need and k not in self._unused else None
                     for k, (g, t, need) in enumerate(zip(grads, ctx.inputs, ctx.needs)))

    # ---- state and artifacts ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """The current parameters and buffers, by name (as the model's own state_dict names them)."""
        return {s.name: s.ref._data for s in self.inputs if s.kind in ("param", "buffer")}

    def optimizer_state(self) -> dict[str, np.ndarray]:
        return {s.name: s.ref._data for s in self.inputs if s.kind == "state"}

    def hyperparameters(self) -> dict[str, float]:
        """The current value of every hyperparameter input (read from param_groups at each call)."""
        return {s.name: s.ref() for s in self.inputs if s.kind == "hyper"}

    def failed_guard(self) -> str | None:
        """Why this executable no longer fits the optimizers' hyperparameters, or None if it does."""
        for g in self.guards:
            if not g.holds():
                return g.describe_failure()
        return None

    def _check_state_is_new(self) -> None:
        """A graph traced before the optimizer had state creates it; run again, it would start the state
        over (momentum reset every step). The compiled function retraces by itself; a bare Executable cannot."""
        for slot in self.outputs:
            if slot.kind == "new_state" and isinstance(slot.ref, tuple):
                opt, p, key = slot.ref
                if key in opt.state.get(p, {}):
                    raise RuntimeError(
                        f"{self.graph.name}: this executable was traced before the optimizer had state and would "
                        f"create {slot.name} again; call the compiled function (it retraces once the state exists) "
                        f"or take lower(...).compile() after the first step")

    def saved_graph(self) -> Graph:
        """The graph an artifact stores: the step itself (a forward graph keeps only its results)."""
        if self._bwd is None:
            return self.graph
        from .ir.rewrite import extract

        return extract(self.graph, self.graph.inputs, self.graph.outputs[:len(self.outputs)])

    def save(self, path: str, export: bool | None = None) -> None:
        """Write a portable artifact; export=True adds a jax.export of the step (the default on the jax backend)."""
        from .io.artifact import save_artifact

        save_artifact(self, path, export)


def load(path: str, backend: str | None = None, device: Any = None) -> Executable:
    """An Executable from an artifact file, runnable without the model's Python code.

    backend=None runs the artifact's jax.export when it has one and jax is installed, else numpy code
    regenerated from graph.json; "numpy" or "jax" choose (jax without an export lowers graph.json itself)."""
    from .io.artifact import read_artifact
    from .ir.types import TensorType, dtype_of
    from .trace import InputSlot, OutputSlot

    extras: dict[str, bytes] = {}
    graph, sig, arrays, grads = read_artifact(path, extras)
    exported = extras.get("xla.jaxexport")
    if backend is None:
        backend = "jax" if exported is not None and _jax_importable() else "numpy"
    options = _backend_options(backend, device, False, None)
    holders: dict[str, Tensor] = {}
    hyper: dict[str, float] = {}  # exe.hyper[name] = value changes a hyperparameter of a loaded step
    inputs = []
    for spec in sig["inputs"]:
        kind, name = spec["kind"], spec["name"]
        if kind == "arg":
            inputs.append(InputSlot("arg", name, spec["leaf"]))
        elif kind == "seed":
            inputs.append(InputSlot("seed", name))
        elif kind == "hyper":
            hyper[name] = float(spec["value"])
            inputs.append(InputSlot("hyper", name, functools.partial(hyper.__getitem__, name)))
        elif kind == "grad":
            owner = Tensor._make(None, None, dtype_of(grads[name].dtype))
            owner.grad = Tensor._make(grads[name].copy(), None, dtype_of(grads[name].dtype))
            holders[name] = owner
            inputs.append(InputSlot("grad", name, owner))
        else:
            a = arrays[name].copy()
            holders[name] = Tensor._make(a, None, dtype_of(a.dtype))
            inputs.append(InputSlot(kind, name, holders[name]))
    by_name = {s.name: s for s in inputs}
    outputs = []
    for spec in sig["outputs"]:
        kind, name = spec["kind"], spec["name"]
        ref = None
        if spec.get("leaf") is not None:  # an argument's update or .grad
            ref = spec["leaf"]
        elif kind == "update":
            ref = by_name[name].ref
        elif kind == "grad":
            ref = by_name.get(name, InputSlot("", "", Tensor._make(None, None, dtype_of("float32")))).ref
        outputs.append(OutputSlot(kind, name, ref))
    exe = Executable.__new__(Executable)
    exe.lowered = None
    exe.inputs, exe.outputs = inputs, outputs
    exe.in_tree, exe.out_tree, exe.out_static = sig["in_tree"], sig["out_tree"], sig["out_static"]
    exe.arg_types = [TensorType(tuple(t["shape"]), dtype_of(t["dtype"])) for t in sig["arg_types"]]
    exe.in_static = sig["in_static"]
    exe._unused, exe._wrt = set(), []
    exe.guards, exe.hyper = [], hyper
    exe.backend, exe.options, exe._exported = backend, options, exported if backend == "jax" else None
    exe._setup(graph, None, [])
    return exe


def _own_donated(arrays: list[Any], donated: list[int]) -> None:
    """Make sure each donated buffer is the caller's alone before the generated code writes into it.

    A donated array is overwritten with its tensor's new value, as torch's optimizers update a parameter
    in place (views of it see the new value). That is only sound when no other input of this call reads
    the same memory: an array that is a view, or that another input is (or views), is replaced by a copy
    for this call, and the write-back then installs the copy, as without donation."""
    roots: dict[int, int] = {}
    for a in arrays:
        if isinstance(a, np.ndarray):
            while isinstance(a.base, np.ndarray):
                a = a.base
            roots[id(a)] = roots.get(id(a), 0) + 1
    for j in donated:
        a = arrays[j]
        if a.base is not None or roots.get(id(a)) != 1 or not a.flags.writeable:
            arrays[j] = np.array(a, copy=True)


def _lend_grads(params: list[tuple[Tensor, tuple, Any]]) -> list[Any]:
    """Per parameter, its current .grad's array if the call may write the new gradient into it, else None.

    Only a gradient nobody else can see: a plain tensor (no requires_grad, no weak reference, no other
    reference than the parameter's slot) holding a C-contiguous, writeable host array that it alone refers to
    (no view, no alias, no array passed to from_numpy) of the gradient's type. A .grad the user kept
    (`g = p.grad`) keeps its value: the step gives p a new tensor, as torch's zero_grad() and backward() do."""
    out = []
    for p, shape, dtype in params:
        old = p._grad
        # references: p's slot, `old`, getrefcount's argument; then old's slot, `a`, the argument
        if (old is None or old._dev is not None or old._requires_grad or old.__weakref__ is not None
                or sys.getrefcount(old) > 3):
            out.append(None)
            continue
        a = old._data
        ok = (type(a) is np.ndarray and a.base is None and a.flags.c_contiguous and a.flags.writeable
              and a.shape == shape and a.dtype == dtype and sys.getrefcount(a) <= 3)
        out.append(a if ok else None)
    return out


def _dtype(a: np.ndarray) -> Any:
    return dtype_of(a.dtype)


# ---- the decorator ----------------------------------------------------------------------------------

def _check_arguments(fn: Callable, args: tuple, kwargs: dict, arg_names: list[str]) -> None:
    """Before tracing: a call that does not fit fn's signature raises Python's own TypeError, and a numpy
    array (which would become a new static value, and a new graph, on every call) asks for a tensor."""

    for path, leaf in flatten((args, kwargs))[0]:
        if isinstance(leaf, np.ndarray):
            raise TypeError(f"argument '{_arg_name(path, arg_names)}' of a compiled function is a numpy array; "
                            f"pass a graphc tensor (gc.tensor(array) or gc.from_numpy(array)) so it becomes a graph "
                            f"input")
    target = fn.forward if hasattr(fn, "forward") and hasattr(fn, "named_parameters") else fn
    try:
        inspect.signature(target).bind(*args, **kwargs)
        return
    except ValueError:  # no signature to check against
        return
    except TypeError as e:
        why = str(e)
    plain = getattr(target, "__func__", target)
    if isinstance(plain, types.FunctionType) and not hasattr(plain, "__wrapped__"):
        try:
            target(*args, **kwargs)  # binding fails before the body runs: Python's own wording
        except TypeError as e:
            raise TypeError(str(e)) from None
    raise TypeError(f"{getattr(target, '__qualname__', target)}() {why}")


# tracing binds symbolic values to shared tensors (parameters, optimizer state): one trace at a time in a
# process, so two compiled functions over one model can be built from two threads at once
_TRACE_LOCK = threading.RLock()


class CompiledFunction:
    def __init__(self, fn: Callable, backend: str = "numpy", dump: str | None = None, optimize: bool = True,
                 device: Any = None, data_parallel: bool = False, mesh: Any = None, recompute: bool = False):
        self.options = _backend_options(backend, device, data_parallel, mesh)
        self.recompute = recompute
        self.fn, self.backend, self.dump_dir, self.optimize = fn, backend, dump, optimize
        target = fn.forward if hasattr(fn, "forward") and hasattr(fn, "named_parameters") else fn
        try:
            self.arg_names = [p for p in inspect.signature(target).parameters]
        except (TypeError, ValueError):
            self.arg_names = []
        self.name = getattr(target, "__name__", type(fn).__name__)
        self._cache: dict[tuple, list[Executable]] = {}  # key -> executables differing in guards
        self._keys: list[dict[str, tuple]] = []
        self._reasons: list[str] = []
        self._calls = 0
        self._lock = _TRACE_LOCK
        self._fast = FastCalls(fn)
        functools.update_wrapper(self, target, updated=())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        hit = None if kwargs else self._fast.lookup(args)  # graphc/callpath.py: the last answer, if it holds
        if hit is not None:
            if callpath.VERIFY:
                self._verify(args, hit)
            with self._lock:
                self._calls += 1
            return hit.plan(args) if hit.plan is not None else hit.exe._run(list(args))
        epoch = EPOCH[0]  # before anything is read: a change while the key is computed invalidates it
        reached = reach(self.fn)  # taken before the build: tracing runs user code, which could rebind globals
        deep = deep_attrs(reached)
        owners = find_state_owners(self.fn, args, reached)
        desc = _describe(self.fn, args, kwargs, self.arg_names, owners)
        key = _freeze(desc)
        with self._lock:
            self._calls += 1
            exe, failed = self._choose(key)
            if exe is None:
                exe = self._build(args, kwargs, desc, key, failed)
            stateful = bool(owners[0] or owners[1])
            self._fast.remember(args, kwargs, exe, reached, deep, epoch if stateful else None, key)
        return _call_executable(exe, *args, **kwargs)

    def _choose(self, key: tuple) -> tuple[Executable | None, str | None]:
        """The cached executable for this key whose hyperparameter guards hold; else why the last one failed."""
        failed = None
        for cand in self._cache.get(key, ()):
            failed = cand.failed_guard()
            if failed is None:
                return cand, None
        return None, failed

    def _verify(self, args: tuple, hit: Any) -> None:
        """GRAPHC_VERIFY_CALLS: the full path must agree with a reused answer (graphc/epoch.py lists what can
        change a key; this catches what it misses)."""
        desc = _describe(self.fn, args, {}, self.arg_names, find_state_owners(self.fn, args, reach(self.fn)))
        key = _freeze(desc)
        if key != hit.key or self._choose(key)[0] is not hit.exe:
            diff = explain_miss(dict(hit.key), desc)
            raise AssertionError(f"{self.name}: the call path reused an executable the full cache key does not "
                                 f"choose ({'; '.join(diff) or 'guards differ'})")

    def _trace(self, args: tuple, kwargs: dict) -> Traced:
        _check_arguments(self.fn, args, kwargs, self.arg_names)
        modules, optims = find_state_owners(self.fn, args)
        return trace(self.fn, args, kwargs, name=self.name, names=state_names(modules, optims), optims=optims,
                     arg_names=self.arg_names)

    def _build(self, args: tuple, kwargs: dict, desc: dict, key: tuple, failed: str | None = None) -> Executable:
        if failed is not None:
            self._reasons.append(failed)
        elif self._keys:
            nearest = min(self._keys, key=lambda k: len(explain_miss(k, desc)))
            diff = explain_miss(nearest, desc)
            if len(diff) > 4:
                diff = diff[:3] + [f"... and {len(diff) - 3} more differences"]
            self._reasons.append("; ".join(diff) or "unknown")
        with gc_paused():
            lowered = Lowered(self._trace(args, kwargs), self.backend, self.optimize, self.options, self.recompute)
            from .viz.dump import dump_build  # dump=DIR or GRAPHC_DUMP: write this build's graphs

            dump_build(self.name, lowered, self.dump_dir)
            exe = lowered.compile()
        self._cache.setdefault(key, []).append(exe)
        self._keys.append(desc)
        return exe

    def lower(self, *args: Any, **kwargs: Any) -> Lowered:
        """The static graph for these argument types, ahead of time (nothing is run or cached)."""
        with self._lock, gc_paused():
            return Lowered(self._trace(args, kwargs), self.backend, self.optimize, self.options, self.recompute)

    def cache_info(self) -> CacheInfo:
        return CacheInfo(sum(map(len, self._cache.values())), len(self._keys), self._calls, list(self._reasons))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fn, name)


def _jax_importable() -> bool:
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def _backend_options(backend: str, device: Any, data_parallel: bool, mesh: Any) -> dict[str, Any]:
    """Check backend= and its placement arguments up front, so a typo fails at gc.compile, not at the first call."""
    if backend == "numpy":
        if device not in (None, "cpu") or data_parallel or mesh is not None:
            raise ValueError("device=, data_parallel= and mesh= need backend='jax'; the numpy backend runs on the CPU")
        return {}
    if backend != "jax":
        raise ValueError(f"unknown backend {backend!r}; available: 'numpy', 'jax'")
    try:
        import jax  # noqa: F401
    except ImportError as e:
        raise ImportError(f"backend='jax' needs jax ({e}); install it with pip install 'graphc[jax]'") from None
    return {"device": device, "data_parallel": bool(data_parallel), "mesh": mesh}


def compile(fn: Callable | None = None, *, backend: str = "numpy", dump: str | None = None, optimize: bool = True,
            device: Any = None, data_parallel: bool = False, mesh: Any = None, recompute: bool = False) -> Any:
    """@gc.compile or gc.compile(fn_or_module, backend="numpy" | "jax"): trace on first call, then run generated code.

    recompute=True: when the compiled function's results are differentiated later (a forward graph and a
    backward graph), save fewer activations for the backward and recompute cheap elementwise ops there
    instead (a min-cut over bytes saved, graphc/passes/partition.py): less memory held between forward
    and backward, some more work in backward. Training steps (backward inside) are one graph: no effect.

    jax only: device= "cpu" | "gpu" | "tpu" | "gpu:1" | a jax.Device picks where the program runs;
    data_parallel=True splits the batch (leading dimension of every tensor argument) over all devices of that
    platform and replicates parameters and state; mesh= a jax.sharding.Mesh does the same over its devices."""
    if fn is None:
        return lambda f: CompiledFunction(f, backend, dump, optimize, device, data_parallel, mesh, recompute)
    return CompiledFunction(fn, backend, dump, optimize, device, data_parallel, mesh, recompute)


# errors end at the user's line (graphc/errors.py)
for _cls in (Lowered, Executable, CompiledFunction):
    guard_class(_cls)
# a compiled function's call is already inside its own boundary: call the Executable without a second one
_call_executable = Executable.__call__.__wrapped__
load, compile = api_boundary(load), api_boundary(compile)
