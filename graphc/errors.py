"""Errors that point at the user's code rather than graphc's."""
from __future__ import annotations

import os
import sys

_PKG = os.path.dirname(os.path.abspath(__file__)) + os.sep


class TraceError(RuntimeError):
    """Data-dependent Python control flow met a traced tensor."""


def user_location() -> str | None:
    """file:line of the innermost frame outside the graphc package."""
    f = sys._getframe(1)
    while f is not None:
        fn = f.f_code.co_filename
        if not os.path.abspath(fn).startswith(_PKG) and not fn.startswith("<frozen"):
            return f"{fn}:{f.f_lineno}"
        f = f.f_back
    return None


def located(msg: str) -> str:
    """msg plus the module path and the user's file:line."""
    from .context import module_path

    where = []
    if module_path():
        where.append(f"in module {module_path()}")
    loc = user_location()
    if loc:
        where.append(f"at {loc}")
    return f"{msg} ({', '.join(where)})" if where else msg
