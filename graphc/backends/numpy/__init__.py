"""The numpy backend: kernels per op (registered by name) and, later, generated code."""
from .registry import KERNELS, kernel, run_kernel

from . import elementwise, reduce, shape, conv, misc  # noqa: E402,F401  (fill KERNELS)

__all__ = ["KERNELS", "kernel", "run_kernel"]
