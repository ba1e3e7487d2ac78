"""numpy kernels for views and data movement."""
from __future__ import annotations

import numpy as np

from .registry import kernel


def to_numpy_index(index: tuple) -> tuple:
    return tuple(e[1] if e[0] == "i" else None if e[0] == "n" else slice(e[1], e[2] if e[2] >= 0 else None, e[3])
                 for e in index)


@kernel("reshape")
def reshape(x, *, shape):
    return x.reshape(shape) if isinstance(x, np.ndarray) else np.reshape(x, shape)  # (the method: 0.2 us, not 1.1)


@kernel("permute")
def permute(x, *, perm):
    return np.transpose(x, perm)


@kernel("expand")
def expand(x, *, shape):
    return np.broadcast_to(x, shape)


@kernel("index")
def index(x, *, index):
    return x[to_numpy_index(index)]


@kernel("index_grad")
def index_grad(g, *, index, shape):
    out = np.zeros(shape, dtype=g.dtype)
    # new axes in the forward index are size-1 dims of g that the input lacks
    squeeze = tuple(i for i, e in enumerate(e for e in index if e[0] != "i") if e[0] == "n")
    out[to_numpy_index(tuple(e for e in index if e[0] != "n"))] = np.squeeze(g, squeeze) if squeeze else g
    return out


@kernel("cat")
def cat(*xs, axis):
    return np.concatenate(xs, axis=axis)


@kernel("matmul")
def matmul(a, b, out=None):
    """out: a gradient's old .grad buffer (graphc/passes/memory.py).

    A product over ONE term (a linear layer's weight gradient at batch 1: (out, 1) @ (1, in)) is an outer
    product: numpy's matmul skips BLAS for it and runs its own loop, 6x slower than the broadcast multiply,
    which computes the same single product per element."""
    if np.ndim(a) >= 2 and np.ndim(b) >= 2 and a.shape[-1] == 1 == b.shape[-2]:
        return np.multiply(a, b, out=out)
    return np.matmul(a, b, out=out)


matmul.supports_out = True
