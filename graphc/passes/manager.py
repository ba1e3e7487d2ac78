"""Runs passes in order, verifying the graph after each and recording what each changed.

A failing pass raises (PyTensor's logged-and-ignored rewrite failures are what we avoid).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..ir.graph import Graph


@dataclass
class PassRecord:
    name: str
    nodes_before: int
    nodes_after: int
    ms: float

    def __str__(self) -> str:
        return f"{self.name}: {self.nodes_before} -> {self.nodes_after} nodes ({self.ms:.2f} ms)"


def run_passes(g: Graph, passes: Sequence[tuple[str, Callable[[Graph], Graph]]],
               keep: list[tuple[str, Graph]] | None = None) -> tuple[Graph, list[PassRecord]]:
    """-> (final graph, one record per pass). `keep` collects (pass name, graph after it) for dumps."""
    report = []
    for name, p in passes:
        t0 = time.perf_counter()
        before = len(g)
        g = p(g).verify()
        report.append(PassRecord(name, before, len(g), (time.perf_counter() - t0) * 1e3))
        if keep is not None:
            keep.append((name, g))
    return g, report
