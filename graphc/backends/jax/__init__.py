"""The JAX backend: one lowering per op of the table, to jax.numpy / jax.lax, registered by name.

This package imports jax; nothing in graphc's core imports it, so graphc runs without jax.
"""
from . import conv, elementwise, misc, pool, reduce, shape  # noqa: F401  (fill LOWERINGS)
from .lowering import LOWERINGS, PRECISION, lowering, run_op_jax

__all__ = ["LOWERINGS", "PRECISION", "lowering", "run_op_jax"]
