"""Kernel registry of the numpy backend: op name -> function(*arrays, **attrs) -> array(s)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

KERNELS: dict[str, Callable[..., Any]] = {}


def kernel(*names: str) -> Callable:
    def register(fn: Callable) -> Callable:
        for n in names:
            KERNELS[n] = fn
        return fn

    return register


def run_kernel(op: str, arrays: list[np.ndarray], attrs: dict[str, Any]) -> np.ndarray | tuple[np.ndarray, ...]:
    return KERNELS[op](*arrays, **attrs)
