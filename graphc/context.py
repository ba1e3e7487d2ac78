"""Thread-local runtime state: grad mode, anomaly mode, the module path stack, the active tracer."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class _State(threading.local):
    def __init__(self) -> None:
        self.grad_enabled = True
        self.anomaly = False
        self.module_stack: list[str] = []
        self.tracer: Any = None  # set by graphc.trace while a function is being traced
        self.phase = "forward"
        self.meta_override: dict | None = None  # source/module for nodes derived from another node


state = _State()


@contextmanager
def module_scope(name: str) -> Iterator[None]:
    """Entered by Module.__call__ so nodes can record their module path (layer1.0.conv1)."""
    state.module_stack.append(name)
    try:
        yield
    finally:
        state.module_stack.pop()


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Tag nodes recorded inside with a phase: forward, backward or optimizer."""
    old, state.phase = state.phase, name
    try:
        yield
    finally:
        state.phase = old


def module_path() -> str:
    return ".".join(p for p in state.module_stack if p)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector held off while a graph is built.

    Building a graph allocates tens of thousands of linked nodes and values, which triggers full
    collections that walk every object in the process (jax's and torch's included): measured on the
    ResNet-18 training step, lower+compile took 0.49 s median with the collector running and 0.28 s
    without. Cycles made meanwhile are collected at the next collection after the build."""
    import gc

    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
