"""nn.Module: the container of parameters, buffers and submodules, with torch's API and repr.

Attribute assignment registers Parameters, Modules and (registered) buffers, exactly as in
torch, so model code written for torch runs unchanged. Each module remembers the attribute
name it was registered under; `__call__` pushes that name on graphc's module stack, so every
op recorded inside knows its module path (`layer1.0.conv1`) for graph dumps and errors.
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from ..autograd import no_grad
from ..context import module_scope
from ..epoch import EPOCH, ObservedDict
from ..errors import guard_class
from ..ir.types import DType, dtype_of
from ..tensor import Tensor
from .parameter import Parameter

_IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _addindent(s: str, n: int) -> str:
    lines = s.split("\n")
    if len(lines) == 1:
        return s
    first = lines.pop(0)
    return first + "\n" + "\n".join(" " * n + line for line in lines)


def _quoted(keys: list[str]) -> str:
    return ", ".join(f'"{k}"' for k in keys)


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return f"graphc.Size({list(shape)})"


class RemovableHandle:
    """Returned by register_forward_hook / register_forward_pre_hook; .remove() unregisters."""

    _next_id = 0

    def __init__(self, hooks: dict[int, Callable]) -> None:
        self.hooks, self.id = hooks, RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self) -> None:
        self.hooks.pop(self.id, None)


_OBSERVED = frozenset({"_parameters", "_buffers", "_modules"})


class Module:
    """Base class of all layers and models (torch.nn.Module)."""

    training: bool
    _graphc_name: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            raise TypeError(f"{type(self).__name__}.__init__() got unexpected arguments")
        d = self.__dict__
        d["training"] = True
        # observed: a change moves graphc.epoch.EPOCH, so compiled functions notice it without a full check
        d["_parameters"] = ObservedDict()
        d["_buffers"] = ObservedDict()
        d["_non_persistent_buffers_set"] = set()
        d["_modules"] = ObservedDict()
        d["_forward_hooks"] = {}
        d["_forward_pre_hooks"] = {}
        d["_graphc_name"] = ""  # the attribute name under the parent module; "" for a root

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with module_scope(self._graphc_name):
            for hook in list(self._forward_pre_hooks.values()):
                res = hook(self, args)
                if res is not None:
                    args = res if isinstance(res, tuple) else (res,)
            out = self.forward(*args, **kwargs)
            for hook in list(self._forward_hooks.values()):
                res = hook(self, args, out)
                if res is not None:
                    out = res
        return out

    def register_forward_hook(self, hook: Callable) -> RemovableHandle:
        h = RemovableHandle(self._forward_hooks)
        self._forward_hooks[h.id] = hook
        return h

    def register_forward_pre_hook(self, hook: Callable) -> RemovableHandle:
        h = RemovableHandle(self._forward_pre_hooks)
        self._forward_pre_hooks[h.id] = hook
        return h

    # ---- registration -----------------------------------------------------------------------------
    def _check_name(self, name: Any, what: str) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {what} before Module.__init__() call")
        if not isinstance(name, str):
            raise TypeError(f"{what} name should be a string. Got {type(name).__name__}")
        if name == "":
            raise KeyError(f'{what} name can\'t be empty string ""')
        if "." in name:
            raise KeyError(f'{what} name can\'t contain "."')

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Register state that is not a parameter (BatchNorm's running stats); persistent buffers are saved."""
        self._check_name(name, "buffer")
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError(f"attribute '{name}' already exists")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' "
                            "(graphc Tensor or None required)")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        self._check_name(name, "parameter")
        if hasattr(self, name) and name not in self._parameters:
            raise KeyError(f"attribute '{name}' already exists")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter '{name}' "
                            "(graphc.nn.Parameter or None required)")
        if param is not None and not param.is_leaf:
            raise ValueError(f"Cannot assign non-leaf Tensor to parameter '{name}'. Model parameters must be "
                             "created explicitly.")
        self._parameters[name] = param

    def add_module(self, name: str, module: Module | None) -> None:
        self._check_name(name, "module")
        if hasattr(self, name) and name not in self._modules:
            raise KeyError(f"attribute '{name}' already exists")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        if module is not None:
            module.__dict__["_graphc_name"] = name
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name: str, value: Any) -> None:
        EPOCH[0] += 1  # training, settings, parameters: compiled functions' cache keys (graphc/epoch.py)
        d = self.__dict__
        params = d.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            self._remove_from(name, d, self._buffers, self._modules, self._non_persistent_buffers_set)
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                                "(graphc.nn.Parameter or None expected)")
            self.register_parameter(name, value)
        elif isinstance(value, Module):
            if params is None:
                raise AttributeError("cannot assign module before Module.__init__() call")
            self._remove_from(name, d, params, self._buffers, self._non_persistent_buffers_set)
            value.__dict__["_graphc_name"] = name
            self._modules[name] = value
        elif params is not None and name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module '{name}' "
                                "(graphc.nn.Module or None expected)")
            self._modules[name] = value
        elif params is not None and name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                                "(graphc Tensor or None expected)")
            self._buffers[name] = value
        else:
            if name in _OBSERVED and type(value) is not ObservedDict and isinstance(value, dict):
                value = ObservedDict(value)  # (model._modules = {...}: later writes must keep moving EPOCH)
            object.__setattr__(self, name, value)

    @staticmethod
    def _remove_from(name: str, *containers: Any) -> None:
        for c in containers:
            if name in c:
                if isinstance(c, set):
                    c.discard(name)
                else:
                    del c[name]

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            s = d.get(store)
            if s is not None and name in s:
                return s[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        EPOCH[0] += 1
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                self._non_persistent_buffers_set.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))

    # ---- traversal --------------------------------------------------------------------------------
    def named_modules(self, memo: set[int] | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is None:
                continue
            yield from m.named_modules(memo, prefix + ("." if prefix else "") + name, remove_duplicate)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        seen: set[int] = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self) -> Iterator[Module]:
        for _, m in self.named_children():
            yield m

    def _named_members(self, store: str, prefix: str, recurse: bool,
                       remove_duplicate: bool) -> Iterator[tuple[str, Tensor]]:
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        seen: set[int] = set()
        for mp, m in mods:
            for k, v in getattr(m, store).items():
                if v is None or (remove_duplicate and id(v) in seen):
                    continue
                seen.add(id(v))
                yield (mp + "." if mp else "") + k, v

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def get_submodule(self, target: str) -> Module:
        mod = self
        for item in target.split(".") if target else []:
            if item not in mod._modules or mod._modules[item] is None:
                raise AttributeError(f"{type(mod).__name__} has no attribute `{item}`")
            mod = mod._modules[item]
        return mod

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ---- modes and gradients ----------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = mode
        for m in self.children():
            m.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                with no_grad():
                    p.grad = p.grad.detach()
                    p.grad.zero_()

    # ---- dtype / device ---------------------------------------------------------------------------
    def _apply_tensors(self, fn: Callable[[Tensor], Tensor]) -> Module:
        """Convert every parameter, its grad and every buffer in place (the objects are kept)."""
        with no_grad():
            for m in self.modules():
                for store in (m._parameters, m._buffers):
                    for t in store.values():
                        if t is None:
                            continue
                        t.data = fn(t)
                        if t.grad is not None:
                            t.grad = fn(t.grad)
        return self

    def to(self, *args: Any, **kwargs: Any) -> Module:
        """Accepts a dtype, a device ('cpu' only), a tensor (its dtype) or dtype=/device= keywords."""
        dtype = kwargs.get("dtype")
        device = kwargs.get("device")
        for a in args:
            if isinstance(a, Tensor):
                dtype = a.dtype
            elif isinstance(a, (DType, np.dtype, type)):
                dtype = a
            else:
                device = a
        if device is not None and str(device).split(":")[0] != "cpu":
            raise RuntimeError(f"graphc eager tensors live on the CPU; got device {device!r} "
                               "(compile with backend='jax' to run on accelerators)")
        if dtype is None:
            return self
        dt = dtype_of(dtype)
        if not dt.is_floating_point:
            raise TypeError(f"nn.Module.to only accepts floating point dtypes, but got desired dtype={dt}")
        return self._apply_tensors(lambda t: t.to(dt) if t.dtype.is_floating_point else t)

    def float(self) -> Module:
        return self.to(dtype_of("float32"))

    def double(self) -> Module:
        return self.to(dtype_of("float64"))

    def cpu(self) -> Module:
        return self

    def cuda(self, device: Any = None) -> Module:
        raise RuntimeError("graphc eager mode runs on the CPU; compile with backend='jax' for GPUs")

    # ---- state dict -------------------------------------------------------------------------------
    def _state_items(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        """(key, tensor) of every parameter and persistent buffer, torch's order and duplicates."""
        for k, p in self._parameters.items():
            if p is not None:
                yield prefix + k, p
        for k, b in self._buffers.items():
            if b is not None and k not in self._non_persistent_buffers_set:
                yield prefix + k, b
        for name, m in self._modules.items():
            if m is not None:
                yield from m._state_items(prefix + name + ".")

    def state_dict(self, *args: Any, destination: dict | None = None, prefix: str = "",
                   keep_vars: bool = False) -> OrderedDict[str, Tensor]:
        """Parameters and persistent buffers by dotted name. Values are detached aliases of the
        module's tensors (they share memory, as torch's do) unless keep_vars=True."""
        out = OrderedDict() if destination is None else destination
        for k, t in self._state_items(prefix):
            out[k] = t if keep_vars else t.detach()
        return out

    def _fill_missing(self, prefix: str, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults for keys a checkpoint may lack (torch fills BatchNorm's num_batches_tracked)."""
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        assign: bool = False) -> _IncompatibleKeys:
        """Copy values (numpy arrays or tensors) into the parameters and buffers by name.

        Every key and shape is checked before anything is written, so a failed load leaves the
        model exactly as it was; the error lists every missing, unexpected and mis-shaped key
        (size mismatches raise even with strict=False, as in torch)."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict)}.")
        given = dict(state_dict)
        for prefix, m in self._prefixed_modules():
            for k, v in m._fill_missing(prefix, given).items():
                given.setdefault(k, v)
        own = list(self._state_items())
        own_keys = {k for k, _ in own}
        missing = [k for k, _ in own if k not in given]
        unexpected = [k for k in given if k not in own_keys]
        errors, arrays = [], []
        for k, t in own:
            if k not in given:
                continue
            a = _as_array(given[k], k)
            if tuple(a.shape) != tuple(t.shape):
                errors.append(f"size mismatch for {k}: copying a param with shape {_fmt_shape(a.shape)} from "
                              f"checkpoint, the shape in current model is {_fmt_shape(t.shape)}.")
                continue
            try:  # converted before anything is written: a value that cannot be converted changes nothing
                arrays.append((t, np.asarray(a, dtype=t.dtype.np)))
            except (TypeError, ValueError) as e:
                errors.append(f"could not convert {k} (dtype {a.dtype}) to {t.dtype.name}: {e}")
        if strict:
            if unexpected:
                errors.insert(0, f"Unexpected key(s) in state_dict: {_quoted(unexpected)}. ")
            if missing:
                errors.insert(0, f"Missing key(s) in state_dict: {_quoted(missing)}. ")
        if errors:
            raise RuntimeError("Error(s) in loading state_dict for {}:\n\t{}".format(
                type(self).__name__, "\n\t".join(errors)))
        with no_grad():
            for t, a in arrays:
                t.copy_(Tensor(a))
        return _IncompatibleKeys(missing, unexpected)

    def _prefixed_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m._prefixed_modules(prefix + name + ".")

    # ---- repr -------------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({k}): " + _addindent(repr(m), 2) for k, m in self._modules.items()]
        lines = extra_lines + child_lines
        s = self._get_name() + "("
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                s += extra_lines[0]
            else:
                s += "\n  " + "\n  ".join(lines) + "\n"
        return s + ")"


def _as_array(v: Any, key: str) -> np.ndarray:
    """A checkpoint value as an array: graphc tensors, numpy arrays, torch tensors, scalars."""
    if isinstance(v, Tensor):
        return v.detach()._concrete("load_state_dict")
    if hasattr(v, "detach") and hasattr(v, "numpy"):  # a torch tensor
        return v.detach().cpu().numpy()
    try:
        return np.asarray(v)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"load_state_dict: value for {key!r} is not an array ({type(v).__name__})") from e


guard_class(Module, subclasses=True)  # errors end at the user's line (graphc/errors.py)
