"""Per-line profile of graphc's generated numpy code: where a compiled step spends its time.

Each generated line (one graph node) is timed in place by rewriting the
executable's source with a clock read around it, so buffer lifetimes and memory reuse are exactly
those of the real run (a node-by-node interpreter would keep every buffer alive and mislead).
Run: python -m benchmarks.lineprofile [--workload resnet18_b16] [--rounds 5] [--top 30]
"""
from __future__ import annotations

import argparse
import collections
import math
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np

_ASSIGN = re.compile(r"^(\s+)([\w, ]+) = ((np|k)\.(\w+))\(")
_CHUNKED = re.compile(r"^(\s+)chunks\.run_chunks\(")  # a fused group run in cache-sized chunks on threads
_NATIVE = re.compile(r"^(\s+)if not (native_\w+\(.*\)):$")  # a fused group's C loop (native.py), if loaded


def instrument(source: str, fn_name: str) -> tuple[Callable[..., Any], dict[int, list[float]], list[str]]:
    """Re-compile generated source with a timer around each assignment line.

    -> (function, {line number: [seconds per call]}, source lines). Lines that are not calls
    (del, return, in-place statements) are left untimed. A chunked group is timed as a whole at its
    run_chunks line: the lines of its chunk function run once per chunk, on two threads. A group's C loop
    (native.py) is timed at its call."""
    from graphc.backends.numpy.codegen import runtime_env

    out, times, lines = [], collections.defaultdict(list), source.splitlines()
    chunk_def: int | None = None  # indentation of the chunk function being passed over
    for i, line in enumerate(lines):
        ind = line[:len(line) - len(line.lstrip())]
        if chunk_def is not None and len(ind) <= chunk_def and line.strip():
            chunk_def = None
        if line.lstrip().startswith("def chunk_"):
            chunk_def = len(ind)
        timed = _ASSIGN.match(line) or _CHUNKED.match(line)
        native = _NATIVE.match(line)
        if chunk_def is None and native:  # the call is timed; its numpy lines run (and are timed) when it declines
            out += [f"{ind}_t0 = _pc()", f"{ind}_ran = {native.group(2)}", f"{ind}_rec[{i}].append(_pc() - _t0)",
                    f"{ind}if not _ran:"]
        elif chunk_def is None and timed and not line.lstrip().startswith("def "):
            out += [f"{ind}_t0 = _pc()", line, f"{ind}_rec[{i}].append(_pc() - _t0)"]
        else:
            out.append(line)
    env = runtime_env()
    env.update({"_pc": time.perf_counter, "_rec": times, "inf": math.inf, "nan": math.nan})
    exec(compile("\n".join(out) + "\n", "<graphc-profile>", "exec"), env)  # noqa: S102  (our own code)
    return env[fn_name], times, lines


def _label(line: str) -> str:
    m = _ASSIGN.match(line)
    if m:
        return m.group(5)
    return "fused group, chunked" if _CHUNKED.match(line) else "fused group, C loop" if _NATIVE.match(line) else "?"


def profile_step(exe: Any, args: tuple, rounds: int = 5, top: int = 30) -> str:
    """Time each generated line of exe's step function over `rounds` calls; a readable report."""
    fn_name = re.search(r"^def (\w+)\(", exe.source, re.M).group(1)
    fn, times, lines = instrument(exe.source, fn_name)
    arrays = exe._gather(exe._leaves(args, {}))
    for _ in range(rounds):
        fn(*arrays)
    per_line = {i: float(np.median(ts)) for i, ts in times.items()}
    by_op: dict[str, float] = collections.defaultdict(float)
    count: collections.Counter = collections.Counter()
    for i, t in per_line.items():
        by_op[_label(lines[i])] += t
        count[_label(lines[i])] += 1
    total = sum(per_line.values())
    t0 = time.perf_counter()
    for _ in range(rounds):
        exe._fn(*arrays)
    wall = (time.perf_counter() - t0) / rounds
    rep = [f"timed lines: {total * 1e3:.1f} ms; uninstrumented call: {wall * 1e3:.1f} ms", "", "by kernel:"]
    for k, t in sorted(by_op.items(), key=lambda kv: -kv[1])[:top]:
        rep.append(f"  {k:28s} {t * 1e3:8.2f} ms  {100 * t / total:5.1f}%  x{count[k]}")
    rep += ["", "slowest lines:"]
    for i, t in sorted(per_line.items(), key=lambda kv: -kv[1])[:top]:
        rep.append(f"  {t * 1e3:7.2f} ms  {lines[i].strip()[:150]}")
    return "\n".join(rep)


def main() -> None:
    from benchmarks.workloads import WORKLOADS, graphc_step_for

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workload", default="resnet18_b16", choices=sorted(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    w = graphc_step_for(a.workload)
    if w.exe is None:
        why = w.skipped.get("graphc") or "it has no single step graph (profile a training-step workload)"
        raise SystemExit(f"cannot profile {a.workload}: {why}")
    print(profile_step(w.exe, w.args, a.rounds, a.top))


if __name__ == "__main__":
    main()
