"""JAX lowerings of 2-d pooling (NCHW, attrs as (h, w) pairs).

max_pool2d_with_indices picks each window's winner as the numpy kernel and torch do (the first maximum; a NaN,
the last one). The backward selects the gradient where the indices point when windows tile, and scatter-adds
it at the indices otherwise.
"""
from __future__ import annotations

import functools
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


def _tiles(kernel_size: Pair, stride: Pair, padding: Pair) -> bool:
    """Whether the windows tile the image (stride = kernel, no padding), as in LeNet and most CNNs' 2x2 pools:
    then every input element lies in at most one window, and the windows are a reshape away."""
    return tuple(kernel_size) == tuple(stride) and not any(padding)


def _tile_positions(ho: int, wo: int, kh: int, kw: int, w: int) -> np.ndarray:
    """int32 (ho, kh, wo, kw): the flat image position of each element of each tiling window."""
    rows = (np.arange(ho) * kh)[:, None, None, None] + np.arange(kh)[None, :, None, None]
    cols = (np.arange(wo) * kw)[None, None, :, None] + np.arange(kw)[None, None, None, :]
    return (rows * w + cols).astype(np.int32)


def _winner(a: tuple[jax.Array, jax.Array], b: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Reducer of (value, position) pairs that chooses as torch's CPU kernel does: the larger value, the earlier
    position among equals, a NaN over any number and the later of two NaNs (torch moves to every NaN it meets).
    A total order, so XLA may reduce in any order."""
    (va, ia), (vb, ib) = a, b
    na, nb = va != va, vb != vb
    take_a = jnp.where(na, ~nb | (ia > ib), ~nb & ((va > vb) | ((va == vb) & (ia < ib))))
    return jnp.where(take_a, va, vb), jnp.where(take_a, ia, ib)


def _max_and_position(values: jax.Array, positions: np.ndarray, axes: tuple[int, ...]
                      ) -> tuple[jax.Array, jax.Array]:
    """Each window's maximum and the (int32) position of its winner, in one XLA reduction over the window axes.
    One reduction, not a max and an argmax; and a reduction, not an elementwise chain over the kernel offsets
    (faster alone, but XLA fuses such a chain into every consumer and recomputes it per element of, say, a weight
    gradient's outer product: LeNet's step at batch 1 ran 2.3x slower)."""
    init = (_lowest(values.dtype), np.array(np.iinfo(np.int32).max, np.int32))
    pos = jnp.broadcast_to(jnp.asarray(positions, np.int32), values.shape)
    return lax.reduce((values, pos), init, _winner, axes)


def _winners(x: jax.Array, kernel_size: Pair, stride: Pair, padding: Pair) -> tuple[jax.Array, jax.Array]:
    """(maxima, int32 flat positions in the image of the winners)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    h, w = x.shape[2:]
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if _tiles(kernel_size, stride, padding):  # the windows are a reshape; positions are the image's own
        windows = x[:, :, :ho * kh, :wo * kw].reshape(*x.shape[:2], ho, kh, wo, kw)
        return _max_and_position(windows, _tile_positions(ho, wo, kh, kw, w), (3, 5))
    xp = lax.pad(x, _lowest(x.dtype), [(0, 0, 0), (0, 0, 0), (ph, ph, 0), (pw, pw, 0)])
    offsets = jnp.stack([xp[:, :, i:i + (ho - 1) * sh + 1:sh, j:j + (wo - 1) * sw + 1:sw]
                         for i in range(kh) for j in range(kw)], axis=-1)
    out, k = _max_and_position(offsets, np.arange(kh * kw), (4,))  # k: the winner's row-major kernel offset
    r = (np.arange(ho) * sh - ph)[:, None] + k // kw  # the winner's row and column in the image
    q = np.arange(wo) * sw - pw + k % kw
    # a window of -inf only may "win" on padding: torch names its first in-image element instead
    first = np.maximum(np.arange(ho) * sh - ph, 0)[:, None] * w + np.maximum(np.arange(wo) * sw - pw, 0)
    inside = (r >= 0) & (r < h) & (q >= 0) & (q < w)
    return out, jnp.where(inside, r * w + q, first.astype(np.int32))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _pool(x: jax.Array, kernel_size: tuple, stride: tuple, padding: tuple) -> tuple[jax.Array, jax.Array]:
    return _winners(x, kernel_size, stride, padding)


@_pool.defjvp
def _pool_jvp(kernel_size: tuple, stride: tuple, padding: tuple, primals: tuple, tangents: tuple) -> tuple:
    """A window's maximum moves with its winner: the tangent there. (jax cannot differentiate the reduction over
    (value, position) pairs itself; with this rule jax.vjp of the lowering scatters to the winners, an oracle
    for graphc's own max_pool2d_indices_grad in tests/test_ops.py.)"""
    (x,), (dx,) = primals, tangents
    out, idx = _pool(x, kernel_size, stride, padding)
    n, c = x.shape[:2]
    dout = jnp.take_along_axis(dx.reshape(n, c, -1), idx.reshape(n, c, -1), axis=2).reshape(out.shape)
    return (out, idx), (dout, np.zeros(idx.shape, jax.dtypes.float0))


@lowering("max_pool2d_with_indices")
def max_pool2d_with_indices(x: jax.Array, *, kernel_size: Pair, stride: Pair, padding: Pair
                            ) -> tuple[jax.Array, jax.Array]:
    out, idx = _pool(x, tuple(kernel_size), tuple(stride), tuple(padding))
    return out, idx.astype(jnp.int64)


@lowering("max_pool2d")
def max_pool2d(x: jax.Array, *, kernel_size: Pair, stride: Pair, padding: Pair) -> jax.Array:
    """The maxima alone (XLA drops the positions): NaN propagates as in torch, which reduce_window's max, jitted
    on XLA's CPU backend, did not always do (a NaN at a window's first element came through, others not)."""
    return _pool(x, tuple(kernel_size), tuple(stride), tuple(padding))[0]


@lowering("max_pool2d_indices_grad")
def max_pool2d_indices_grad(g: jax.Array, indices: jax.Array, *, input_hw: Pair, kernel_size: Pair, stride: Pair,
                            padding: Pair) -> jax.Array:
    n, c, ho, wo = g.shape
    h, w = input_hw
    if _tiles(kernel_size, stride, padding):  # each input element is in one window at most: a select, no scatter
        kh, kw = kernel_size
        hit = indices.astype(jnp.int32)[:, :, :, None, :, None] == _tile_positions(ho, wo, kh, kw, w)
        dx = jnp.where(hit, g[:, :, :, None, :, None], np.zeros((), g.dtype)).reshape(n, c, ho * kh, wo * kw)
        return jnp.pad(dx, [(0, 0), (0, 0), (0, h - ho * kh), (0, w - wo * kw)])
    plane = h * w
    flat = indices.reshape(n * c, -1) + (jnp.arange(n * c) * plane)[:, None]
    dx = jnp.zeros(n * c * plane, g.dtype).at[flat.ravel()].add(g.ravel())
    return dx.reshape(n, c, *input_hw)
