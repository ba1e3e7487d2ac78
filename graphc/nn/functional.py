"""graphc.nn.functional (`import graphc.nn.functional as F`): torch's functional layer API.

Everything here is composed from Tensor methods and op-table primitives (conv2d, pooling)
through graphc.dispatch.apply, never from numpy math, so the same code runs eagerly, is
traced by gc.compile, and is differentiated by the one autodiff pass.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from ..autograd import is_grad_enabled, no_grad
from ..dispatch import apply
from ..errors import guard_functions
from ..factories import arange, rand_like
from ..functional import stack
from ..ir.types import DType, int64
from ..tensor import Tensor


def _pair(v: Any, name: str = "argument") -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


# ---- activations --------------------------------------------------------------------------------

def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """max(x, 0). `inplace` is accepted for torch compatibility; the result is always a new
    tensor, so activations saved for the backward pass can never be overwritten."""
    return input.relu()


def sigmoid(input: Tensor) -> Tensor:
    return input.sigmoid()


def tanh(input: Tensor) -> Tensor:
    return input.tanh()


def _softmax_dim(ndim: int) -> int:
    warnings.warn("Implicit dimension choice for softmax has been deprecated. Change the call to include dim=X "
                  "as an argument.", stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input: Tensor, dim: int | None = None, dtype: DType | None = None) -> Tensor:
    x = input if dtype is None else input.to(dtype)
    return x.softmax(_softmax_dim(x.ndim) if dim is None else dim)


def log_softmax(input: Tensor, dim: int | None = None, dtype: DType | None = None) -> Tensor:
    x = input if dtype is None else input.to(dtype)
    return x.log_softmax(_softmax_dim(x.ndim) if dim is None else dim)


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    return input.flatten(start_dim, end_dim)


# ---- linear and convolution ----------------------------------------------------------------------

def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b over the last dimension of x."""
    out = input.matmul(weight.t())
    return out if bias is None else out + bias


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Tensor:
    """The op-table conv2d primitive plus a broadcast bias add. Padding: int, pair, 'valid' or
    'same' (when the padding it needs is symmetric)."""
    unbatched = input.ndim == 3
    x = input.unsqueeze(0) if unbatched else input
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    if isinstance(padding, str):
        padding = _string_padding(padding, weight.shape[2:], stride, dilation)
    attrs = {"stride": stride, "padding": _pair(padding, "padding"), "dilation": dilation, "groups": int(groups)}
    out = apply("conv2d", (x, weight), attrs)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out.squeeze(0) if unbatched else out


def _string_padding(padding: str, k: Sequence[int], stride: tuple[int, int],
                    dilation: tuple[int, int]) -> tuple[int, int]:
    if padding == "valid":
        return 0, 0
    if padding != "same":
        raise ValueError(f"Invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")
    if stride != (1, 1):
        raise ValueError("padding='same' is not supported for strided convolutions")
    total = [d * (kk - 1) for d, kk in zip(dilation, k, strict=True)]
    if any(t % 2 for t in total):
        raise NotImplementedError("padding='same' needing asymmetric padding (an even kernel) is not supported")
    return total[0] // 2, total[1] // 2


# ---- pooling ------------------------------------------------------------------------------------

def _pool_attrs(kernel_size: Any, stride: Any, padding: Any) -> dict[str, tuple[int, int]]:
    k = _pair(kernel_size, "kernel_size")
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else _pair(stride, "stride")
    return {"kernel_size": k, "stride": s, "padding": _pair(padding, "padding")}


def _batched(fn: Any, input: Tensor, **attrs: Any) -> Tensor:
    if input.ndim == 3:
        return apply(fn, (input.unsqueeze(0),), attrs).squeeze(0)
    return apply(fn, (input,), attrs)


def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Max pooling; with return_indices, also torch's int64 index (h * W + w in the plane) of each maximum.

    When a gradient will be needed the indices are computed anyway (as torch does): the backward then
    scatters to them instead of searching every window again."""
    if _pair(dilation) != (1, 1) or ceil_mode:
        raise NotImplementedError("max_pool2d supports dilation=1 and ceil_mode=False")
    attrs = _pool_attrs(kernel_size, stride, padding)
    if not (return_indices or (is_grad_enabled() and input.requires_grad)):
        return _batched("max_pool2d", input, **attrs)
    if input.ndim == 3:
        out, idx = apply("max_pool2d_with_indices", (input.unsqueeze(0),), attrs)
        out, idx = out.squeeze(0), idx.squeeze(0)
    else:
        out, idx = apply("max_pool2d_with_indices", (input,), attrs)
    return (out, idx) if return_indices else out


def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    if ceil_mode or not count_include_pad or divisor_override is not None:
        raise NotImplementedError("avg_pool2d supports ceil_mode=False, count_include_pad=True and no "
                                  "divisor_override")
    return _batched("avg_pool2d", input, **_pool_attrs(kernel_size, stride, padding))


def adaptive_avg_pool2d(input: Tensor, output_size: Any) -> Tensor:
    """torch's adaptive bins: one avg_pool2d when the input divides evenly, otherwise a mean
    per output cell (bins [floor(i*H/oh), ceil((i+1)*H/oh)) ) stacked back together."""
    h, w = input.shape[-2:]
    oh, ow = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    oh, ow = h if oh is None else int(oh), w if ow is None else int(ow)
    if h % oh == 0 and w % ow == 0:
        if (oh, ow) == (h, w):
            return input
        k = (h // oh, w // ow)
        return _batched("avg_pool2d", input, kernel_size=k, stride=k, padding=(0, 0))
    rows = []
    for i in range(oh):
        h0, h1 = (i * h) // oh, -((-(i + 1) * h) // oh)
        cells = []
        for j in range(ow):
            w0, w1 = (j * w) // ow, -((-(j + 1) * w) // ow)
            cells.append(input[..., h0:h1, w0:w1].mean((-2, -1)))
        rows.append(stack(cells, -1))
    return stack(rows, -2)


# ---- normalization ------------------------------------------------------------------------------

def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None, weight: Tensor | None = None,
               bias: Tensor | None = None, training: bool = False, momentum: Any = 0.1,
               eps: float = 1e-5) -> Tensor:
    """Normalize over every dim but the channel dim (1).

    Training uses the batch mean and biased variance; the running statistics are updated in
    place under no_grad with the UNBIASED variance, exactly as torch does, so a tracer sees
    ordinary in-place updates it can functionalize. Eval uses the running statistics.
    """
    c = input.shape[1]
    shape = (1, c) + (1,) * (input.ndim - 2)
    axes = (0,) + tuple(range(2, input.ndim))
    if training:
        n = input.numel() // c
        if n <= 1:
            raise ValueError("Expected more than 1 value per channel when training, got input size "
                             f"{list(input.shape)}")
        mean = input.mean(axes, keepdim=True)
        var = input.var(axes, correction=0, keepdim=True)
        if running_mean is not None or running_var is not None:
            with no_grad():
                if running_mean is not None:
                    running_mean.mul_(1 - momentum).add_(mean.detach().reshape(c) * momentum)
                if running_var is not None:
                    running_var.mul_(1 - momentum).add_(var.detach().reshape(c) * (momentum * n / (n - 1)))
    else:
        if running_mean is None or running_var is None:
            raise RuntimeError("batch_norm in eval mode needs running_mean and running_var")
        mean, var = running_mean.reshape(shape), running_var.reshape(shape)
    out = (input - mean) * (var + eps).rsqrt()
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


def layer_norm(input: Tensor, normalized_shape: Sequence[int] | int, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(input.shape[input.ndim - len(shape):]) != shape:
        raise RuntimeError(f"Given normalized_shape={list(shape)}, expected input with shape [*, "
                           f"{', '.join(map(str, shape))}], but got input of size{list(input.shape)}")
    axes = tuple(range(input.ndim - len(shape), input.ndim))
    mean = input.mean(axes, keepdim=True)
    var = input.var(axes, correction=0, keepdim=True)
    out = (input - mean) * (var + eps).rsqrt()
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


# ---- dropout and embedding ----------------------------------------------------------------------

def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p). The mask comes from
    gc.rand_like, so it follows gc.manual_seed eagerly and is a fresh draw on every compiled call."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    keep = (rand_like(input) >= p).to(input.dtype)
    return input * keep * (1.0 / (1.0 - p))


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 one-hot codes, built by comparing with gc.arange (no gather op needed)."""
    if num_classes < 0:
        num_classes = int(tensor.amax().item()) + 1
    return (tensor.unsqueeze(-1) == arange(num_classes)).to(int64)


def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Rows of weight picked by integer indices, as a one-hot matmul so the gradient w.r.t.
    weight is an ordinary matmul VJP. With padding_idx, that row gets no gradient."""
    n = weight.shape[0]
    codes = (input.unsqueeze(-1) == arange(n)).to(weight.dtype)
    if padding_idx is not None:
        keep = (arange(n) != (padding_idx % n)).to(weight.dtype).unsqueeze(-1)
        weight = weight * keep + (weight * (1 - keep)).detach()
    return codes.matmul(weight)


# ---- losses -------------------------------------------------------------------------------------

def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{reduction} is not a valid value for reduction")


def _check_same_size(input: Tensor, target: Tensor, name: str) -> None:
    if tuple(input.shape) != tuple(target.shape):
        warnings.warn(f"Using a target size ({list(target.shape)}) that is different to the input size "
                      f"({list(input.shape)}). This will likely lead to incorrect results due to broadcasting. "
                      f"Please ensure they have the same size.", stacklevel=3)


def mse_loss(input: Tensor, target: Tensor, size_average: Any = None, reduce: Any = None,
             reduction: str = "mean") -> Tensor:
    _check_same_size(input, target, "mse_loss")
    d = input - target
    return _reduce(d * d, reduction)


def l1_loss(input: Tensor, target: Tensor, size_average: Any = None, reduce: Any = None,
            reduction: str = "mean") -> Tensor:
    _check_same_size(input, target, "l1_loss")
    return _reduce((input - target).abs(), reduction)


def _class_shape(input: Tensor, cdim: int) -> tuple[int, ...]:
    shape = [1] * input.ndim
    shape[cdim] = input.shape[cdim]
    return tuple(shape)


def _check_targets(target: Tensor, n_classes: int, ignore_index: int) -> None:
    """Eager-only validation (torch raises on out-of-range class indices; a one-hot would
    silently treat them as ignored)."""
    data = target._data
    if data is None or target._sym is not None:
        return
    bad = data[((data < 0) | (data >= n_classes)) & (data != ignore_index)]
    if bad.size:
        raise IndexError(f"Target {int(bad.flat[0])} is out of bounds.")


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average: Any = None,
             ignore_index: int = -100, reduce: Any = None, reduction: str = "mean") -> Tensor:
    """-input[target] per element (the class dim is 1, or 0 for unbatched input), as a product
    with a one-hot mask built from comparisons with gc.arange. Ignored targets contribute 0 and
    do not count in the mean; class weights scale each term and the mean's divisor."""
    cdim = 1 if input.ndim >= 2 else 0
    n_classes = input.shape[cdim]
    if target.dtype.is_floating_point:
        raise RuntimeError("nll_loss expects class indices (an integer target)")
    _check_targets(target, n_classes, ignore_index)
    classes = arange(n_classes).reshape(_class_shape(input, cdim))
    onehot = (target.unsqueeze(cdim) == classes).to(input.dtype)
    if 0 <= ignore_index < n_classes:  # an ignored class index would otherwise match its own column
        onehot = onehot * (target != ignore_index).to(input.dtype).unsqueeze(cdim)
    if weight is not None:
        onehot = onehot * weight.reshape(_class_shape(input, cdim))
    loss = -(input * onehot).sum(cdim)
    if reduction == "mean":
        return loss.sum() / onehot.sum()
    return _reduce(loss, reduction)


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average: Any = None,
                  ignore_index: int = -100, reduce: Any = None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """log_softmax over the class dim, then nll_loss for class indices or a dot product with
    class probabilities (a floating target of the input's shape), with torch's label smoothing."""
    cdim = 1 if input.ndim >= 2 else 0
    n_classes = input.shape[cdim]
    logp = input.log_softmax(cdim)
    wshape = _class_shape(input, cdim)
    if target.dtype.is_floating_point:
        t = target if label_smoothing == 0 else target * (1 - label_smoothing) + label_smoothing / n_classes
        lw = logp if weight is None else logp * weight.reshape(wshape)
        loss = -(lw * t).sum(cdim)
        if reduction == "mean":
            return loss.sum() / (input.numel() // n_classes) if input.ndim >= 1 else loss
        return _reduce(loss, reduction)
    nll = nll_loss(logp, target, weight, ignore_index=ignore_index, reduction=reduction)
    if label_smoothing == 0:
        return nll
    valid = (target != ignore_index).to(input.dtype)
    lw = logp if weight is None else logp * weight.reshape(wshape)
    smooth = -lw.sum(cdim) * valid
    if reduction == "mean":
        if weight is None:
            smooth = smooth.sum() / valid.sum()
        else:
            classes = arange(n_classes).reshape(wshape)
            wt = ((target.unsqueeze(cdim) == classes).to(input.dtype) * weight.reshape(wshape)).sum(cdim)
            smooth = smooth.sum() / wt.sum()
    else:
        smooth = _reduce(smooth, reduction)
    return nll * (1 - label_smoothing) + smooth * (label_smoothing / n_classes)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """max(x, 0) - x*t + log(1 + exp(-|x|)): the numerically stable form torch uses."""
    loss = input.relu() - input * target + ((-input.abs()).exp() + 1).log()
    return _reduce(loss, reduction)


guard_functions(globals())  # errors end at the user's line (graphc/errors.py)
