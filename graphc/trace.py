"""Tracing: run a Python function on symbolic tensors and record a Graph.

Arguments become graph inputs. Tensors the function reaches by other means (module
parameters and buffers, optimizer state, captured tensors) are lifted to named graph inputs
the first time an op reads them, never baked in as constants. In-place updates rebind a
tensor's IR value; at the end every tensor whose value changed, and every .grad or
optimizer-state tensor created while tracing, becomes a graph output written back after
each call (functionalization). Random ops take their seed as a graph input.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import FunctionType, MethodType, ModuleType
from typing import Any

from .context import module_path, state
from .errors import user_location
from .hyper import Hyper, hyper_slots
from .ir.graph import Graph, Value
from .pytree import flatten, unflatten
from .tensor import Tensor


@dataclass
class InputSlot:
    """Where a graph input's value comes from at call time."""

    kind: str  # arg | param | buffer | state | grad | tensor | seed | hyper
    name: str
    ref: Any = None  # the captured Tensor (the parameter, for grad), the argument's leaf index, or for a
    #                  hyperparameter the function that reads its current value from param_groups
    requires_grad: bool = False


@dataclass
class OutputSlot:
    """What a graph output means: a user result or a state write-back."""

    kind: str  # result | update | grad | new_state
    name: str
    ref: Any = None  # Tensor to write back into; for new_state, (optimizer, parameter, key) to create; for an
    #                  argument's update or .grad, the argument's leaf index
    requires_grad: bool = False  # a result that carries autograd history out of the graph


#: how out_static spells a result leaf that is None (None itself marks a tensor result there). A dict is
#: never a pytree leaf, so it cannot be mistaken for a value, and it survives an artifact's JSON.
STATIC_NONE = {"none": None}


def rebuild_outputs(out_tree: Any, out_static: list[Any], results: list[Any]) -> Any:
    """The compiled function's return value: its result tensors, in order, put back among the static leaves."""
    it = iter(results)
    return unflatten(out_tree, [next(it) if s is None else None if isinstance(s, dict) else s for s in out_static])


@dataclass
class Traced:
    graph: Graph
    inputs: list[InputSlot]
    outputs: list[OutputSlot]
    out_tree: Any
    out_static: list[Any] = field(default_factory=list)  # non-tensor result leaves, fixed at trace time (None:
    #                                                      a tensor result; STATIC_NONE: the value None)
    in_tree: Any = None
    arg_types: list[Any] = field(default_factory=list)  # TensorType of each tensor argument
    in_static: list[Any] = field(default_factory=list)  # every argument leaf; None where it is a tensor
    guards: list[Any] = field(default_factory=list)  # hyperparameter decisions the graph depends on


def reach(fn: Callable) -> dict[str, Any]:
    """Every object, other than the call's arguments, that fn can take state from: the globals its code names,
    its closure cells, default values and bound object. Compiled functions compare these by identity to know
    that the state owners cannot have changed since the last call (graphc/callpath.py)."""
    cands: dict[str, Any] = {}
    plain = type(fn) is FunctionType and not fn.__dict__  # (no attribute lookups that fail: every call asks)
    target = fn if plain else getattr(fn, "__func__", fn)
    if not plain and hasattr(fn, "named_parameters"):
        cands[""] = fn
    code = target.__code__ if plain else getattr(target, "__code__", None)
    if code is not None:
        g = getattr(target, "__globals__", {})
        for n in code.co_names:
            if n in g:
                cands[n] = g[n]
        for n, cell in zip(code.co_freevars, getattr(target, "__closure__", None) or ()):
            try:
                cands[n] = cell.cell_contents
            except ValueError:
                pass
        # default values (def step(x, model=model)) are reached as surely as globals
        defaults = getattr(target, "__defaults__", None) or ()
        names = code.co_varnames[code.co_argcount - len(defaults):code.co_argcount]
        cands.update(zip(names, defaults))
        cands.update(getattr(target, "__kwdefaults__", None) or {})
    bound = None if plain else getattr(fn, "__self__", None)
    if bound is not None:
        cands["self"] = bound
        if not hasattr(bound, "named_parameters"):  # a trainer object's method: its modules and optimizers
            for k, v in getattr(bound, "__dict__", {}).items():
                cands.setdefault(f"self.{k}", v)
    return cands


def find_state_owners(fn: Callable, args: tuple, reached: dict[str, Any] | None = None
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Modules and optimizers the function can reach: arguments, closure cells and globals it names
    (reached: what reach(fn) gave, when the caller has it)."""
    cands = reach(fn) if reached is None else dict(reached)
    for i, a in enumerate(args):
        cands.setdefault(f"arg{i}", a)
    for k, v in list(cands.items()):  # one attribute deep into plain objects: cfg.model, trainer.opt, cfg.w
        if plain_object(v):
            for a, x in vars(v).items():
                cands.setdefault(f"{k}.{a}", x)
    modules = {k: v for k, v in cands.items() if hasattr(v, "named_parameters") and hasattr(v, "named_buffers")}
    optims = {k: v for k, v in cands.items() if hasattr(v, "param_groups") and hasattr(v, "state")}
    tensors = {k: v for k, v in cands.items() if isinstance(v, Tensor) and not k.startswith("arg")}
    if tensors:
        modules = {**modules, "": _Captured(tensors)} if "" not in modules else modules
    return modules, optims


def plain_object(v: Any) -> bool:
    """An instance of a user class (a config, a trainer): not a module, class, function, tensor or state owner."""
    return (hasattr(v, "__dict__") and not isinstance(v, (type, ModuleType, FunctionType, MethodType, Tensor))
            and not hasattr(v, "named_parameters") and not hasattr(v, "param_groups") and not callable(v))


class _Captured:
    """Tensors a function reaches through globals or closure cells, named by their variable."""

    training = True

    def __init__(self, tensors: dict[str, Tensor]):
        self.tensors = tensors

    def named_parameters(self):
        return [(k, v) for k, v in self.tensors.items() if v.requires_grad]

    def named_buffers(self):
        return [(k, v) for k, v in self.tensors.items() if not v.requires_grad]

    def named_modules(self):
        return []


Names = dict[int, tuple[str, str, Any]]


def state_names(modules: dict[str, Any], optims: dict[str, Any]) -> Names:
    """id(tensor) -> (kind, readable name, owner) for every parameter, buffer, existing .grad and
    optimizer state tensor. A .grad is read through its parameter (the owner) at call time."""
    names: Names = {}
    # names are prefixed by the variable only when several modules hold state
    prefix = sum(1 for m in modules.values() if any(True for _ in m.named_parameters())
                 or any(True for _ in m.named_buffers())) > 1
    for var, m in modules.items():
        pre = f"{var}." if prefix and var else ""
        for n, p in m.named_parameters():
            names.setdefault(id(p), ("param", pre + n, None))
            if p.grad is not None:
                names.setdefault(id(p.grad), ("grad", "grad." + pre + n, p))
        for n, b in m.named_buffers():
            names.setdefault(id(b), ("buffer", pre + n, None))
    for var, opt in optims.items():
        for group in opt.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    names.setdefault(id(p.grad), ("grad", f"grad.{var}.param{len(names)}", p))
        for p, st in opt.state.items():
            pname = names.get(id(p), ("", f"param{len(names)}", None))[1]
            for k, v in st.items():
                if isinstance(v, Tensor):
                    names.setdefault(id(v), ("state", f"{var}.{pname}.{k}", None))
    return names


class Tracer:
    def __init__(self, name: str, names: Names):
        self.graph = Graph(name)
        self.names = names
        self.inputs: list[InputSlot] = []
        self.lifted: dict[int, Tensor] = {}
        self.mutated_set: dict[int, Tensor] = {}
        self.start_value: dict[int, Value] = {}
        self.grads_before: dict[int, Any] = {}
        self.n_const = 0
        self.guards: list[Any] = []

    # ---- hooks called by dispatch.apply / Tensor / factories ----------------------------------------
    def value_of(self, t: Tensor) -> Value:
        if t._sym is not None:
            return t._sym
        if t._name == "#const":
            # a Python scalar lifted by an operator: a true constant of this trace
            node = self.graph.add_node("full", [], {"shape": (), "value": t._data.item(), "dtype": t.dtype.name},
                                       [t.type], self._meta())
            return node.outputs[0]
        kind, name, owner = self.names.get(id(t), ("tensor", None, None))
        if name is None:
            name = f"const{self.n_const}"
            self.n_const += 1
        v = self.graph.add_input(name, t.type)
        self.inputs.append(InputSlot(kind, v.name, owner if kind == "grad" else t, t.requires_grad))
        self.lifted[id(t)] = t
        self.start_value[id(t)] = v
        self.grads_before[id(t)] = t.grad
        t._sym = v
        return v

    def record(self, op: Any, inputs: Any, attrs: dict, out_types: list) -> list[Tensor]:
        vals = [self.value_of(t) for t in inputs]
        if any(isinstance(a, Hyper) for a in attrs.values()):  # baked into the graph: valid while unchanged
            attrs = {k: a.pin() if isinstance(a, Hyper) else a for k, a in attrs.items()}
        node = self.graph.add_node(op.name, vals, attrs, out_types, self._meta())
        return [Tensor._make(None, v, v.type.dtype) for v in node.outputs]

    def mutated(self, t: Tensor) -> None:
        self.mutated_set[id(t)] = t

    def hyper_input(self, name: str, read: Callable[[], float]) -> Tensor:
        """A float64 scalar input read from an optimizer's param_groups at every call."""
        from .ir.types import TensorType, float64

        v = self.graph.add_input(name, TensorType((), float64))
        self.inputs.append(InputSlot("hyper", v.name, read))
        return Tensor._make(None, v, float64)

    def seed(self) -> Tensor:
        from .ir.types import TensorType, int64

        v = self.graph.add_input("seed", TensorType((), int64))
        self.inputs.append(InputSlot("seed", v.name))
        return Tensor._make(None, v, int64)

    def control_flow_message(self, what: str, where: str | None) -> str:
        return (f"{what} needs the concrete value of a traced tensor at {where or '<unknown>'}: a compiled graph "
                f"cannot branch on data. Use gc.where(cond, a, b) for elementwise choices, pass the value as a static "
                f"Python argument, or move this code out of the compiled function.")

    def _meta(self) -> dict:
        meta = {"phase": state.phase}
        if state.meta_override is not None:
            meta.update((k, v) for k, v in state.meta_override.items() if v)
            return meta
        loc = user_location()
        if loc:
            meta["source"] = loc
        mp = module_path()
        if mp:
            meta["module"] = mp
        if not state.grad_enabled and state.phase == "forward":
            meta["no_grad"] = True  # (no_grad blocks, detach) the compiled backward must not differentiate it
        return meta


def trace(fn: Callable, args: tuple, kwargs: dict, *, name: str, names: Names,
          optims: dict[str, Any] | None = None, arg_names: list[str] | None = None) -> Traced:
    """Record fn(*args, **kwargs) as a Graph. Tensor leaves of the arguments become graph inputs."""
    leaves, _ = flatten((args, kwargs))
    tracer = Tracer(name, names)
    proxies: list[Any] = []
    arg_inputs: dict[int, Value] = {}
    for i, (path, leaf) in enumerate(leaves):
        if isinstance(leaf, Tensor):
            v = tracer.graph.add_input(_arg_name(path, arg_names or []), leaf.type)
            tracer.inputs.append(InputSlot("arg", v.name, i, leaf.requires_grad))
            p = Tensor._make(None, v, leaf.dtype)
            p._requires_grad = leaf.requires_grad
            arg_inputs[id(p)] = v
            proxies.append(p)
        else:
            proxies.append(leaf)
    from .pytree import unflatten

    _, tree = flatten((args, kwargs))
    sargs, skwargs = unflatten(tree, proxies)
    opt_state_before = {id(v) for o in (optims or {}).values() for st in o.state.values() for v in st.values()}
    # the optimizers' state as it was: tracing must leave no symbolic tensor behind in it
    snapshot = [(o, {p: dict(st) for p, st in o.state.items()}) for o in (optims or {}).values()]
    # and every existing .grad (zero_grad() may drop one before its parameter is ever read)
    grads_at_start = [(owner, owner.grad) for kind, _, owner in names.values() if kind == "grad"]
    prev, state.tracer = state.tracer, tracer
    restore_hypers = hyper_slots(optims or {}, tracer.hyper_input)
    try:
        result = fn(*sargs, **skwargs)
        out_leaves, out_tree = flatten(result)
        outputs: list[OutputSlot] = []
        out_vals: list[Value] = []
        static = []
        for path, leaf in out_leaves:
            if isinstance(leaf, Tensor):
                out_vals.append(tracer.value_of(leaf))
                outputs.append(OutputSlot("result", "out" + path, None, leaf.requires_grad))
                static.append(None)
            else:
                static.append(STATIC_NONE if leaf is None else leaf)
        # state written back after each call: rebound tensors, new .grad, new optimizer state
        for tid, t in list(tracer.lifted.items()):
            if tid in tracer.mutated_set and t._sym is not tracer.start_value[tid]:
                out_vals.append(t._sym)
                outputs.append(OutputSlot("update", tracer.start_value[tid].name, t))
            g = t.grad
            if g is not None and g is not tracer.grads_before[tid] and g._sym is not None:
                out_vals.append(tracer.value_of(g))
                outputs.append(OutputSlot("grad", "grad." + tracer.start_value[tid].name, t))
        # an argument's in-place update and its .grad go to the tensor passed at each call (ref: leaf index)
        for i, p in enumerate(proxies):
            if isinstance(p, Tensor) and p._sym is not arg_inputs[id(p)]:
                out_vals.append(p._sym)
                outputs.append(OutputSlot("update", arg_inputs[id(p)].name, i))
            if isinstance(p, Tensor) and p.grad is not None:
                out_vals.append(tracer.value_of(p.grad))
                outputs.append(OutputSlot("grad", "grad." + arg_inputs[id(p)].name, i))
        for var, o in (optims or {}).items():
            for prm, st in o.state.items():
                for k, v in st.items():
                    # existing state first: reading its _data would copy a device-held value to the host
                    if isinstance(v, Tensor) and id(v) not in opt_state_before and v._sym is not None \
                            and v._data is None:
                        pname = names.get(id(prm), ("", "param", None))[1]
                        out_vals.append(v._sym)
                        outputs.append(OutputSlot("new_state", f"{var}.{pname}.{k}", (o, prm, k)))
        tracer.graph.outputs = out_vals
    finally:
        state.tracer = prev
        restore_hypers()
        for o, before in snapshot:
            for p in [p for p in o.state if p not in before]:
                del o.state[p]
            for p, st in before.items():
                o.state[p].clear()
                o.state[p].update(st)
        for tid, t in tracer.lifted.items():
            t._sym = None
            if t.grad is not tracer.grads_before[tid]:
                t.grad = tracer.grads_before[tid]
        for p, g in grads_at_start:
            p.grad = g
    return Traced(tracer.graph, tracer.inputs, outputs, out_tree, static, tree,
                  [leaf.type for _, leaf in leaves if isinstance(leaf, Tensor)],
                  [None if isinstance(leaf, Tensor) else leaf for _, leaf in leaves], tracer.guards)


def _arg_name(path: str, arg_names: list[str]) -> str:
    """A leaf path of (args, kwargs) -> a readable name: '[0][1][0]' -> 'y_0' when the second
    parameter is called y; kwargs keep their keyword."""
    parts = [p.strip("'\"") for p in path.replace("]", "").split("[") if p]
    if len(parts) < 2:
        return "arg"
    if parts[0] == "0":
        i = int(parts[1])
        head = arg_names[i] if i < len(arg_names) else f"arg{i}"
    else:
        head = parts[1]
    return "_".join([head] + parts[2:])
