"""Seeded generator of random valid graphc programs, printed as Python source.

Each program is a function of a few float tensors built from elementwise math with
broadcasting, reductions over several axes, views, indexing and matmul; it returns a
scalar and one tensor output. A failing program is reported as its own source code.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Program:
    source: str
    shapes: list[tuple[int, ...]]
    seed: int

    def function(self):
        import graphc as gc

        env: dict = {"gc": gc}
        exec(compile(self.source, f"<program {self.seed}>", "exec"), env)  # noqa: S102
        return env["prog"]


UNARY = ["{a}.exp()", "{a}.tanh()", "{a}.sigmoid()", "{a}.relu()", "-{a}", "{a}.abs()", "{a}.sin()", "{a}.cos()",
         "({a} * {a} + 1).sqrt()", "({a} * {a} + 1).log()", "{a}.clamp(-0.5, 0.5)", "{a} * 0.5 + 1",
         "({a} * {a} + 0.5).rsqrt()", "{a} ** 2", "3 * {a} ** 3"]
BINARY = ["{a} + {b}", "{a} - {b}", "{a} * {b}", "{a} / ({b} * {b} + 1)", "gc.maximum({a}, {b})",
          "gc.minimum({a}, {b})", "gc.where({a} > {b}, {a}, {b})"]


def _bcast(sa, sb):
    try:
        return tuple(np.broadcast_shapes(sa, sb))
    except ValueError:
        return None


def make_program(seed: int, n_steps: int = 6) -> Program:
    rng = np.random.default_rng(seed)
    n_in = int(rng.integers(1, 4))
    base = [int(rng.integers(2, 5)) for _ in range(3)]
    shapes = []
    for _ in range(n_in):
        nd = int(rng.integers(1, 4))
        shp = [base[3 - nd + i] if rng.random() < 0.8 else 1 for i in range(nd)]
        shapes.append(tuple(shp))
    names = [f"x{i}" for i in range(n_in)]
    pool = list(zip(names, shapes))
    lines = [f"def prog({', '.join(names)}):"]
    for k in range(n_steps):
        a, sa = pool[int(rng.integers(len(pool)))]
        choice = rng.random()
        v = f"v{k}"
        if choice < 0.3:
            expr, shp = rng.choice(UNARY).format(a=a), sa
        elif choice < 0.6:
            b, sb = pool[int(rng.integers(len(pool)))]
            shp = _bcast(sa, sb)
            if shp is None:
                expr, shp = rng.choice(UNARY).format(a=a), sa
            else:
                expr = rng.choice(BINARY).format(a=a, b=b)
        elif choice < 0.75 and len(sa) >= 1:
            nd = len(sa)
            axes = tuple(sorted(set(int(x) for x in rng.integers(0, nd, size=int(rng.integers(1, nd + 1))))))
            keep = bool(rng.random() < 0.5)
            red = rng.choice(["sum", "mean", "amax", "logsumexp", "var"])
            if red == "logsumexp":
                axes = axes[:1]
            dim = axes[0] if len(axes) == 1 else axes
            expr = f"{a}.{red}({dim}, keepdim={keep})"
            shp = tuple(1 if i in axes else s for i, s in enumerate(sa)) if keep else \
                tuple(s for i, s in enumerate(sa) if i not in axes)
            if red == "var" and np.prod([sa[i] for i in axes]) < 2:
                expr, shp = f"{a}.sum({dim}, keepdim={keep})", shp
        elif choice < 0.85 and len(sa) >= 2:
            expr, shp = f"{a}.transpose(0, -1)", (sa[-1],) + tuple(sa[1:-1]) + (sa[0],)
        elif choice < 0.9 and len(sa) >= 1 and sa[0] >= 2:
            expr, shp = f"{a}[1:]", (sa[0] - 1,) + tuple(sa[1:])
        elif choice < 0.95 and len(sa) >= 1:
            expr, shp = f"{a}.reshape(-1)", (int(np.prod(sa)),)
        else:
            n = sa[-1] if sa else 1
            m = int(rng.integers(2, 4))
            if not sa:
                expr, shp = f"{a} * 2", sa
            else:
                expr, shp = f"{a} @ gc.ones({n}, {m}) * 0.3", tuple(sa[:-1]) + (m,)
                if len(sa) == 1:
                    shp = (m,)
        lines.append(f"    {v} = {expr}")
        pool.append((v, tuple(shp)))
    last, _ = pool[-1]
    total = " + ".join(f"{n}.sum()" for n, _ in pool[n_in:][-3:])
    lines.append(f"    return {total}, {last}")
    return Program("\n".join(lines) + "\n", shapes, seed)
