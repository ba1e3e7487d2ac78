"""Lowering registry of the JAX backend: op name -> function(*jax_arrays, **attrs) -> array(s).

Each lowering is traceable (no Python control flow on values), so a whole graph's
lowerings compose into one function that jax.jit hands to XLA.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
from jax import lax

LOWERINGS: dict[str, Callable[..., Any]] = {}

#: matmul/conv precision: torch (and graphc's numpy backend) compute float32 products in full float32,
#: while XLA's DEFAULT may use TF32/bfloat16 passes on GPU/TPU and then disagree in the third digit.
PRECISION = lax.Precision.HIGHEST


def lowering(*names: str) -> Callable:
    """Register fn as the lowering of each op in names."""

    def register(fn: Callable) -> Callable:
        for n in names:
            LOWERINGS[n] = fn
        return fn

    return register


def run_op_jax(op_name: str, arrays: Sequence[Any], attrs: dict[str, Any]) -> jax.Array | tuple[jax.Array, ...]:
    """Run one op through its JAX lowering (eagerly, or under a jax trace when given tracers)."""
    return LOWERINGS[op_name](*arrays, **attrs)
