"""Benchmarks of issue 7: graphc's numpy backend against PyTorch eager and jax.jit (python -m benchmarks)."""
