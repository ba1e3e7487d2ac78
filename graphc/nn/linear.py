"""Identity and Linear."""
from __future__ import annotations

from typing import Any

from ..factories import empty
from ..ir.types import dtype_of
from ..tensor import Tensor
from . import functional as F  # noqa: N812  (torch's convention)
from . import init
from .module import Module
from .parameter import Parameter


class Identity(Module):
    """Returns its input; accepts and ignores any constructor arguments (as torch does)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, input: Tensor) -> Tensor:
        return input


class Linear(Module):
    """y = x W^T + b, W of shape (out_features, in_features); torch's default initialisation."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        dt = dtype_of(dtype or "float32")
        self.weight = Parameter(empty(out_features, in_features, dtype=dt))
        if bias:
            self.bias = Parameter(empty(out_features, dtype=dt))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.default_weight_and_bias_(self.weight, self.bias)

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
