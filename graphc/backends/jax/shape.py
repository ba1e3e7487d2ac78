"""JAX lowerings of views, data movement and matmul."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .lowering import PRECISION, lowering


def to_jax_index(index: tuple) -> tuple:
    """graphc's normalized index entries -> a basic numpy-style index (a negative stop means 'to the start')."""
    return tuple(e[1] if e[0] == "i" else None if e[0] == "n" else slice(e[1], e[2] if e[2] >= 0 else None, e[3])
                 for e in index)


@lowering("reshape")
def reshape(x: jax.Array, *, shape: tuple[int, ...]) -> jax.Array:
    return jnp.reshape(x, shape)


@lowering("permute")
def permute(x: jax.Array, *, perm: tuple[int, ...]) -> jax.Array:
    return jnp.transpose(x, perm)


@lowering("expand")
def expand(x: jax.Array, *, shape: tuple[int, ...]) -> jax.Array:
    return jnp.broadcast_to(x, shape)


@lowering("index")
def index(x: jax.Array, *, index: tuple) -> jax.Array:
    return x[to_jax_index(index)]


@lowering("index_grad")
def index_grad(g: jax.Array, *, index: tuple, shape: tuple[int, ...]) -> jax.Array:
    # new axes of the forward index are size-1 dims of g that the input lacks: drop them, then scatter
    kept = [e for e in index if e[0] != "i"]
    squeeze = tuple(i for i, e in enumerate(kept) if e[0] == "n")
    src = jnp.squeeze(g, squeeze) if squeeze else g
    return jnp.zeros(shape, g.dtype).at[to_jax_index(tuple(e for e in index if e[0] != "n"))].set(src)


@lowering("cat")
def cat(*xs: jax.Array, axis: int) -> jax.Array:
    return jnp.concatenate(xs, axis=axis)


@lowering("matmul")
def matmul(a: jax.Array, b: jax.Array, *, transpose_a: bool = False, transpose_b: bool = False) -> jax.Array:
    """a @ b; the flags (set by codegen.transposed_dots, 2-d operands only) read a or b transposed in place."""
    if not (transpose_a or transpose_b):
        return jnp.matmul(a, b, precision=PRECISION)
    dims = (((0 if transpose_a else 1,), (1 if transpose_b else 0,)), ((), ()))
    return lax.dot_general(a, b, dims, precision=PRECISION)
