"""graphc: PyTorch-style model code, captured as static graphs, differentiated, optimized and compiled.

The public names of SPEC.md and nothing else.
"""
from . import autograd, ops
from .autograd import detect_anomaly, enable_grad, no_grad, set_grad_enabled, is_grad_enabled
from .compile import compile, load
from .errors import TraceError
from .factories import (
    arange, as_tensor, empty, from_numpy, full, full_like, manual_seed, ones, ones_like, rand, rand_like, randn,
    randn_like, tensor, zeros, zeros_like,
)
from .functional import (
    abs, add, amax, amin, argmax, argmin, cat, clamp, concat, cos, div, eq, exp, flatten, ge, gt, le, log,
    log_softmax, logsumexp, lt, matmul, max, maximum, mean, min, minimum, mul, ne, neg, permute, pow, prod, relu,
    reshape, rsqrt, sigmoid, sign, sin, softmax, sqrt, square, squeeze, stack, std, sub, sum, tanh, transpose,
    unsqueeze, var, where,
)
from .ir.types import DType, bool_ as bool, float32, float64, int32, int64  # noqa: A004
from .ops import ShapeError
from .tensor import Tensor
from . import io, models, nn, optim

float = float32  # noqa: A001  (torch.float is float32)
double = float64
long = int64

__version__ = "0.1.0"

__all__ = [
    "DType", "ShapeError", "Tensor", "TraceError", "abs", "compile", "load", "add", "amax", "amin", "arange",
    "argmax", "argmin",
    "as_tensor", "autograd", "bool", "cat", "clamp", "concat", "cos", "detect_anomaly", "div", "double", "empty",
    "enable_grad", "eq", "exp", "flatten", "float", "float32", "float64", "from_numpy", "full", "full_like", "ge",
    "gt", "int32", "int64", "is_grad_enabled", "le", "log", "log_softmax", "logsumexp", "long", "lt", "manual_seed",
    "matmul", "max", "maximum", "mean", "min", "minimum", "mul", "ne", "neg", "no_grad", "ones", "ones_like", "ops",
    "io", "models", "nn", "optim",
    "permute", "pow", "prod", "rand", "rand_like", "randn", "randn_like", "relu", "reshape", "rsqrt",
    "set_grad_enabled", "sigmoid", "sign", "sin", "softmax", "sqrt", "square", "squeeze", "stack", "std", "sub",
    "sum", "tanh", "tensor", "transpose", "unsqueeze", "var", "where", "zeros", "zeros_like",
]
