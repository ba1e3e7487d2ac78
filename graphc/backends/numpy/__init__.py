"""The numpy backend: kernels per op (registered by name) and generated code (codegen.generate)."""
from . import conv, elementwise, misc, pool, reduce, shape  # noqa: E402,F401  (fill KERNELS)
from .registry import KERNELS, kernel, run_kernel

__all__ = ["KERNELS", "kernel", "run_kernel"]
