"""One process-wide count of changes to what a compiled function's cache key describes.

A compiled training step's cache key (graphc/compile.py: _describe) lists every reachable module's
submodules, settings and parameters, each parameter's shape, dtype, requires_grad and .grad, and each
optimizer's groups and state. Recomputing it costs more than a small model's whole XLA step, so the call
path (graphc/callpath.py) reuses the last answer while EPOCH[0] has not moved. Everything that can change
such a description moves it:

* Module attribute assignment and deletion (parameters, buffers, submodules, training, plain settings), and
  any write to a module's `_parameters`, `_buffers` or `_modules` (ObservedDict);
* a tensor's requires_grad, `.data` and `.grad` (when the gradient appears, disappears or changes shape
  or dtype: a step replacing its gradients by new ones of the same type does not count);
* an optimizer's attributes, its param_groups (the list, each group and its params list; a numeric
  hyperparameter replaced by another number does not count: those are graph inputs read at every call) and
  its state (ObservedState: per-parameter dicts included).

Writing a module's `__dict__` directly (`vars(m)["p"] = 0.5`) bypasses this, as it bypasses torch's
`Module.__setattr__`; tests run with GRAPHC_VERIFY_CALLS=1, which checks every reused answer against the
full key.
"""
from __future__ import annotations

from typing import Any

#: the count; a one-element list so that hot paths bump it without a call
EPOCH = [0]
#: moved when a numeric hyperparameter in some param group is replaced by another number: no change to any
#: graph, but hyperparameter guards and the inputs read from param_groups must be read again
HYPERS = [0]


class ObservedDict(dict):
    """A dict whose every change moves EPOCH (reads stay dict's own C code)."""

    __slots__ = ()

    def __setitem__(self, k: Any, v: Any) -> None:
        EPOCH[0] += 1
        dict.__setitem__(self, k, v)

    def __delitem__(self, k: Any) -> None:
        EPOCH[0] += 1
        dict.__delitem__(self, k)

    def pop(self, *a: Any) -> Any:
        EPOCH[0] += 1
        return dict.pop(self, *a)

    def popitem(self) -> Any:
        EPOCH[0] += 1
        return dict.popitem(self)

    def clear(self) -> None:
        EPOCH[0] += 1
        dict.clear(self)

    def update(self, *a: Any, **k: Any) -> None:
        EPOCH[0] += 1
        dict.update(self, *a, **k)

    def setdefault(self, k: Any, default: Any = None) -> Any:
        if k not in self:
            EPOCH[0] += 1
        return dict.setdefault(self, k, default)

    def __ior__(self, other: Any) -> ObservedDict:
        EPOCH[0] += 1
        dict.update(self, other)
        return self

    def __reduce__(self) -> Any:  # pickles and deep-copies as itself, without counting the copy as a change
        return (type(self), (dict(self),))


class ObservedList(list):
    """A list whose every change moves EPOCH (an optimizer's param_groups and each group's params)."""

    __slots__ = ()

    def __setitem__(self, i: Any, v: Any) -> None:
        EPOCH[0] += 1
        list.__setitem__(self, i, v)

    def __delitem__(self, i: Any) -> None:
        EPOCH[0] += 1
        list.__delitem__(self, i)

    def __iadd__(self, other: Any) -> ObservedList:
        EPOCH[0] += 1
        list.extend(self, other)
        return self

    def __imul__(self, n: int) -> ObservedList:
        EPOCH[0] += 1
        return list.__imul__(self, n)

    def append(self, v: Any) -> None:
        EPOCH[0] += 1
        list.append(self, v)

    def extend(self, vs: Any) -> None:
        EPOCH[0] += 1
        list.extend(self, vs)

    def insert(self, i: int, v: Any) -> None:
        EPOCH[0] += 1
        list.insert(self, i, v)

    def pop(self, i: int = -1) -> Any:
        EPOCH[0] += 1
        return list.pop(self, i)

    def remove(self, v: Any) -> None:
        EPOCH[0] += 1
        list.remove(self, v)

    def clear(self) -> None:
        EPOCH[0] += 1
        list.clear(self)

    def sort(self, *, key: Any = None, reverse: bool = False) -> None:
        EPOCH[0] += 1
        list.sort(self, key=key, reverse=reverse)

    def reverse(self) -> None:
        EPOCH[0] += 1
        list.reverse(self)

    def __reduce__(self) -> Any:
        return (type(self), (list(self),))


class ParamGroup(ObservedDict):
    """An optimizer's parameter group: replacing a number by a number (a scheduler setting lr) is no change
    to the graph (numeric hyperparameters are inputs, their decisions guards); anything else is."""

    __slots__ = ()

    def __setitem__(self, k: Any, v: Any) -> None:
        old = dict.get(self, k, _MISSING)
        if numeric(old) and numeric(v):
            HYPERS[0] += 1
        else:
            EPOCH[0] += 1
        if k == "params" and not isinstance(v, ObservedList):
            v = ObservedList(v)
        dict.__setitem__(self, k, v)


class ObservedState(ObservedDict):
    """An optimizer's state: parameter -> its ObservedDict of named state (a plain dict put in is copied into
    one), created on first access as torch's defaultdict(dict) does."""

    __slots__ = ()

    def __init__(self, *a: Any, **k: Any) -> None:
        dict.__init__(self)
        for p, s in dict(*a, **k).items():
            dict.__setitem__(self, p, _observed(s))

    def __setitem__(self, p: Any, s: Any) -> None:
        ObservedDict.__setitem__(self, p, _observed(s))

    def __missing__(self, p: Any) -> ObservedDict:
        d = ObservedDict()
        self[p] = d
        return d


def _observed(s: Any) -> Any:
    return ObservedDict(s) if type(s) is dict else s


def param_group(g: Any) -> ParamGroup:
    """A group as a ParamGroup whose params are an ObservedList (a plain dict put into param_groups is copied
    into one: writes to it must keep moving the counts)."""
    if isinstance(g, ParamGroup) and isinstance(g.get("params"), ObservedList):
        return g
    return ParamGroup(g, params=ObservedList(g["params"])) if isinstance(g, dict) and "params" in g else g


class GroupList(ObservedList):
    """An optimizer's param_groups: every group put in becomes a ParamGroup."""

    __slots__ = ()

    def __setitem__(self, i: Any, v: Any) -> None:
        ObservedList.__setitem__(self, i, [param_group(g) for g in v] if isinstance(i, slice) else param_group(v))

    def __iadd__(self, other: Any) -> GroupList:
        return ObservedList.__iadd__(self, [param_group(g) for g in other])

    def append(self, v: Any) -> None:
        ObservedList.append(self, param_group(v))

    def extend(self, vs: Any) -> None:
        ObservedList.extend(self, [param_group(g) for g in vs])

    def insert(self, i: int, v: Any) -> None:
        ObservedList.insert(self, i, param_group(v))


def observed_groups(groups: Any) -> GroupList:
    """param_groups as observed containers (each group a ParamGroup, its params an ObservedList)."""
    return groups if isinstance(groups, GroupList) else GroupList(param_group(g) for g in groups)


def observed_state(state: Any) -> ObservedState:
    return state if isinstance(state, ObservedState) else ObservedState(state)


_MISSING = object()


def numeric(v: Any) -> bool:
    """A hyperparameter that is a graph input (a number, or a tuple of numbers such as Adam's betas)."""
    if isinstance(v, tuple):
        return bool(v) and all(numeric(x) for x in v)
    return isinstance(v, (int, float)) and not isinstance(v, bool)
