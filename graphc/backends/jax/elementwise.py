"""JAX lowerings of elementwise ops."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .lowering import LOWERINGS, lowering

LOWERINGS.update({
    "add": jnp.add, "sub": jnp.subtract, "mul": jnp.multiply, "div": jnp.true_divide, "pow": jnp.power,
    "maximum": jnp.maximum, "minimum": jnp.minimum, "neg": jnp.negative, "abs": jnp.abs, "sign": jnp.sign,
    "exp": jnp.exp, "log": jnp.log, "sqrt": jnp.sqrt, "rsqrt": lax.rsqrt, "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid, "sin": jnp.sin, "cos": jnp.cos,
    "eq": jnp.equal, "ne": jnp.not_equal, "lt": jnp.less, "le": jnp.less_equal, "gt": jnp.greater,
    "ge": jnp.greater_equal, "logical_and": jnp.logical_and, "logical_or": jnp.logical_or,
    "logical_not": jnp.logical_not, "where": jnp.where,
})


@lowering("relu")
def relu(x: jax.Array) -> jax.Array:
    # jax.nn.relu, not maximum(x, 0): its derivative at 0 is 0 as in torch, not maximum's tie-splitting 0.5
    return jax.nn.relu(x)


@lowering("clamp")
def clamp(x: jax.Array, *, min: float | None, max: float | None) -> jax.Array:
    # the bounds are Python scalars: keep x's dtype, as the numpy kernel does
    return jnp.clip(x, min, max).astype(x.dtype)


@lowering("cast")
def cast(x: jax.Array, *, dtype: str) -> jax.Array:
    return x.astype(dtype)
