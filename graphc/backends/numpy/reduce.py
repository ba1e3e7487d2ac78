"""numpy kernels for reductions."""
from __future__ import annotations

import numpy as np

from .registry import kernel


@kernel("sum")
def sum_(x, *, axes, keepdim):
    return np.sum(x, axis=axes, keepdims=keepdim, dtype=None if x.dtype.kind == "f" else np.int64)


@kernel("mean")
def mean(x, *, axes, keepdim):
    return np.mean(x, axis=axes, keepdims=keepdim)


@kernel("var")
def var(x, *, axes, keepdim, correction):
    return np.var(x, axis=axes, keepdims=keepdim, ddof=correction)


@kernel("amax")
def amax(x, *, axes, keepdim):
    return np.amax(x, axis=axes, keepdims=keepdim)


@kernel("amin")
def amin(x, *, axes, keepdim):
    return np.amin(x, axis=axes, keepdims=keepdim)


@kernel("prod")
def prod(x, *, axes, keepdim):
    return np.prod(x, axis=axes, keepdims=keepdim)


@kernel("logsumexp")
def logsumexp(x, *, axes, keepdim):
    m = np.amax(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    out = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return out if keepdim else np.squeeze(out, axis=axes)


@kernel("max_dim")
def max_dim(x, *, axis, keepdim):
    idx = np.argmax(x, axis=axis, keepdims=True)
    vals = np.take_along_axis(x, idx, axis=axis)
    if not keepdim:
        idx, vals = np.squeeze(idx, axis), np.squeeze(vals, axis)
    return vals, idx.astype(np.int64)


@kernel("min_dim")
def min_dim(x, *, axis, keepdim):
    idx = np.argmin(x, axis=axis, keepdims=True)
    vals = np.take_along_axis(x, idx, axis=axis)
    if not keepdim:
        idx, vals = np.squeeze(idx, axis), np.squeeze(vals, axis)
    return vals, idx.astype(np.int64)


@kernel("argmax")
def argmax(x, *, axis, keepdim):
    return np.argmax(x, axis=axis, keepdims=keepdim).astype(np.int64)


@kernel("argmin")
def argmin(x, *, axis, keepdim):
    return np.argmin(x, axis=axis, keepdims=keepdim).astype(np.int64)


@kernel("softmax")
def softmax(x, *, axis):
    e = np.exp(x - np.amax(x, axis=axis, keepdims=True))
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


@kernel("log_softmax")
def log_softmax(x, *, axis):
    s = x - np.amax(x, axis=axis, keepdims=True)
    return s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))
