"""JAX lowerings of reductions and softmax."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .lowering import lowering


@lowering("sum")
def sum_(x: jax.Array, *, axes: tuple[int, ...], keepdim: bool) -> jax.Array:
    # torch sums integers and bools as int64
    dtype = None if jnp.issubdtype(x.dtype, jnp.floating) else jnp.int64
    return jnp.sum(x, axis=axes, keepdims=keepdim, dtype=dtype)


@lowering("mean")
def mean(x: jax.Array, *, axes: tuple[int, ...], keepdim: bool) -> jax.Array:
    return jnp.mean(x, axis=axes, keepdims=keepdim)


@lowering("var")
def var(x: jax.Array, *, axes: tuple[int, ...], keepdim: bool, correction: int) -> jax.Array:
    return jnp.var(x, axis=axes, keepdims=keepdim, ddof=correction)


@lowering("amax")
def amax(x: jax.Array, *, axes: tuple[int, ...], keepdim: bool) -> jax.Array:
    return jnp.max(x, axis=axes, keepdims=keepdim)


@lowering("amin")
def amin(x: jax.Array, *, axes: tuple[int, ...], keepdim: bool) -> jax.Array:
    return jnp.min(x, axis=axes, keepdims=keepdim)


@lowering("prod")
def prod(x: jax.Array, *, axes: tuple[int, ...], keepdim: bool) -> jax.Array:
    return jnp.prod(x, axis=axes, keepdims=keepdim)


@lowering("logsumexp")
def logsumexp(x: jax.Array, *, axes: tuple[int, ...], keepdim: bool) -> jax.Array:
    return jax.nn.logsumexp(x, axis=axes, keepdims=keepdim)


def _pick(x: jax.Array, idx: jax.Array, axis: int, keepdim: bool) -> tuple[jax.Array, jax.Array]:
    vals = jnp.take_along_axis(x, idx, axis=axis)
    if not keepdim:
        idx, vals = jnp.squeeze(idx, axis), jnp.squeeze(vals, axis)
    return vals, idx.astype(jnp.int64)


@lowering("max_dim")
def max_dim(x: jax.Array, *, axis: int, keepdim: bool) -> tuple[jax.Array, jax.Array]:
    return _pick(x, jnp.argmax(x, axis=axis, keepdims=True), axis, keepdim)


@lowering("min_dim")
def min_dim(x: jax.Array, *, axis: int, keepdim: bool) -> tuple[jax.Array, jax.Array]:
    return _pick(x, jnp.argmin(x, axis=axis, keepdims=True), axis, keepdim)


@lowering("argmax")
def argmax(x: jax.Array, *, axis: int | None, keepdim: bool) -> jax.Array:
    return jnp.argmax(x, axis=axis, keepdims=keepdim).astype(jnp.int64)


@lowering("argmin")
def argmin(x: jax.Array, *, axis: int | None, keepdim: bool) -> jax.Array:
    return jnp.argmin(x, axis=axis, keepdims=keepdim).astype(jnp.int64)


@lowering("softmax")
def softmax(x: jax.Array, *, axis: int) -> jax.Array:
    return jax.nn.softmax(x, axis=axis)


@lowering("log_softmax")
def log_softmax(x: jax.Array, *, axis: int) -> jax.Array:
    return jax.nn.log_softmax(x, axis=axis)
