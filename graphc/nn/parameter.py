"""nn.Parameter: a leaf Tensor that a Module registers as a parameter when assigned to it."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..ir.types import dtype_of
from ..tensor import Tensor


class Parameter(Tensor):
    """A Tensor subclass, so `isinstance(p, nn.Parameter)` and every Tensor method work.

    `Parameter(t)` shares t's array (as torch shares storage), and requires grad by default.
    Results of ops on a Parameter are plain Tensors, as in torch.
    """

    __slots__ = ()

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        if data is None:
            arr = np.zeros((0,), dtype=np.float32)
        elif isinstance(data, Tensor):
            arr = data._concrete("nn.Parameter(tensor)")
        else:
            arr = np.asarray(data)
            if arr.dtype.kind == "f" and not isinstance(data, np.ndarray):
                arr = arr.astype(np.float32)
        self._init(arr, None, dtype_of(arr.dtype))
        self.requires_grad = requires_grad

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()
