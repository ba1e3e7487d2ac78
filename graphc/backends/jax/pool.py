"""JAX lowerings of 2-d pooling (NCHW, attrs as (h, w) pairs).

max_pool2d_with_indices finds each window's first maximum (jnp.argmax over the stacked kernel offsets,
padding -inf), as the numpy kernel and torch do; its backward scatter-adds the gradient at the indices.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .conv import _pads
from .lowering import lowering

Pair = Sequence[int]


def _window(kernel_size: Pair, stride: Pair, padding: Pair) -> dict:
    return {"window_dimensions": (1, 1, *kernel_size), "window_strides": (1, 1, *stride),
            "padding": [(0, 0), (0, 0), *_pads(padding)]}


# Init values are numpy constants, not jnp arrays: under jit a jnp constant is a tracer, and lax.reduce_window
# then emits a generic reduction that JAX cannot differentiate instead of reduce_window_max / _sum.

def _lowest(dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.floating):
        return np.array(-np.inf, dtype)
    return np.array(np.iinfo(dtype).min, dtype)


@lowering("max_pool2d")
def max_pool2d(x: jax.Array, *, kernel_size: Pair, stride: Pair, padding: Pair) -> jax.Array:
    # padding never wins a max: it is -inf
    return lax.reduce_window(x, _lowest(x.dtype), lax.max, **_window(kernel_size, stride, padding))


@lowering("avg_pool2d")
def avg_pool2d(x: jax.Array, *, kernel_size: Pair, stride: Pair, padding: Pair) -> jax.Array:
    # count_include_pad=True, torch's default: padding zeros count in the divisor
    s = lax.reduce_window(x, np.zeros((), x.dtype), lax.add, **_window(kernel_size, stride, padding))
    return s / jnp.asarray(kernel_size[0] * kernel_size[1], x.dtype)


@lowering("avg_pool2d_grad")
def avg_pool2d_grad(g: jax.Array, *, input_hw: Pair, kernel_size: Pair, stride: Pair, padding: Pair) -> jax.Array:
    x_type = jax.ShapeDtypeStruct((*g.shape[:2], *input_hw), g.dtype)
    fwd = lambda x: avg_pool2d(x, kernel_size=kernel_size, stride=stride, padding=padding)
    return jax.linear_transpose(fwd, x_type)(g)[0]


@lowering("max_pool2d_with_indices")
def max_pool2d_with_indices(x: jax.Array, *, kernel_size: Pair, stride: Pair, padding: Pair
                            ) -> tuple[jax.Array, jax.Array]:
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    h, w = x.shape[2:]
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    xp = lax.pad(x, _lowest(x.dtype), [(0, 0, 0), (0, 0, 0), (ph, ph, 0), (pw, pw, 0)])
    offsets = jnp.stack([xp[:, :, i:i + (ho - 1) * sh + 1:sh, j:j + (wo - 1) * sw + 1:sw]
                         for i in range(kh) for j in range(kw)], axis=-1)
    k = jnp.argmax(offsets, axis=-1)  # the first maximum in row-major window order
    r = (np.arange(ho) * sh - ph)[:, None] + k // kw  # the winner's row and column in the image
    q = np.arange(wo) * sw - pw + k % kw
    # a window of -inf only may "win" on padding: torch names its first in-image element instead
    first = np.maximum(np.arange(ho) * sh - ph, 0)[:, None] * w + np.maximum(np.arange(wo) * sw - pw, 0)
    inside = (r >= 0) & (r < h) & (q >= 0) & (q < w)
    idx = jnp.where(inside, r * w + q, first)
    return max_pool2d(x, kernel_size=kernel_size, stride=stride, padding=padding), idx.astype(jnp.int64)


@lowering("max_pool2d_indices_grad")
def max_pool2d_indices_grad(g: jax.Array, indices: jax.Array, *, input_hw: Pair, kernel_size: Pair, stride: Pair,
                            padding: Pair) -> jax.Array:
    n, c = g.shape[:2]
    plane = input_hw[0] * input_hw[1]
    flat = indices.reshape(n * c, -1) + (jnp.arange(n * c) * plane)[:, None]
    dx = jnp.zeros(n * c * plane, g.dtype).at[flat.ravel()].add(g.ravel())
    return dx.reshape(n, c, *input_hw)
