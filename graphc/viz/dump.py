"""Writing every graph a program compiles to files, for `gc.compile(..., dump=DIR)`, the GRAPHC_DUMP
environment variable and `python -m graphc dump`.

Each build of a compiled function writes DIR/<name>_<n>.<stage>.<ext> (n counts the builds of functions
with that name in this process, so a recompile never overwrites the first graph). Environment:
  GRAPHC_DUMP=DIR             dump every compile of the process into DIR (dump= on gc.compile wins)
  GRAPHC_DUMP_FORMAT=html     one or more of text, json, dot, svg, html, comma-separated (default html)
  GRAPHC_DUMP_STAGE=...       traced, optimized, all, or stage names, comma-separated (default traced,optimized)
"""
from __future__ import annotations

import os
import re
import threading
from typing import Any

from . import EXTENSIONS, FORMATS, render

DEFAULT_FORMATS = ("html",)
DEFAULT_STAGES = ("traced", "optimized")

#: every file written in this process, in order (the CLI prints them)
written: list[str] = []
_counts: dict[tuple[str, str], int] = {}
_lock = threading.Lock()


def _split(value: str | None, default: tuple[str, ...]) -> list[str]:
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    return items or list(default)


def stage_files(lowered: Any, stages: list[str]) -> list[tuple[str, str]]:
    """(file tag, stage name) for the requested stages: "traced", "optimized" (the final graph), "all"
    (every stage, numbered in pipeline order) or the name of a stage such as "cse"."""
    out: list[tuple[str, str]] = []
    for s in stages:
        if s == "all":
            out += [(f"{i:02d}-{name}", name) for i, (name, _) in enumerate(lowered.stages)]
        elif s in ("traced", "optimized") or any(s == name for name, _ in lowered.stages):
            out.append((s, s))
        else:
            known = ", ".join(["traced", "optimized", "all"] + [n for n, _ in lowered.stages])
            raise ValueError(f"unknown dump stage {s!r}; use one of {known}")
    return list(dict.fromkeys(out))


def dump_lowered(lowered: Any, directory: str, name: str, formats: list[str] | None = None,
                 stages: list[str] | None = None) -> list[str]:
    """Write one file per (stage, format) of one build and return their paths."""
    formats = formats or list(DEFAULT_FORMATS)
    for f in formats:
        if f not in FORMATS:
            raise ValueError(f"unknown dump format {f!r}; use one of {', '.join(FORMATS)}")
    os.makedirs(directory, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "graph"
    with _lock:
        n = _counts.get((directory, safe), 0)
        _counts[(directory, safe)] = n + 1
    paths = []
    for tag, stage in stage_files(lowered, stages or list(DEFAULT_STAGES)):
        for f in formats:
            path = os.path.join(directory, f"{safe}_{n}.{tag}.{EXTENSIONS[f]}")
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(render(lowered, f, stage=stage))
            paths.append(path)
    with _lock:
        written.extend(paths)
    return paths


def dump_build(name: str, lowered: Any, directory: str | None = None) -> list[str]:
    """Called by every build of a compiled function: dumps when dump=DIR was given or GRAPHC_DUMP is set."""
    directory = directory or os.environ.get("GRAPHC_DUMP")
    if not directory:
        return []
    return dump_lowered(lowered, directory, name, _split(os.environ.get("GRAPHC_DUMP_FORMAT"), DEFAULT_FORMATS),
                        _split(os.environ.get("GRAPHC_DUMP_STAGE"), DEFAULT_STAGES))
