"""matmul: batched and broadcast over leading dims; vector cases are reshapes in the Tensor layer."""
from __future__ import annotations

from ..ir.types import TensorType
from .registry import OPS, Sample, ShapeError, broadcast_shapes, defop, randn, same_dtype, vjp_of


def _matmul(a: TensorType, b: TensorType) -> TensorType:
    if a.ndim < 2 or b.ndim < 2:
        raise ShapeError(f"matmul primitive needs 2-d or batched operands, got {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        ash = "x".join(map(str, a.shape))
        bsh = "x".join(map(str, b.shape))
        raise ShapeError(f"mat1 and mat2 shapes cannot be multiplied ({ash} and {bsh})")
    dt = same_dtype(a, b)
    try:
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ShapeError:
        raise ShapeError(f"batch dims of {a.shape} and {b.shape} cannot be broadcast") from None
    return TensorType(batch + (a.shape[-2], b.shape[-1]), dt)


defop("matmul", _matmul, kind="opaque", samples=lambda rng: [
    Sample([randn(rng, 3, 4), randn(rng, 4, 5)]),
    Sample([randn(rng, 2, 3, 4), randn(rng, 4, 2)]),
    Sample([randn(rng, 2, 1, 3, 4), randn(rng, 3, 4, 2)]),
])


@vjp_of("matmul")
def _(ctx, g):
    a, b = ctx.inputs
    return (
        (g @ b.transpose(-1, -2)).sum_to_size(a.shape) if ctx.needs[0] else None,
        (a.transpose(-1, -2) @ g).sum_to_size(b.shape) if ctx.needs[1] else None,
    )


def _matmul_flops(ins, outs, attrs) -> int:
    return 2 * outs[0].numel * ins[0].shape[-1]


OPS["matmul"].flops = _matmul_flops
