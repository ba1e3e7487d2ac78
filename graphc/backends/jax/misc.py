"""JAX lowerings of factories and random ops.

Random ops draw from jax.random with a key made from the int64 seed input: the numbers
differ from the numpy backend's, but shape, dtype and distribution match, and the same
seed gives the same numbers.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .lowering import lowering


@lowering("full")
def full(*, shape: tuple[int, ...], value: float, dtype: str) -> jax.Array:
    return jnp.full(shape, value, dtype=dtype)


@lowering("iota")
def iota(*, shape: tuple[int, ...], axis: int, dtype: str) -> jax.Array:
    return lax.broadcasted_iota(jnp.dtype(dtype), tuple(shape), axis)


@lowering("rand")
def rand(seed: jax.Array, *, shape: tuple[int, ...], dtype: str) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), tuple(shape), dtype=jnp.dtype(dtype))


@lowering("randn")
def randn(seed: jax.Array, *, shape: tuple[int, ...], dtype: str) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), tuple(shape), dtype=jnp.dtype(dtype))
