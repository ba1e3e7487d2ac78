"""Large fused elementwise groups as one C loop, built with the machine's C compiler when it has one.

numpy runs a fused group (an SGD update with momentum: buf *= mu; buf += g; p += -lr * buf) as one ufunc
call per op. Chunked (chunks.py) the arrays stay in cache between ops, but every op is still a loop of its
own that loads and stores each element. Here a group becomes one C loop that loads each element once,
computes the chain in registers and stores what outlives it: ResNet-18's update of 11.7 M parameters is
memory-bound, and the loop takes about half the chunked time (benchmarks/native_group.py).

Results are bit for bit those of the numpy lines: each op is one IEEE operation in the group's type, in
the group's order (built with -ffp-contract=off: no fused multiply-add), and +, -, *, / and sqrt are
correctly rounded in C as in numpy. So which path runs never changes a number.

Each distinct program (ops, slots and dtype, not sizes: every SGD update of a network is one program) is
built once per machine by `cc` in a background process and cached under $GRAPHC_CACHE_DIR (else
$XDG_CACHE_HOME/graphc or ~/.cache/graphc), the way PyTensor and torch.compile's C++ backend use the
system compiler. Building never blocks a call: until its library is loaded a group runs the numpy lines.
No compiler, a failed build or GRAPHC_NATIVE=0: the numpy lines, always. Hand-written kernels (pool.c,
conv.c) are built and cached the same way (library()); conv.c's sums differ from numpy's, so its first use
waits for the build instead (conv_c.py).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared"]  # no -march=native: a cached
# library may be read by another machine that shares the home directory
ARRAY, SCALAR, TEMP = 0, 1, 2
_C_OPS = {"add": "{} + {}", "sub": "{} - {}", "mul": "{} * {}", "div": "{} / {}", "neg": "-{}"}
_C_TYPES = {"float32": ("float", "sqrtf"), "float64": ("double", "sqrt")}
OPS = frozenset(_C_OPS) | {"sqrt"}
MIN_ELEMENTS = 1 << 14  # a group this large runs as a C loop (chunks.py's numpy chunks start at 256 Ki elements)
MIN_SPLIT = 1 << 17  # elements from which a group's loop is split into parts for both lanes (lanes.py)
PARTS = 8


def enabled() -> bool:
    return os.environ.get("GRAPHC_NATIVE", "1").strip().lower() not in ("0", "off", "false", "no")


def _cache_dir() -> Path:
    if os.environ.get("GRAPHC_CACHE_DIR"):
        return Path(os.environ["GRAPHC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "graphc"


@dataclass
class _Build:
    """One C source's library: loaded, being built, or failed (and why)."""

    lib: ctypes.CDLL | None = None
    proc: subprocess.Popen | None = None
    tmp: Path | None = None
    target: Path | None = None
    pid: int = 0  # the process that started the build: only it may wait for the compiler and move its output
    failed: str | None = None


_builds: dict[str, _Build] = {}
_lock = threading.Lock()


def _key(source: str, cc: str | None, flags: Sequence[str]) -> str:
    return hashlib.sha256("\0".join([source, cc or "", *flags]).encode()).hexdigest()[:20]


def cache_path(source: str, flags: Sequence[str] = FLAGS) -> Path:
    """Where the library built from this C source is cached, for this compiler and these flags."""
    return _cache_dir() / f"group-{_key(source, shutil.which(os.environ.get('CC', 'cc')), flags)}.so"


def _start(source: str, flags: Sequence[str] = FLAGS) -> _Build:
    """The build of this C source: loaded from the cache, started in the background, or failed."""
    cc = shutil.which(os.environ.get("CC", "cc"))
    key = _key(source, cc, flags)
    with _lock:
        b = _builds.get(key)
        if b is not None:
            return b
        b = _builds[key] = _Build()
        if cc is None:
            b.failed = "no C compiler (cc) on PATH"
            return b
        try:
            target = cache_path(source, flags)
            if target.exists():
                try:
                    b.lib = ctypes.CDLL(str(target))
                    return b
                except OSError:  # a damaged cache entry: build it again
                    target.unlink(missing_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".c", dir=target.parent)
            with os.fdopen(fd, "w") as f:
                f.write(source)
            b.tmp, b.target, b.pid = Path(tmp), target, os.getpid()
            b.proc = subprocess.Popen([cc, *flags, "-o", f"{tmp}.so", tmp], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError as e:  # an unwritable cache, a compiler that cannot start, a library that will not load
            b.failed = f"{type(e).__name__}: {e}"
        return b


def _finish(b: _Build, wait: bool) -> None:
    """Load b's library once its build has ended (waiting for it if asked)."""
    with _lock:
        proc = b.proc
        if proc is not None and b.pid != os.getpid():  # a fork of the process building it: not our compiler
            b.proc, b.failed = None, "the process was forked while the library was being built"
            return
        if proc is None or (not wait and proc.poll() is None):
            return
        _, err = proc.communicate()
        b.proc = None
        built = Path(f"{b.tmp}.so")
        try:
            if proc.returncode != 0:
                b.failed = f"cc failed: {err.decode(errors='replace').strip()[:500]}"
                return
            os.replace(built, b.target)  # atomic: another process reading the cache never sees half a file
            b.lib = ctypes.CDLL(str(b.target))
        except OSError as e:
            b.failed = f"{type(e).__name__}: {e}"
        finally:
            for p in (b.tmp, built):
                if p is not None and p.exists():
                    p.unlink()


def _ready(b: _Build, wait: bool = False) -> bool:
    if b.lib is None and b.proc is not None:
        _finish(b, wait)
    return b.lib is not None


def library(source: str, flags: Sequence[str] = FLAGS, wait: bool = False) -> ctypes.CDLL | None:
    """The library built from this C source (a hand-written kernel, e.g. pool.c) if it is loaded; otherwise its
    build is started, or polled, and None returned: the caller runs its numpy code meanwhile. With wait, the
    first ask waits for the build (kernels whose numbers differ from numpy's, conv.c: a program must not switch
    paths when the build ends); None then means no library in this process."""
    if not enabled():
        return None
    b = _start(source, flags)
    return b.lib if _ready(b, wait) else None


def c_source(dtype: str, kinds: Sequence[int], program: Sequence[tuple[str, int, int, int]]) -> str:
    """One C loop for a program of (op, dst slot, a slot, b slot or -1) over slots of the given kinds: array
    slots read before they are written are loaded, every op is one statement on registers, and array slots
    written are stored back, element by element."""
    t, sqrt = _C_TYPES[dtype]
    written = {d for _, d, _, _ in program}
    loads, seen = [], set()
    for _, d, a, b in program:
        for s in (a, b):
            if s >= 0 and kinds[s] == ARRAY and s not in seen:
                loads.append(s)
            seen.add(s)
        seen.add(d)
    head = [f"    {'' if j in written else 'const '}{t} *restrict a{j} = ({t} *)p[{j}];"
            for j, k in enumerate(kinds) if k == ARRAY]
    head += [f"    const {t} r{j} = ({t})sc[{j}];" for j, k in enumerate(kinds) if k == SCALAR]
    body = [f"        {t} r{j} = a{j}[i];" for j in loads]
    body += [f"        {t} r{j};" for j, k in enumerate(kinds) if k != SCALAR and j not in loads and j in written]
    for op, d, a, b in program:
        expr = f"{sqrt}(r{a})" if op == "sqrt" else _C_OPS[op].format(f"r{a}", f"r{b}")
        body.append(f"        r{d} = {expr};")
    body += [f"        a{j}[i] = r{j};" for j, k in enumerate(kinds) if k == ARRAY and j in written]
    return "\n".join([f"/* graphc fused group ({dtype}): {', '.join(op for op, *_ in program)} */",
                      "#include <math.h>",
                      "void graphc_group(void *const *p, const double *sc, long s, long e)", "{", *head,
                      "    for (long i = s; i < e; i++) {", *body, "    }", "}", "", _GROUP_PART])


# a part for lanes.c: args are p, sc, n, P; part k runs elements [k*n/P, (k+1)*n/P), cut at multiples of 64
_GROUP_PART = """void graphc_group_part(const long *a, long k, long lane)
{
    const long n = a[2], P = a[3];
    const long s = k * (n / P) / 64 * 64, e = k + 1 == P ? n : (k + 1) * (n / P) / 64 * 64;
    (void)lane;
    graphc_group((void *const *)a[0], (const double *)a[1], s, e);
}
"""


class Group:
    """One fused group as a C loop. Called with its slots' values in slot order (arrays; scalars; None for
    temporaries); returns False, having done nothing, while its library is not loaded (or the arrays are
    not the contiguous ones of the group's type and size it was built for): the caller then runs its numpy
    lines."""

    def __init__(self, dtype: str, kinds: Sequence[int], program: Sequence[tuple[str, int, int, int]], size: int):
        self.kinds, self.size, self.dtype = list(kinds), size, np.dtype(dtype)
        self.source = c_source(dtype, kinds, program)
        self._build = _start(self.source) if enabled() else _Build(failed="GRAPHC_NATIVE=0")
        self._arrays = [j for j, k in enumerate(kinds) if k == ARRAY]
        self._scalars = [j for j, k in enumerate(kinds) if k == SCALAR]
        self._fn = None

    def ready(self, wait: bool = False) -> bool:
        return _ready(self._build, wait)

    def status(self) -> str:
        b = self._build
        return "loaded" if b.lib is not None else "building" if b.proc is not None else f"off: {b.failed}"

    def __call__(self, *values: Any) -> bool:
        fn = self._fn
        if fn is None:
            if not self.ready():
                return False
            from . import lanes  # (lanes builds its own library through this module)

            fn = self._fn = lanes.part_function(self._build.lib.graphc_group_part)
            self._run = lanes.run
        n = len(self.kinds)
        ptrs = (ctypes.c_void_p * n)()
        scal = (ctypes.c_double * n)()
        for j in self._arrays:
            v = values[j]
            if v.dtype != self.dtype or not v.flags.c_contiguous or v.size != self.size:
                return False
            ptrs[j] = address(v)
        for j in self._scalars:
            scal[j] = float(values[j])
        parts = PARTS if self.size >= MIN_SPLIT else 1
        self._run(fn, (ctypes.addressof(ptrs), ctypes.addressof(scal), self.size, parts), parts)
        return True


def address(a: np.ndarray) -> int:
    """The address of a's first element, for a C call: 0.5 us through the buffer protocol where numpy's
    a.ctypes.data takes 2 (a few dozen calls per step); a.ctypes.data for arrays that export no writable
    contiguous buffer (a transposed view, a read-only constant, an empty array)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(a))
    except (TypeError, ValueError, BufferError):
        return a.ctypes.data


def supports(members: Sequence[Any]) -> str | None:
    """The one float dtype of a group a C loop can run (every value of it, ops it knows), else None."""
    names = set()
    for n in members:
        if n.op not in OPS:
            return None
        names.update(v.type.dtype.name for v in n.inputs)
        names.update(v.type.dtype.name for v in n.outputs)
    return next(iter(names)) if len(names) == 1 and next(iter(names)) in _C_TYPES else None


def program(members: Sequence[Any], slot_of: dict[int, int]) -> list[tuple[str, int, int, int]]:
    """(op, dst, a, b) per member node, from the slot of each value (see codegen._native_group)."""
    out = []
    for n in members:
        ins = [slot_of[id(v)] for v in n.inputs]
        out.append((n.op, slot_of[id(n.outputs[0])], ins[0], ins[1] if len(ins) > 1 else -1))
    return out


def wait_all() -> bool:
    """Wait for every build started so far (tests, benchmarks): whether all of them loaded."""
    for b in list(_builds.values()):
        if b.proc is not None:
            _finish(b, wait=True)
    return all(b.lib is not None for b in _builds.values())


def status() -> str:
    """One line on the native loops of this process (for reports)."""
    if not enabled():
        return "native loops: off (GRAPHC_NATIVE=0)"
    done = sum(b.lib is not None for b in _builds.values())
    failed = [b.failed for b in _builds.values() if b.failed]
    return (f"native loops: {done} of {len(_builds)} programs loaded"
            + (f"; not built: {failed[0]}" if failed else ""))


def describe() -> str:
    """What this machine gives the C loops (for `python -m graphc info`)."""
    if not enabled():
        return "off (GRAPHC_NATIVE=0): numpy code only"
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        return "no C compiler (cc) on PATH: numpy code only"
    return (f"built by {cc} in the background (small convolutions wait for theirs, once per machine), cached in "
            f"{_cache_dir()}")
