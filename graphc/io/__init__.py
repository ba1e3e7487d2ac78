"""graphc.io: weights files (safetensors/npz/pth) and the compiled-artifact format (artifact.py)."""
from .weights import load_weights, save_weights

__all__ = ["load_weights", "save_weights"]
