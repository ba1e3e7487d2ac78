"""Tensor factories and the global random generator (gc.manual_seed)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .context import state
from .dispatch import apply
from .errors import guard_functions
from .ir.types import DType, bool_, dtype_of, float32, int64
from .tensor import Tensor, _shape_args

_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Seed graphc's global generator; eager random ops draw their seeds from it."""
    global _rng
    _rng = np.random.default_rng(int(seed))


def _seed() -> Tensor:
    tracer = state.tracer
    if tracer is not None:
        return tracer.seed()  # a graph input, so every call of a compiled graph draws new numbers
    return Tensor._make(np.array(_rng.integers(0, 2**62), dtype=np.int64), None, int64)


def tensor(data: Any, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    if isinstance(data, Tensor):
        data = data._concrete("gc.tensor(tensor)")
    return Tensor(data, requires_grad=requires_grad, dtype=None if dtype is None else dtype_of(dtype))


def as_tensor(data: Any, dtype: DType | None = None) -> Tensor:
    if isinstance(data, Tensor) and (dtype is None or data.dtype == dtype):
        return data
    return tensor(data, dtype)


def from_numpy(a: np.ndarray) -> Tensor:
    """Shares memory with the array, like torch.from_numpy."""
    return Tensor._make(a, None, dtype_of(a.dtype))


def _finish(t: Tensor, requires_grad: bool) -> Tensor:
    if requires_grad:
        t.requires_grad = True
    return t


def full(size: Any, fill_value: float, *, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    if dtype is None:  # torch infers the dtype from the fill value
        if isinstance(fill_value, (bool, np.bool_)):
            dtype = bool_
        else:
            dtype = int64 if isinstance(fill_value, (int, np.integer)) else float32
    shape = _shape_args(size if isinstance(size, (tuple, list)) else (size,))
    t = apply("full", (), {"shape": shape, "value": fill_value, "dtype": dtype_of(dtype).name})
    return _finish(t, requires_grad)


def zeros(*size: Any, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return full(_shape_args(size), 0.0, dtype=dtype or float32, requires_grad=requires_grad)


def ones(*size: Any, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return full(_shape_args(size), 1.0, dtype=dtype or float32, requires_grad=requires_grad)


def empty(*size: Any, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return zeros(*size, dtype=dtype, requires_grad=requires_grad)


def arange(start: float, end: float | None = None, step: float = 1, *, dtype: DType | None = None,
           requires_grad: bool = False) -> Tensor:
    if end is None:
        start, end = 0, start
    if dtype is None:
        dtype = int64 if all(isinstance(v, (int, np.integer)) for v in (start, end, step)) else float32
    n = max(int(np.ceil((end - start) / step)), 0)
    t = apply("iota", (), {"shape": (n,), "axis": 0, "dtype": dtype_of(dtype).name})
    if start != 0 or step != 1:
        t = t * step + start if dtype_of(dtype).is_floating_point else (t * int(step) + int(start))
    return _finish(t, requires_grad)


def _random(op: str, size: Any, dtype: DType | None, requires_grad: bool) -> Tensor:
    dt = dtype_of(dtype or float32)
    t = apply(op, (_seed(),), {"shape": _shape_args(size), "dtype": dt.name})
    return _finish(t, requires_grad)


def rand(*size: Any, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return _random("rand", size, dtype, requires_grad)


def randn(*size: Any, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return _random("randn", size, dtype, requires_grad)


def zeros_like(t: Tensor, *, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return zeros(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def ones_like(t: Tensor, *, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return ones(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def full_like(t: Tensor, fill_value: float, *, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return full(t.shape, fill_value, dtype=dtype or t.dtype, requires_grad=requires_grad)


def rand_like(t: Tensor, *, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return rand(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def randn_like(t: Tensor, *, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return randn(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


guard_functions(globals())  # errors end at the user's line (graphc/errors.py)
