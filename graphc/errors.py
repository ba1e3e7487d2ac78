"""Errors that point at the user's code rather than graphc's.

Two mechanisms, both honest about what they do:

* `located(msg)` appends the module path and the user's file:line to a message, so the
  message itself says where the problem is (it also survives logging, pickling, re-raising).
* `api_boundary` wraps graphc's public entry points (Tensor methods, gc.* functions,
  Module.__call__, compiled functions...). When graphc itself *diagnoses* a user error (the
  exception was raised by a `raise` statement in graphc code), the boundary removes graphc's
  internal frames from the traceback, so it ends at the user's line, as JAX's traceback
  filtering does, and adds a note saying how many frames were hidden. Exceptions that are not
  diagnoses keep their full traceback: an error raised inside numpy or a Python expression in
  graphc is a graphc bug, and an exception from the user's own code passes through untouched.
  `GRAPHC_TRACEBACK_FILTERING=off` keeps every frame.
"""
from __future__ import annotations

import functools
import linecache
import os
import sys
import types
from collections.abc import Callable
from typing import Any

_PKG = os.path.dirname(os.path.abspath(__file__)) + os.sep
_NOTE = "graphc: {n} internal frame(s) hidden from this traceback; GRAPHC_TRACEBACK_FILTERING=off shows them"


class TraceError(RuntimeError):
    """Data-dependent Python control flow met a traced tensor."""


TraceError.__module__ = "graphc"  # tracebacks print graphc.TraceError, the public name


@functools.lru_cache(maxsize=4096)
def _is_internal(filename: str) -> bool:
    # graphc's own files, and the code it generates (registered as <graphc:NAME:N>)
    return filename.startswith("<graphc:") or os.path.abspath(filename).startswith(_PKG)


def user_location() -> str | None:
    """file:line of the innermost frame outside the graphc package."""
    f = sys._getframe(1)
    while f is not None:
        fn = f.f_code.co_filename
        if not _is_internal(fn) and not fn.startswith("<frozen"):
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


# ---- traceback filtering ------------------------------------------------------------------------------

def filtering_enabled() -> bool:
    return os.environ.get("GRAPHC_TRACEBACK_FILTERING", "on").lower() not in ("off", "0", "false", "no")


def _is_diagnosis(tb: types.TracebackType) -> bool:
    """Was the exception raised by a `raise` statement in graphc (a deliberate error about the user's input)?"""
    code = tb.tb_frame.f_code
    if not _is_internal(code.co_filename) or code.co_filename.startswith("<graphc:"):
        return False
    return linecache.getline(code.co_filename, tb.tb_lineno).lstrip().startswith("raise")


def filter_traceback(e: BaseException) -> None:
    """Drop graphc's internal frames from e's traceback when e is a graphc diagnosis (see the module doc)."""
    tb = e.__traceback__
    if tb is None or not filtering_enabled():
        return
    hidden = getattr(e, "_graphc_hidden", None)
    chain = []
    while tb is not None:
        chain.append(tb)
        tb = tb.tb_next
    if hidden is None:  # first boundary on the way out: decide once
        if not _is_diagnosis(chain[-1]):
            return
        hidden = 0
    keep = [t for t in chain if not _is_internal(t.tb_frame.f_code.co_filename)]
    new = None
    for t in reversed(keep):
        new = types.TracebackType(new, t.tb_frame, t.tb_lasti, t.tb_lineno)
    e.with_traceback(new)
    old_note = _NOTE.format(n=hidden)
    hidden += len(chain) - len(keep)
    e._graphc_hidden = hidden  # type: ignore[attr-defined]
    notes = [n for n in getattr(e, "__notes__", []) if n != old_note]
    notes.append(_NOTE.format(n=hidden))
    e.__notes__ = notes  # type: ignore[attr-defined]


def api_boundary(fn: Callable) -> Callable:
    """Wrap a public entry point so diagnoses leave it with the user's line as the last frame."""
    if getattr(fn, "_graphc_boundary", False):
        return fn

    @functools.wraps(fn)
    def boundary(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            try:
                filter_traceback(e)
            except Exception:  # noqa: BLE001  (never let the filter hide the user's error)
                pass
            raise  # a bare raise adds no frame of its own

    boundary._graphc_boundary = True  # type: ignore[attr-defined]
    return boundary


_SKIP = {"__getattr__", "__getattribute__", "__new__", "__init_subclass__", "__class_getitem__", "__del__",
         "__repr__", "__str__", "__dir__", "__hash__", "__reduce__", "__reduce_ex__"}


def guard_class(cls: type, subclasses: bool = False) -> type:
    """Wrap the public methods, operators and property setters that `cls` itself defines; with subclasses=True
    also those of every subclass graphc defines later (nn.Linear, optim.SGD...), never a user's subclass."""
    for name, attr in list(vars(cls).items()):
        if name in _SKIP or (name.startswith("_") and not (name.startswith("__") and name.endswith("__"))):
            continue
        if isinstance(attr, types.FunctionType):
            setattr(cls, name, api_boundary(attr))
        elif isinstance(attr, property) and attr.fset is not None:
            setattr(cls, name, property(attr.fget, api_boundary(attr.fset), attr.fdel, attr.__doc__))
    if subclasses:
        def __init_subclass__(sub: type, **kwargs: Any) -> None:  # noqa: N807
            super(cls, sub).__init_subclass__(**kwargs)
            if sub.__module__.split(".")[0] == "graphc":
                guard_class(sub)

        cls.__init_subclass__ = classmethod(__init_subclass__)  # type: ignore[assignment]
    return cls


def guard_functions(namespace: dict[str, Any]) -> None:
    """Wrap the public functions a module defines (call at the end of the module with globals())."""
    mod = namespace.get("__name__")
    for name, attr in list(namespace.items()):
        if not name.startswith("_") and isinstance(attr, types.FunctionType) and attr.__module__ == mod:
            namespace[name] = api_boundary(attr)
