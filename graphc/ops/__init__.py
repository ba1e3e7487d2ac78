"""THE op table: one entry per primitive with its shape/dtype rule, its VJP and sample inputs.

Backends register kernels by op name elsewhere; nothing else in graphc knows an op's
shape rule or its gradient. VJP rules are written with Tensor methods (duck-typed, so
this package imports no tensor code) and therefore work eagerly, under tracing and for
higher-order gradients alike.
"""
from . import conv, elementwise, linalg, pool, random, reduce, shape, softmax  # noqa: E402,F401  (fill the table)
from .registry import OPS, OpDef, Sample, ShapeError, VjpContext, defop, vjp_of

__all__ = ["OPS", "OpDef", "Sample", "ShapeError", "VjpContext", "defop", "vjp_of"]
