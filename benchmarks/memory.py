"""Peak memory of one training step, measured the same way for every engine.

tracemalloc sees numpy's allocations but not torch's or XLA's, so the common measure is the
process's resident set: in a fresh process, build the engine's step and run it twice (compiled,
warmed up), release freed heap memory to the OS (malloc_trim), reset the kernel's high-water mark
(/proc/self/clear_refs), run one step and read VmHWM. The figure is the peak RSS *above* what the
process held between steps (weights, gradients, optimizer state, the input batch).
graphc additionally reports tracemalloc's peak over the step (numpy allocations only).
Run: python -m benchmarks.memory WORKLOAD ENGINE  -> one JSON line
"""
from __future__ import annotations

import ctypes
import gc as pygc
import json
import sys
import tracemalloc


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _trim() -> None:
    pygc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def measure(workload: str, engine: str) -> dict:
    from benchmarks.workloads import WORKLOADS

    w = WORKLOADS[workload]({engine})
    if engine not in w.steps:
        return {"workload": workload, "engine": engine, "skipped": w.skipped.get(engine, "not built")}
    step = w.steps[engine]
    step()
    step()
    _trim()
    base = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS counter (Linux >= 4.0)
    step()
    peak = _status("VmHWM")
    out = {"workload": workload, "engine": engine, "rss_base_bytes": base, "rss_peak_delta_bytes": peak - base}
    if engine == "graphc":
        _trim()
        tracemalloc.start()
        step()
        cur, tpeak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["tracemalloc_peak_bytes"] = tpeak
        if w.lowered is not None and hasattr(w.lowered, "memory_analysis"):
            out["planned_peak_bytes"] = w.lowered.memory_analysis()["temp_peak_bytes"]
    return out


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    print(json.dumps(measure(sys.argv[1], sys.argv[2])))


if __name__ == "__main__":
    main()
