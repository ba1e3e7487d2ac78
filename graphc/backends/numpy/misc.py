"""numpy kernels for factories and random ops."""
from __future__ import annotations

import numpy as np

from .registry import kernel


@kernel("full")
def full(*, shape, value, dtype):
    return np.full(shape, value, dtype=dtype)


@kernel("iota")
def iota(*, shape, axis, dtype):
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return np.broadcast_to(np.arange(shape[axis], dtype=dtype).reshape(view), shape).copy()


def _generator(seed) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(int(seed) & (2**63 - 1)))


@kernel("rand")
def rand(seed, *, shape, dtype):
    return _generator(seed).random(shape, dtype=np.dtype(dtype))


@kernel("randn")
def randn(seed, *, shape, dtype):
    return _generator(seed).standard_normal(shape, dtype=np.dtype(dtype))
