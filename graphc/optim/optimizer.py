"""Optimizer: torch's base class (param_groups, per-parameter state, state_dict, repr).

Subclasses write their update with in-place Tensor ops under no_grad, reading every
hyperparameter from param_groups at each step (nothing is cached), so a tracer sees the
update as ordinary ops on parameters and state tensors and can functionalize it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from copy import deepcopy
from typing import Any

import numpy as np

from ..autograd import enable_grad, no_grad
from ..context import phase
from ..epoch import EPOCH, ObservedState, observed_groups, observed_state
from ..errors import guard_class
from ..tensor import Tensor


class _Required:
    def __repr__(self) -> str:
        return "<required parameter>"


required = _Required()


class Optimizer:
    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self.state: dict[Tensor, dict[str, Any]] = {}
        self.param_groups: list[dict[str, Any]] = []  # (observed containers: see __setattr__)
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got {type(params).__name__}")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the ordering "
                            "of tensors in sets will change between runs. Please use a list instead.")
        else:
            params = list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        group = dict(param_group, params=params)
        for k, v in self.defaults.items():
            if v is required and k not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {k}")
            group.setdefault(k, v)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def __setattr__(self, name: str, value: Any) -> None:
        """param_groups and state stay observed containers, whatever is assigned (graphc/epoch.py)."""
        if name == "param_groups":
            value = observed_groups(value)
        elif name == "state":
            value = observed_state(value)
        EPOCH[0] += 1
        object.__setattr__(self, name, value)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad = p.grad.detach()
                    p.grad.zero_()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad(), phase("optimizer"):
            self._step()
        return loss

    def _step(self) -> None:
        raise NotImplementedError

    # ---- state dict -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """{"state": {param index: {name: value}}, "param_groups": [{hyperparameters, "params": [index]}]}:
        torch's layout, parameters replaced by their position across the groups."""
        index: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            for p in g["params"]:
                index.setdefault(id(p), len(index))
            packed["params"] = [index[id(p)] for p in g["params"]]
            groups.append(packed)
        state = {index[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyperparameters and state; values are copied (numpy arrays accepted) and
        floating state is cast to its parameter's dtype, except the step count."""
        groups, saved = self.param_groups, state_dict["param_groups"]
        if len(groups) != len(saved):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved, strict=True)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                             "optimizer's group")
        id_map = {pid: p for g, s in zip(groups, saved, strict=True)
                  for pid, p in zip(s["params"], g["params"], strict=True)}
        new_state: dict[Tensor, dict[str, Any]] = ObservedState()
        for pid, st in state_dict["state"].items():
            if pid not in id_map:
                continue
            p = id_map[pid]
            new_state[p] = {k: _state_value(v, p, k) for k, v in st.items()}
        self.state = new_state
        self.param_groups = [dict(deepcopy({k: v for k, v in s.items() if k != "params"}), params=g["params"])
                             for g, s in zip(groups, saved, strict=True)]

    def __repr__(self) -> str:
        s = type(self).__name__ + " ("
        for i, group in enumerate(self.param_groups):
            s += f"\nParameter Group {i}\n"
            for key in sorted(group):
                if key != "params":
                    s += f"    {key}: {group[key]}\n"
        return s + ")"


def _state_value(v: Any, p: Tensor, key: str) -> Any:
    if isinstance(v, Tensor):
        a = v.detach()._concrete("Optimizer.load_state_dict")
    elif isinstance(v, np.ndarray) or (hasattr(v, "detach") and hasattr(v, "numpy")):
        a = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
    else:
        return deepcopy(v)
    if key != "step" and a.dtype.kind == "f":
        a = a.astype(p.dtype.np)
    return Tensor._make(np.array(a, copy=True), None, _dtype(a))


def _dtype(a: np.ndarray) -> Any:
    from ..ir.types import dtype_of

    return dtype_of(a.dtype)


guard_class(Optimizer, subclasses=True)  # errors end at the user's line (graphc/errors.py)
