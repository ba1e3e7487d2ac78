"""numpy kernels for reductions."""
from __future__ import annotations

import numpy as np

from .registry import kernel

# sum, mean and var call the ufunc reductions directly: np.sum/np.mean/np.var add 5-30 us of Python
# argument handling per call, as much as the reduction itself on the small tensors of a batch-1 step
# (BatchNorm statistics). The arithmetic is numpy's own, step for step, so results are identical.


def _count(x: np.ndarray, axes) -> int:
    n = 1
    for a in axes:
        n *= x.shape[a]
    return n


@kernel("sum")
def sum_(x, *, axes, keepdim):
    return np.add.reduce(x, axis=axes, keepdims=keepdim, dtype=None if x.dtype.kind == "f" else np.int64)


@kernel("mean")
def mean(x, *, axes, keepdim):
    if x.dtype.kind != "f":
        return np.mean(x, axis=axes, keepdims=keepdim)
    return np.true_divide(np.add.reduce(x, axis=axes, keepdims=keepdim), x.dtype.type(_count(x, axes)))


@kernel("var")
def var(x, *, axes, keepdim, correction):
    if x.dtype.kind != "f":
        return np.var(x, axis=axes, keepdims=keepdim, ddof=correction)
    n = _count(x, axes)
    d = np.subtract(x, np.true_divide(np.add.reduce(x, axis=axes, keepdims=True), x.dtype.type(n)))
    np.multiply(d, d, out=d)
    return np.true_divide(np.add.reduce(d, axis=axes, keepdims=keepdim), x.dtype.type(max(n - correction, 0)))


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
