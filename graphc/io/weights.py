"""Weights files: name -> array mappings in .safetensors, .npz and (with torch) .pth/.pt.

`model.load_state_dict(gc.io.load_weights(path))` loads torchvision checkpoints into the
models of graphc.models, whose state_dict keys are torchvision's.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

_TORCH_EXT = (".pth", ".pt", ".bin", ".ckpt")


def _ext(path: str | os.PathLike) -> str:
    return os.path.splitext(os.fspath(path))[1].lower()


def _safetensors_numpy() -> Any:
    try:
        import safetensors.numpy as st
    except ImportError:
        raise ImportError("reading or writing .safetensors needs the safetensors package: "
                          "pip install safetensors (or save and load .npz instead)") from None
    return st


def load_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a weights file into {name: numpy array}, by extension."""
    ext = _ext(path)
    if ext == ".safetensors":
        return dict(_safetensors_numpy().load_file(os.fspath(path)))
    if ext == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if ext in _TORCH_EXT:
        return _load_torch(path)
    raise ValueError(f"unknown weights format {ext!r} for {os.fspath(path)}; expected .safetensors, .npz or "
                     f"{'/'.join(_TORCH_EXT)}")


def _load_torch(path: str | os.PathLike) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ImportError(f"reading {_ext(path)} checkpoints needs PyTorch; convert the file to .safetensors "
                          "or .npz where torch is installed") from None
    obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]  # training checkpoints wrap the weights
    if not isinstance(obj, Mapping):
        raise TypeError(f"{os.fspath(path)} holds a {type(obj).__name__}, not a state_dict")
    out = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu()
            if v.dtype in (torch.bfloat16, torch.float16):
                v = v.float()
            out[k] = v.numpy().copy()
    return out


def _to_numpy(v: Any) -> np.ndarray:
    from ..tensor import Tensor

    if isinstance(v, Tensor):
        v = v.detach().numpy()
    elif hasattr(v, "detach") and hasattr(v, "numpy"):
        v = v.detach().cpu().numpy()
    return np.asarray(v, order="C")  # (np.ascontiguousarray would turn 0-d counters into 1-d)


def save_weights(state: Any, path: str | os.PathLike) -> None:
    """Write a module's state_dict (or any name -> tensor/array mapping) as .safetensors or .npz."""
    if hasattr(state, "state_dict") and callable(state.state_dict):
        state = state.state_dict()
    arrays = {k: _to_numpy(v) for k, v in state.items()}
    ext = _ext(path)
    if ext == ".safetensors":
        _safetensors_numpy().save_file(arrays, os.fspath(path))
    elif ext == ".npz":
        np.savez(path, **arrays)
    else:
        raise ValueError(f"save_weights writes .safetensors or .npz, not {ext!r}")
