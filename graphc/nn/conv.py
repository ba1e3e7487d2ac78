"""Conv2d."""
from __future__ import annotations

from typing import Any

from ..factories import empty
from ..ir.types import dtype_of
from ..tensor import Tensor
from . import functional as F  # noqa: N812  (torch's convention)
from . import init
from .module import Module
from .parameter import Parameter


class Conv2d(Module):
    """2-d convolution over (N, C, H, W) with zero padding; torch's default initialisation and repr."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        if in_channels % groups:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups:
            raise ValueError("out_channels must be divisible by groups")
        if padding_mode != "zeros":
            raise NotImplementedError("Conv2d supports padding_mode='zeros' only")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = F._pair(kernel_size, "kernel_size")
        self.stride = F._pair(stride, "stride")
        self.padding = padding if isinstance(padding, str) else F._pair(padding, "padding")
        self.dilation = F._pair(dilation, "dilation")
        self.groups, self.padding_mode = groups, padding_mode
        self.transposed, self.output_padding = False, (0, 0)
        if isinstance(padding, str):
            F._string_padding(padding, self.kernel_size, self.stride, self.dilation)  # validate now, like torch
        dt = dtype_of(dtype or "float32")
        self.weight = Parameter(empty(out_channels, in_channels // groups, *self.kernel_size, dtype=dt))
        if bias:
            self.bias = Parameter(empty(out_channels, dtype=dt))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.default_weight_and_bias_(self.weight, self.bias)

    def forward(self, input: Tensor) -> Tensor:
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s
