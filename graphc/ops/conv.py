"""conv2d with its two gradients (pooling lives in pool.py). Attrs are (h, w) pairs."""
from __future__ import annotations

from ..ir.types import TensorType
from .registry import OPS, Sample, ShapeError, defop, fmt, randn, same_dtype, vjp_of


def out_size(n: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _conv_out(x_shape, w_shape, stride, padding, dilation) -> tuple[int, int]:
    ho = out_size(x_shape[2], w_shape[2], stride[0], padding[0], dilation[0])
    wo = out_size(x_shape[3], w_shape[3], stride[1], padding[1], dilation[1])
    if ho <= 0 or wo <= 0:
        raise ShapeError(f"conv2d: input {fmt(x_shape)} is too small for kernel {tuple(w_shape[2:])} "
                         f"(padding {padding}, dilation {dilation}): output would be {ho}x{wo}")
    return ho, wo


def _conv2d(x: TensorType, w: TensorType, *, stride, padding, dilation, groups) -> TensorType:
    if x.ndim != 4 or w.ndim != 4:
        raise ShapeError(f"conv2d expects a 4-d input and weight (N, C, H, W), got {fmt(x.shape)} and {fmt(w.shape)}")
    if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
        raise ShapeError(f"Given groups={groups}, weight of size {list(w.shape)}, expected input{list(x.shape)} to "
                         f"have {w.shape[1] * groups} channels, but got {x.shape[1]} channels instead")
    ho, wo = _conv_out(x.shape, w.shape, stride, padding, dilation)
    return TensorType((x.shape[0], w.shape[0], ho, wo), same_dtype(x, w))


def _check_grad(g: TensorType, x_shape, w_shape, stride, padding, dilation, what: str) -> None:
    """The output gradient must have exactly the shape conv2d(x, w) has, or the kernels misread it."""
    want = (x_shape[0], w_shape[0]) + _conv_out(x_shape, w_shape, stride, padding, dilation)
    if g.ndim != 4 or tuple(g.shape) != want:
        raise ShapeError(f"{what}: gradient of shape {fmt(g.shape)} does not match the conv2d output {fmt(want)}")


def _conv_input_grad(g: TensorType, w: TensorType, *, input_hw, stride, padding, dilation, groups) -> TensorType:
    x_shape = (g.shape[0], w.shape[1] * groups) + tuple(input_hw)
    _check_grad(g, x_shape, w.shape, stride, padding, dilation, "conv2d_input_grad")
    return TensorType(x_shape, same_dtype(g, w))


def _conv_weight_grad(x: TensorType, g: TensorType, *, kernel_size, stride, padding, dilation, groups) -> TensorType:
    w_shape = (g.shape[1], x.shape[1] // groups) + tuple(kernel_size)
    _check_grad(g, x.shape, w_shape, stride, padding, dilation, "conv2d_weight_grad")
    return TensorType(w_shape, same_dtype(x, g))


_C1 = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}
_C2 = {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2), "groups": 2}
defop("conv2d", _conv2d, kind="opaque", samples=lambda rng: [
    Sample([randn(rng, 2, 3, 6, 5), randn(rng, 4, 3, 3, 3)], _C1),
    Sample([randn(rng, 1, 4, 7, 7), randn(rng, 6, 2, 3, 2)], _C2),
])
defop("conv2d_input_grad", _conv_input_grad, kind="opaque", samples=lambda rng: [
    Sample([randn(rng, 2, 4, 4, 3), randn(rng, 4, 3, 3, 3)], {**_C1, "input_hw": (6, 5)}),
    Sample([randn(rng, 1, 6, 4, 9), randn(rng, 6, 2, 3, 2)], {**_C2, "input_hw": (7, 7)}),
])
defop("conv2d_weight_grad", _conv_weight_grad, kind="opaque", samples=lambda rng: [
    Sample([randn(rng, 2, 3, 6, 5), randn(rng, 2, 4, 4, 3)], {**_C1, "kernel_size": (3, 3)}),
    Sample([randn(rng, 1, 4, 7, 7), randn(rng, 1, 6, 4, 9)], {**_C2, "kernel_size": (3, 2)}),
])


def _conv_attrs(attrs: dict) -> dict:
    return {k: attrs[k] for k in ("stride", "padding", "dilation", "groups")}


@vjp_of("conv2d")
def _(ctx, g):
    x, w = ctx.inputs
    a = _conv_attrs(ctx.attrs)
    return (
        ctx.call("conv2d_input_grad", g, w, input_hw=tuple(x.shape[2:]), **a) if ctx.needs[0] else None,
        ctx.call("conv2d_weight_grad", x, g, kernel_size=tuple(w.shape[2:]), **a) if ctx.needs[1] else None,
    )


@vjp_of("conv2d_input_grad")
def _(ctx, z):
    # conv2d_input_grad(g, w) is the adjoint of conv2d(., w): <z, J^T g> = <conv2d(z, w), g>
    g, w = ctx.inputs
    a = _conv_attrs(ctx.attrs)
    return (
        ctx.call("conv2d", z, w, **a) if ctx.needs[0] else None,
        ctx.call("conv2d_weight_grad", z, g, kernel_size=tuple(w.shape[2:]), **a) if ctx.needs[1] else None,
    )


@vjp_of("conv2d_weight_grad")
def _(ctx, v):
    # <v, weight_grad(x, g)> = <conv2d(x, v), g>
    x, g = ctx.inputs
    a = _conv_attrs(ctx.attrs)
    return (
        ctx.call("conv2d_input_grad", g, v, input_hw=tuple(x.shape[2:]), **a) if ctx.needs[0] else None,
        ctx.call("conv2d", x, v, **a) if ctx.needs[1] else None,
    )


def _conv_flops(ins, outs, attrs) -> int:
    """2 * (output positions) * (Cin/groups * kh * kw) for the forward and both gradients."""
    if "kernel_size" in attrs and "input_hw" not in attrs:  # weight grad: (x, g) -> w
        w = outs[0]
        return 2 * ins[1].numel * w.shape[1] * w.shape[2] * w.shape[3]
    w = ins[1]
    positions = outs[0].numel if "input_hw" not in attrs else ins[0].numel
    return 2 * positions * w.shape[1] * w.shape[2] * w.shape[3]


for _n in ("conv2d", "conv2d_input_grad", "conv2d_weight_grad"):
    OPS[_n].flops = _conv_flops
