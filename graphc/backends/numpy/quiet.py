"""Call numpy code with floating-point warnings off (log(-1) is nan, silently, as in torch), cheaply.

`with np.errstate(all="ignore")` builds numpy's error-state object on every entry (~1.2 us), and a
compiled call with its backward enters it twice: a tenth of the tiny seed step. numpy 2 keeps that
state in a context variable, so `quietly` builds the object once and sets and resets the variable
around each call (~0.4 us), which is per thread and per task exactly as np.errstate is. The object
is built when this module is imported, so an np.setbufsize() made later does not reach generated
code (the buffer size changes speed only). numpy without that variable: np.errstate itself.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

try:  # numpy >= 2.0
    from numpy._core._ufunc_config import _extobj_contextvar as _errstate
    from numpy._core._ufunc_config import _make_extobj

    _IGNORE: Any = _make_extobj(all="ignore")
except (ImportError, AttributeError, TypeError):  # pragma: no cover  (numpy 1.x)
    _errstate = None


def quietly(fn: Callable, args: Any) -> Any:
    """fn(*args) with every floating-point error ignored; the caller's error state is back afterwards."""
    if _errstate is None:  # pragma: no cover
        with np.errstate(all="ignore"):
            return fn(*args)
    token = _errstate.set(_IGNORE)
    try:
        return fn(*args)
    finally:
        _errstate.reset(token)
