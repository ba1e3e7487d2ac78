"""The op table's registry and the small rule helpers shared by op families."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..ir.types import DType, TensorType


class ShapeError(RuntimeError):
    """A shape or dtype rule rejected its inputs (torch raises RuntimeError here too)."""


ShapeError.__module__ = "graphc"  # tracebacks print graphc.ShapeError, the public name


@dataclass
class Sample:
    """Inputs for the automatic op tests: arrays (float64 where differentiable) plus attrs."""

    inputs: list[np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)


class VjpContext(Protocol):
    """What a VJP rule sees: primal inputs/outputs as Tensors, attrs, which inputs need a grad."""

    inputs: Sequence[Any]
    outputs: Sequence[Any]
    attrs: dict[str, Any]
    needs: Sequence[bool]

    def call(self, op: str, *inputs: Any, **attrs: Any) -> Any: ...


@dataclass
class OpDef:
    name: str
    infer: Callable[..., TensorType | list[TensorType]]
    kind: str  # elementwise | reduction | view | opaque | random | factory
    nout: int = 1
    vjp: Callable[..., Sequence[Any]] | None = None
    nondiff: str | None = None  # why the op has no VJP (comparisons, argmax, random ...)
    samples: Callable[[np.random.Generator], list[Sample]] | None = None
    flops: Callable[..., int] | None = None  # (input types, output types, attrs) -> flops; default by kind

    _memo: dict[tuple, tuple[TensorType, ...]] = field(default_factory=dict, repr=False, compare=False)

    def infer_types(self, types: Sequence[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        """The rule's output types, remembered per (input types, attrs): a ResNet-18 step asks ~11,700 times
        (tracing, then the graph check after every pass) for ~290 distinct answers. Rules are pure functions
        of their arguments; a rejection is not remembered (it raises again), nor are unhashable attrs."""
        try:
            key = (tuple(types), tuple((k, _frozen(v)) for k, v in attrs.items()))
            return list(self._memo[key])
        except TypeError:  # an attr that cannot be hashed (a list, an array): ask the rule
            key = None
        except KeyError:
            pass
        out = self.infer(*types, **attrs)
        out = tuple(out) if isinstance(out, (list, tuple)) else (out,)
        if key is not None:
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = out
        return list(out)

    @property
    def grad_name(self) -> str:
        """torch-style grad_fn name: mul -> MulBackward0, max_pool2d -> MaxPool2DBackward0."""
        return "".join(p[:1].upper() + p[1:] for p in self.name.split("_")) + "Backward0"


OPS: dict[str, OpDef] = {}
_MEMO_SIZE = 4096  # remembered answers per op before the memo starts over


def _frozen(v: Any) -> Any:
    """An attr value as a memo key that tells 1, 1.0 and True apart (they hash and compare equal)."""
    if type(v) is tuple:
        return (tuple, tuple(_frozen(x) for x in v))
    return (type(v), v)


def defop(
    name: str,
    infer: Callable[..., Any],
    *,
    kind: str,
    nout: int = 1,
    nondiff: str | None = None,
    samples: Callable[[np.random.Generator], list[Sample]] | None = None,
) -> OpDef:
    if name in OPS:
        raise ValueError(f"op {name} declared twice")
    OPS[name] = OpDef(name, infer, kind, nout, None, nondiff, samples)
    return OPS[name]


def vjp_of(name: str) -> Callable:
    def register(fn: Callable) -> Callable:
        OPS[name].vjp = fn
        return fn

    return register


# ---- rule helpers -----------------------------------------------------------------------------

def fmt(shape: Sequence[int]) -> str:
    return str(tuple(shape))


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    nd = max(len(s) for s in shapes)
    out = []
    for i in reversed(range(nd)):  # from the right, so the dimension named is the one torch names
        size = 1
        for s in shapes:
            d = s[len(s) - nd + i] if len(s) - nd + i >= 0 else 1
            if d != 1:
                if size != 1 and size != d:
                    a, b = shapes[0], shapes[1] if len(shapes) > 1 else shapes[0]
                    raise ShapeError(
                        f"shapes {fmt(a)} and {fmt(b)} cannot be broadcast: the size of tensor a ({size}) must "
                        f"match the size of tensor b ({d}) at non-singleton dimension {i}"
                    )
                size = d
        out.append(size)
    return tuple(reversed(out))


def same_dtype(*types: TensorType) -> DType:
    d = types[0].dtype
    for t in types[1:]:
        if t.dtype != d:
            raise ShapeError(f"expected all inputs to have dtype {d.name}, got {t.dtype.name}")
    return d


def need_float(t: TensorType, what: str) -> None:
    if not t.dtype.is_floating_point:
        raise ShapeError(f"{what} needs a floating point input, got {t.dtype.name}")


def norm_axis(axis: int, ndim: int) -> int:
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        raise ShapeError(f"dimension out of range (expected to be in range of [{-max(ndim, 1)}, {max(ndim, 1) - 1}], "
                         f"but got {axis})")
    return axis % max(ndim, 1)


def randn(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape)


def away(rng: np.random.Generator, *shape: int, lo: float = 0.3) -> np.ndarray:
    """Normal samples pushed away from zero, for rules with a kink or pole there."""
    x = rng.standard_normal(shape)
    return np.where(x >= 0, x + lo, x - lo)


def positive(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.uniform(0.5, 2.0, shape)
