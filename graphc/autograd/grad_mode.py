"""no_grad / enable_grad / set_grad_enabled: context managers that also decorate functions."""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ..context import state


class _GradMode:
    enabled = True

    def __enter__(self) -> None:
        self._prev = state.grad_enabled
        state.grad_enabled = self.enabled

    def __exit__(self, *exc: Any) -> None:
        state.grad_enabled = self._prev

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.__class__():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradMode):  # noqa: N801  (torch's name)
    enabled = False


class enable_grad(_GradMode):  # noqa: N801
    enabled = True


class set_grad_enabled(_GradMode):  # noqa: N801
    def __init__(self, mode: bool) -> None:
        self.enabled = bool(mode)
        self._prev = state.grad_enabled
        state.grad_enabled = self.enabled  # torch applies it immediately, like a function call

    def __enter__(self) -> None:
        pass


def is_grad_enabled() -> bool:
    return state.grad_enabled
