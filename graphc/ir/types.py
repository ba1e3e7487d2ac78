"""Tensor types of the IR: a dtype and a static shape.

Dtypes are small named objects rather than numpy dtypes so that the IR, its JSON
form and its printed text never depend on a backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DType:
    name: str  # "float32": the user-facing name, as in torch
    short: str  # "f32": used in printed graphs
    kind: str  # "f" floating, "i" integer, "b" bool

    @property
    def is_floating_point(self) -> bool:
        return self.kind == "f"

    @property
    def itemsize(self) -> int:
        return np.dtype(self.name).itemsize

    @property
    def np(self) -> np.dtype:
        return np.dtype(self.name)

    def __repr__(self) -> str:
        return f"graphc.{self.name}"


float32 = DType("float32", "f32", "f")
float64 = DType("float64", "f64", "f")
int32 = DType("int32", "i32", "i")
int64 = DType("int64", "i64", "i")
bool_ = DType("bool", "bool", "b")

DTYPES: dict[str, DType] = {d.name: d for d in (float32, float64, int32, int64, bool_)}
_BY_SHORT = {d.short: d for d in DTYPES.values()}
_RANK = {"b": 0, "i": 1, "f": 2}


def dtype_of(x: str | DType | np.dtype) -> DType:
    """Map a name, DType or numpy dtype to the graphc DType."""
    if isinstance(x, DType):
        return x
    if isinstance(x, str) and x in _BY_SHORT:
        return _BY_SHORT[x]
    try:
        return _SEEN[x]  # every array a compiled call returns comes through here: no np.dtype().name each time
    except (KeyError, TypeError):
        pass
    name = np.dtype(x).name
    if name not in DTYPES:
        raise TypeError(f"graphc does not support dtype {name}; use one of {', '.join(DTYPES)}")
    _SEEN[x] = DTYPES[name]
    return DTYPES[name]


_SEEN: dict[Any, DType] = {}


def promote(a: DType, b: DType) -> DType:
    """torch's type promotion for two tensor operands of the same category order."""
    if a == b:
        return a
    if _RANK[a.kind] != _RANK[b.kind]:
        return a if _RANK[a.kind] > _RANK[b.kind] else b
    return a if a.itemsize >= b.itemsize else b


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: DType

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def __str__(self) -> str:
        return f"{self.dtype.short}[{','.join(map(str, self.shape))}]"
