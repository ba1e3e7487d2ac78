"""Ops with no tensor inputs or random outputs: full, iota, rand, randn.

Random ops take their seed as an int64 input, so a compiled graph draws new numbers on
every call (the seed is a graph input) and is never folded as a constant.
"""
from __future__ import annotations

import numpy as np

from ..ir.types import TensorType, dtype_of, int64
from .registry import Sample, ShapeError, defop


def _factory(*, shape, dtype, **_) -> TensorType:
    if any(s < 0 for s in shape):
        raise ShapeError(f"negative dimension in shape {tuple(shape)}")
    return TensorType(tuple(shape), dtype_of(dtype))


def _random(seed: TensorType, *, shape, dtype) -> TensorType:
    if seed.dtype != int64 or seed.shape != ():
        raise ShapeError(f"random ops take a scalar int64 seed, got {seed}")
    return _factory(shape=shape, dtype=dtype)


defop("full", _factory, kind="factory", nondiff="no tensor inputs",
      samples=lambda rng: [Sample([], {"shape": (2, 3), "value": 1.5, "dtype": "float64"})])
defop("iota", _factory, kind="factory", nondiff="no tensor inputs",
      samples=lambda rng: [Sample([], {"shape": (2, 3), "axis": 1, "dtype": "int64"})])
_seed = lambda rng: [Sample([np.array(7, dtype=np.int64)], {"shape": (3, 4), "dtype": "float64"})]  # noqa: E731
defop("rand", _random, kind="random", nondiff="random numbers have no gradient", samples=_seed)
defop("randn", _random, kind="random", nondiff="random numbers have no gradient", samples=_seed)
