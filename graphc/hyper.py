"""Optimizer hyperparameters as graph inputs, with guards for the decisions made on their values.

While a step is traced, each Python-number hyperparameter in an optimizer's param_groups (lr,
momentum, betas, eps, weight_decay, ...) is swapped for a `Hyper`: a float that keeps its value
for Python code but remembers where it came from. Arithmetic between Hypers and numbers builds
Hypers; where one meets a tensor, it becomes a float64 graph input (read from param_groups at
every call) and the arithmetic becomes float64 graph ops, cast to the tensor's dtype exactly as
PyTorch casts a Python scalar. So `opt.param_groups[0]["lr"] = 0.01` between calls changes the
update without recompiling.

Python code may also *decide* on a hyperparameter (`if momentum != 0`, `abs(1 - beta1) < 0.5`).
Each such decision is recorded as a guard; a compiled step is reused only while its guards still
give the same answers, otherwise it is traced again and cache_info() names the guard that changed.
A value that escapes into plain Python (`float(lr)`, an op attribute) is pinned by an equality guard.
"""
from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .context import state

_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "pow": "**", "eq": "==", "ne": "!=",
           "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


@dataclass
class Guard:
    """A decision Python code made on hyperparameter values while tracing."""

    label: str
    check: Callable[[], Any]
    expected: Any

    def holds(self) -> bool:
        try:
            return self.check() == self.expected
        except (KeyError, IndexError, TypeError):
            return False

    def describe_failure(self) -> str:
        try:
            now = self.check()
        except (KeyError, IndexError, TypeError) as e:
            now = f"unreadable ({e})"
        return f"hyperparameter guard `{self.label}` was {self.expected!r}, now {now!r}"


def _plain(x: Any) -> Any:
    """The value of a Hyper as a plain float without pinning it (float() would add a guard)."""
    return float.__float__(x) if isinstance(x, Hyper) else x


def _value(x: Any) -> Any:
    return x.read() if isinstance(x, Hyper) else x


def _label(x: Any) -> str:
    return x.label if isinstance(x, Hyper) else repr(x)


def _guard(label: str, check: Callable[[], Any], expected: Any) -> None:
    tracer = state.tracer
    if tracer is not None and hasattr(tracer, "guards"):
        # the optimizer asks the same question once per parameter (`momentum != 0`): a label names its
        # hyperparameters and constants, so one guard per label and answer checks them all
        if not any(g.label == label and g.expected == expected for g in tracer.guards):
            tracer.guards.append(Guard(label, check, expected))


class Hyper(float):
    """A hyperparameter seen by traced code: its value now, how to read it at call time, and how to
    make its symbolic float64 tensor on first use."""

    label: str
    read: Callable[[], float]
    _make: Callable[[], Any]
    _sym: Any

    def __new__(cls, value: float, label: str, read: Callable[[], float], make: Callable[[], Any]) -> Hyper:
        h = super().__new__(cls, value)
        h.label, h.read, h._make, h._sym = label, read, make, None
        return h

    def sym(self) -> Any:
        """The float64 0-d tensor of this value in the graph being traced (built once)."""
        if self._sym is None:
            self._sym = self._make()
        return self._sym

    # ---- arithmetic stays symbolic ------------------------------------------------------------------
    def _arith(self, name: str, other: Any, reverse: bool) -> Any:
        from .tensor import Tensor

        if isinstance(other, Tensor) or not isinstance(other, (int, float)) or isinstance(other, bool):
            return NotImplemented
        op = getattr(operator, name)
        a, b = (other, self) if reverse else (self, other)
        value = op(_plain(a), _plain(b))
        return Hyper(value, f"({_label(a)} {_SYMBOL[name]} {_label(b)})",
                     lambda: op(_value(a), _value(b)),
                     lambda: op(a.sym() if isinstance(a, Hyper) else a, b.sym() if isinstance(b, Hyper) else b))

    def __add__(self, o): return self._arith("add", o, False)  # noqa: E704
    def __radd__(self, o): return self._arith("add", o, True)  # noqa: E704
    def __sub__(self, o): return self._arith("sub", o, False)  # noqa: E704
    def __rsub__(self, o): return self._arith("sub", o, True)  # noqa: E704
    def __mul__(self, o): return self._arith("mul", o, False)  # noqa: E704
    def __rmul__(self, o): return self._arith("mul", o, True)  # noqa: E704
    def __truediv__(self, o): return self._arith("truediv", o, False)  # noqa: E704
    def __rtruediv__(self, o): return self._arith("truediv", o, True)  # noqa: E704
    def __pow__(self, o): return self._arith("pow", o, False)  # noqa: E704
    def __rpow__(self, o): return self._arith("pow", o, True)  # noqa: E704

    def __neg__(self) -> Hyper:
        return Hyper(-_plain(self), f"-{self.label}", lambda: -self.read(), lambda: -self.sym())

    def __pos__(self) -> Hyper:
        return self

    def __abs__(self) -> Hyper:
        return Hyper(abs(_plain(self)), f"abs({self.label})", lambda: abs(self.read()), lambda: self.sym().abs())

    # ---- decisions become guards --------------------------------------------------------------------
    def _compare(self, name: str, other: Any) -> Any:
        from .tensor import Tensor

        if isinstance(other, Tensor) or not isinstance(other, (int, float)):
            return NotImplemented
        op = getattr(operator, name)
        result = op(_plain(self), _plain(other))
        _guard(f"{self.label} {_SYMBOL[name]} {_label(other)}", lambda: op(self.read(), _value(other)), result)
        return result

    def __eq__(self, o): return self._compare("eq", o)  # noqa: E704
    def __ne__(self, o): return self._compare("ne", o)  # noqa: E704
    def __lt__(self, o): return self._compare("lt", o)  # noqa: E704
    def __le__(self, o): return self._compare("le", o)  # noqa: E704
    def __gt__(self, o): return self._compare("gt", o)  # noqa: E704
    def __ge__(self, o): return self._compare("ge", o)  # noqa: E704

    __hash__ = float.__hash__

    def __bool__(self) -> bool:
        result = _plain(self) != 0
        _guard(f"bool({self.label})", lambda: bool(self.read()), result)
        return result

    def pin(self) -> float:
        """The value as a plain float, valid only while it stays equal (an equality guard)."""
        v = _plain(self)
        _guard(f"{self.label} == {v!r}", self.read, v)
        return v

    def __float__(self) -> float:
        return self.pin()

    def __int__(self) -> int:
        return int(self.pin())

    def __round__(self, ndigits: int | None = None) -> Any:
        return round(self.pin(), ndigits)

    def __repr__(self) -> str:
        return repr(_plain(self))

    __str__ = __repr__


def hyper_slots(optims: dict[str, Any], add_input: Callable[[str, Any], Any]) -> Callable[[], None]:
    """Swap every Python-number hyperparameter of these optimizers for a Hyper; returns the undo.

    add_input(name, read) creates the graph input (float64, read at call time) and returns its tensor.
    """
    undo: list[tuple[dict, str, Any]] = []
    for var, opt in optims.items():
        many = len(opt.param_groups) > 1
        for gi, group in enumerate(opt.param_groups):
            for key, v in list(group.items()):
                if key == "params":
                    continue
                base = f"{var}.param_groups[{gi}].{key}" if many else f"{var}.{key}"
                if _is_number(v):
                    group[key] = _leaf(base, _reader(opt, gi, key, None), add_input, float(v))
                elif isinstance(v, tuple) and v and all(_is_number(x) for x in v):
                    group[key] = tuple(_leaf(f"{base}[{i}]", _reader(opt, gi, key, i), add_input, float(x))
                                       for i, x in enumerate(v))
                else:
                    continue
                undo.append((group, key, v))

    def restore() -> None:
        for group, key, v in undo:
            group[key] = v
    return restore


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not isinstance(v, Hyper)


def _reader(opt: Any, gi: int, key: str, idx: int | None) -> Callable[[], float]:
    if idx is None:
        return lambda: float(opt.param_groups[gi][key])
    return lambda: float(opt.param_groups[gi][key][idx])


def _leaf(name: str, read: Callable[[], float], add_input: Callable[[str, Any], Any], value: float) -> Hyper:
    return Hyper(value, name, read, lambda: add_input(name, read))
