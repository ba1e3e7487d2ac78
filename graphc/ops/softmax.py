"""softmax and log_softmax along one axis (numerically stable kernels, VJPs from their outputs)."""
from __future__ import annotations

from ..ir.types import TensorType
from .registry import Sample, defop, need_float, norm_axis, randn, vjp_of


def _softmax(x: TensorType, *, axis: int) -> TensorType:
    need_float(x, "softmax")
    norm_axis(axis, x.ndim)
    return x


_samples = lambda rng: [Sample([randn(rng, 3, 4)], {"axis": 1}), Sample([randn(rng, 2, 3, 4)], {"axis": 0})]  # noqa
defop("softmax", _softmax, kind="opaque", samples=_samples)
defop("log_softmax", _softmax, kind="opaque", samples=_samples)


@vjp_of("softmax")
def _(ctx, g):
    y = ctx.outputs[0]
    return (y * (g - (g * y).sum(ctx.attrs["axis"], keepdim=True)),)


@vjp_of("log_softmax")
def _(ctx, g):
    y = ctx.outputs[0]
    return (g - y.exp() * g.sum(ctx.attrs["axis"], keepdim=True),)
