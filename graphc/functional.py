"""The gc.* math functions: thin twins of Tensor methods plus the list ops cat and stack."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .dispatch import apply
from .errors import guard_functions, located
from .ir.types import promote
from .tensor import Tensor, _axes


def _as_tensor(x: Any, like: Tensor | None = None) -> Tensor:
    if isinstance(x, Tensor):
        return x
    return like._lift(x) if like is not None else Tensor(x)


def where(condition: Tensor, input: Any, other: Any) -> Tensor:
    a = input if isinstance(input, Tensor) else None
    b = other if isinstance(other, Tensor) else None
    like = a if a is not None else b
    if like is None:
        raise TypeError("where needs at least one tensor among input and other")
    a, b = _as_tensor(input, like), _as_tensor(other, like)
    if a.dtype != b.dtype:
        dt = promote(a.dtype, b.dtype)
        a, b = a.to(dt), b.to(dt)
    return apply("where", (condition, a, b), {})


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError(located("torch.cat(): expected a non-empty list of Tensors"))
    dt = tensors[0].dtype
    for t in tensors[1:]:
        dt = promote(dt, t.dtype)
    tensors = [t.to(dt) for t in tensors]
    if len(tensors) == 1:
        return tensors[0]
    return apply("cat", tuple(tensors), {"axis": _axes(dim, tensors[0].ndim)[0]})


concat = cat


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError(located("stack expects a non-empty TensorList"))
    for t in tensors[1:]:
        if t.shape != tensors[0].shape:
            raise RuntimeError(located(f"stack expects each tensor to be equal size, but got {list(tensors[0].shape)} "
                                       f"at entry 0 and {list(t.shape)} at another entry"))
    d = dim % (tensors[0].ndim + 1)
    return cat([t.unsqueeze(d) for t in tensors], d)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    return a.matmul(b)


def maximum(a: Tensor, b: Any) -> Tensor:
    return a.maximum(b)


def minimum(a: Tensor, b: Any) -> Tensor:
    return a.minimum(b)


def clamp(x: Tensor, min: float | None = None, max: float | None = None) -> Tensor:
    return x.clamp(min, max)


def pow(a: Any, b: Any) -> Tensor:
    return a ** b if isinstance(a, Tensor) else _as_tensor(b).__rpow__(a)


def _method(name: str):
    def fn(x: Tensor, *args: Any, **kwargs: Any) -> Any:
        return getattr(x, name)(*args, **kwargs)

    fn.__name__ = name
    fn.__doc__ = f"gc.{name}(x, ...) is x.{name}(...)."
    return fn


_METHODS = ("add sub mul div neg abs exp log sqrt rsqrt tanh sigmoid relu sin cos sign sum mean var std amax amin "
            "max min argmax argmin prod logsumexp softmax log_softmax reshape flatten transpose permute squeeze "
            "unsqueeze eq ne lt le gt ge square").split()
for _n in _METHODS:
    globals()[_n] = _method(_n)

guard_functions(globals())  # errors end at the user's line (graphc/errors.py)
