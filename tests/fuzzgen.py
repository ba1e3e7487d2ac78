"""Random valid graphc programs over the whole op table, checked everywhere, shrunk to code on failure.

A program is a list of statements over float32 inputs (some requiring grad): elementwise math with
broadcasting, comparisons and where, reductions over several axes, views and basic indexing, matmul and
linear, conv2d, pooling, normalization, losses, cat/stack, casts, factories, random ops, in-place updates
and __setitem__ on clones. It returns a scalar loss and a tensor.

`check(program, legs)` runs it eagerly and compares, forward and gradients:
  numpy  gc.compile(fn) on two different sets of inputs (the second call reuses the cached graph),
  jax    gc.compile(fn, backend="jax"),
  passes every optimization pass, the forward/backward partition and the generated code, each against
         the graph before it, on the same random inputs (graphs interpreted with the numpy kernels).
A failing program is shrunk (statements, inputs and loss terms deleted while the failure persists) and
reported as runnable code: `python tests/fuzzgen.py SEED` replays one program.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

# ---- programs --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stmt:
    out: str
    code: str  # "{out} = ..." with {0}, {1}, ... for the operands (may hold several ';'-joined statements)
    args: tuple[str, ...]
    shape: tuple[int, ...]
    ties: bool = False  # exact ties possible (relu zeros, clamps, broadcast copies): no max/pool over it


@dataclass
class Program:
    seed: int
    inputs: list[tuple[str, tuple[int, ...], bool]]  # name, shape, requires_grad
    stmts: list[Stmt]
    loss: list[str]
    out: str

    def source(self) -> str:
        lines = [f"def prog({', '.join(n for n, _, _ in self.inputs)}):"]
        for s in self.stmts:
            lines.append("    " + s.code.format(*s.args, out=s.out))
        loss = " + ".join(f"{n}.sum()" for n in self.loss) or "0"
        lines.append(f"    return {loss}, {self.out}")
        return "\n".join(lines) + "\n"

    def function(self) -> Callable:
        import graphc as gc
        import graphc.nn.functional as F

        env: dict = {"gc": gc, "F": F}
        exec(compile(self.source(), f"<fuzz program {self.seed}>", "exec"), env)  # noqa: S102
        return env["prog"]

    def repro(self) -> str:
        """The program as a script that runs it eagerly and compiled."""
        args = ", ".join(f"gc.randn({', '.join(map(str, s)) if s else '()'}{', requires_grad=True' if rg else ''})"
                         for _, s, rg in self.inputs)
        return (f"import graphc as gc\nimport graphc.nn.functional as F\n\n{self.source()}\n"
                f"gc.manual_seed(0)\nargs = [{args}]\n"
                f"eager, compiled = prog(*args), gc.compile(prog)(*args)\n")

    def nodes(self) -> int:
        return len(self.stmts)


# ---- the generator ----------------------------------------------------------------------------------------

UNARY = [
    ("-{0}", False), ("{0}.abs()", False), ("{0}.tanh()", False), ("{0}.sigmoid()", False), ("{0}.relu()", True),
    ("{0}.sin()", False), ("{0}.cos()", False), ("{0}.tanh().exp()", False), ("({0} * {0} + 1).log()", False),
    ("({0} * {0} + 1).sqrt()", False), ("({0} * {0} + 0.5).rsqrt()", False), ("{0}.clamp(-0.5, 0.5)", True),
    ("{0}.clamp(min=0.1)", True), ("{0} ** 2", False), ("{0}.tanh() ** 3", False), ("gc.sign({0}) * {0}", False),
    ("{0}.sigmoid().log()", False), ("{0}.square()", False), ("({0}.abs() + 0.5) ** 1.5", False),
    ("2.0 ** {0}.tanh()", False), ("{0} * 0.5 + 1", False), ("1 / ({0}.abs() + 1)", False),
    ("gc.exp({0}.tanh()) - gc.cos({0})", False), ("F.relu({0}) + F.sigmoid({0})", True),
    ("{0}.double().tanh().float()", False), ("(({0} > 0).float() + 0.5) * {0}", True),
    ("{0} + gc.rand_like({0}) * 0.0", False), ("{0} - gc.randn_like({0}) * 0.0", False),
    ("({0}.detach() + 1) * {0}", False), ("({0}.data * 2 + 1) * {0}", False),
    ("gc.no_grad()(lambda t: t.tanh() + 1)({0}) * {0}", False),
    ("gc.zeros_like({0}) + {0}.sin()", False), ("{0}.to(gc.float64).sigmoid().to(gc.float32)", False),
]
BINARY = [
    ("{0} + {1}", False), ("{0} - {1}", False), ("{0} * {1}", False), ("{0} / ({1} * {1} + 1)", False),
    ("gc.maximum({0}, {1})", True), ("gc.minimum({0}, {1})", True), ("gc.where({0} > {1}, {0}, {1})", True),
    ("gc.where(({0} > 0) & ({1} < 0.5), {0}, {1} * 2)", True), ("gc.where(~({0} >= {1}), {0} * {1}, 0.0)", True),
    ("gc.where(({0} < -0.2) | ({1} <= 0.1), {1}, {0}.tanh())", True), ("({0}.abs() + 1) ** {1}.tanh()", False),
    ("{0} * ({0} != {1}).float() + ({0} == {1}).float()", False), ("gc.add({0}, {1}) * gc.sub({1}, {0})", False),
    ("gc.mul({0}, {1}.detach()) + gc.div({1}, 2.0)", False), ("{0}.tanh() * {1} - {1}.sigmoid()", False),
]


class _Gen:
    def __init__(self, seed: int, n_steps: int):
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.n_steps = n_steps
        self.inputs: list[tuple[str, tuple[int, ...], bool]] = []
        self.stmts: list[Stmt] = []
        self.shape: dict[str, tuple[int, ...]] = {}
        self.ties: dict[str, bool] = {}

    # ---- helpers --------------------------------------------------------------------------------------
    def r(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi]."""
        return int(self.rng.integers(lo, hi + 1))

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def choice(self, seq: list) -> Any:
        return seq[int(self.rng.integers(len(seq)))]

    def new_input(self, shape: tuple[int, ...], requires_grad: bool | None = None) -> str:
        name = f"x{len(self.inputs)}"
        rg = self.chance(0.8) if requires_grad is None else requires_grad
        self.inputs.append((name, tuple(shape), rg))
        self.shape[name], self.ties[name] = tuple(shape), False
        return name

    def values(self) -> list[str]:
        return [n for n, _, _ in self.inputs] + [s.out for s in self.stmts]

    def pick(self, ok: Callable[[tuple[int, ...], str], bool] = lambda s, n: True) -> str | None:
        """A value whose shape passes ok(), preferring recent ones (so programs are deep, not wide)."""
        cands = [n for n in self.values() if ok(self.shape[n], n)]
        if not cands:
            return None
        w = np.arange(1, len(cands) + 1, dtype=float) ** 2
        return cands[int(self.rng.choice(len(cands), p=w / w.sum()))]

    def emit(self, code: str, args: tuple[str, ...], shape: tuple[int, ...], ties: bool = False) -> None:
        out = f"v{len(self.stmts)}"
        if "{out}" not in code:
            code = "{out} = " + code
        self.stmts.append(Stmt(out, code, tuple(args), tuple(int(s) for s in shape), ties))
        self.shape[out], self.ties[out] = tuple(int(s) for s in shape), ties

    def random_shape(self, nd: int | None = None, lo: int = 1, hi: int = 5) -> tuple[int, ...]:
        nd = self.r(0, 3) if nd is None else nd
        return tuple(self.r(lo, hi) for _ in range(nd))

    def bcast_partner(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """A shape that broadcasts against `shape` (some dims 1, maybe fewer leading dims, maybe more)."""
        s = [d if self.chance(0.7) else 1 for d in shape]
        if s and self.chance(0.3):
            s = s[self.r(1, len(s)):]
        if self.chance(0.1) and len(s) == len(shape) < 4:
            s = [self.r(1, 3)] + s
        return tuple(s)

    @staticmethod
    def broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
        try:
            return tuple(int(x) for x in np.broadcast_shapes(a, b))
        except ValueError:
            return None

    # ---- families -------------------------------------------------------------------------------------
    def unary(self) -> bool:
        a = self.pick()
        code, ties = self.choice(UNARY)
        self.emit(code, (a,), self.shape[a], ties or self.ties[a])
        return True

    def binary(self) -> bool:
        a = self.pick()
        sa = self.shape[a]
        b = self.pick(lambda s, n: n != a and self.broadcast(sa, s) is not None and len(self.broadcast(sa, s)) <= 4)
        if b is None or self.chance(0.25):
            b = self.new_input(self.bcast_partner(sa))
        code, ties = self.choice(BINARY)
        out = self.broadcast(sa, self.shape[b])
        if out is None:
            return False
        bcast = out != sa or out != self.shape[b]
        self.emit(code, (a, b) if self.chance(0.7) else (b, a), out, ties or bcast or self.ties[a] or self.ties[b])
        return True

    def reduction(self) -> bool:
        a = self.pick(lambda s, n: len(s) >= 1)
        if a is None:
            return False
        s = self.shape[a]
        nd = len(s)
        axes = sorted({self.r(0, nd - 1) for _ in range(self.r(1, nd))})
        keep = self.chance(0.4)
        kept = tuple(1 if i in axes else d for i, d in enumerate(s)) if keep else \
            tuple(d for i, d in enumerate(s) if i not in axes)
        dim = axes[0] if len(axes) == 1 else tuple(axes)
        if len(axes) > 1 and self.chance(0.3):
            dim = tuple(ax - nd for ax in axes)  # negative axes
        n_red = int(np.prod([s[i] for i in axes]))
        smooth = not self.ties[a]
        ops = [("{0}.sum(%s, keepdim=%s)", kept), ("{0}.mean(%s, keepdim=%s)", kept),
               ("gc.sum({0}, %s, keepdim=%s)", kept), ("{0}.logsumexp(%s, keepdim=%s)", kept),
               ("({0}.tanh() * 0.3 + 1).prod(%s, keepdim=%s)", kept)]
        if n_red >= 2:
            ops += [("{0}.var(%s, keepdim=%s)", kept)]
            if smooth:
                ops += [("({0}.std(%s, keepdim=%s) + 0.1)", kept)]
        if smooth:
            ops += [("{0}.amax(%s, keepdim=%s)", kept), ("{0}.amin(%s, keepdim=%s)", kept)]
        d1 = self.r(0, nd - 1)
        one = tuple(1 if i == d1 else x for i, x in enumerate(s)) if keep else \
            tuple(x for i, x in enumerate(s) if i != d1)
        code, shape = self.choice(ops)
        code = code % (dim, keep)
        if self.chance(0.3):
            picks = [(f"{{0}}.softmax({d1})", s), (f"{{0}}.log_softmax({d1})", s), (f"F.softmax({{0}}, dim={d1})", s),
                     ("{0}.sum()", ()), ("{0}.mean()", ())]
            if smooth:
                picks += [(f"{{0}}.max({d1}, keepdim={keep}).values", one),
                          (f"{{0}}.min({d1}, keepdim={keep})[0]", one),
                          (f"{{0}}.argmax({d1}, keepdim={keep}).float()", one),
                          (f"{{0}}.argmin({d1}).float() * {{0}}.amax()", tuple(x for i, x in enumerate(s) if i != d1)),
                          ("{0}.amax()", ())]
            code, shape = self.choice(picks)
        self.emit(code, (a,), shape, ties=self.ties[a] and "softmax" not in code)
        return True

    def view(self) -> bool:
        a = self.pick()
        s = self.shape[a]
        nd = len(s)
        opts: list[tuple[str, tuple[int, ...], bool]] = []
        n = int(np.prod(s)) if s else 1
        facs = [d for d in range(1, n + 1) if n % d == 0]
        f = self.choice(facs)
        opts.append((f"{{0}}.reshape({f}, {n // f})", (f, n // f), False))
        opts.append(("{0}.reshape(-1)", (n,), False))
        opts.append((f"{{0}}.unsqueeze({self.r(-nd - 1, nd)})", None, False))
        if nd >= 2:
            perm = tuple(int(p) for p in self.rng.permutation(nd))
            opts.append((f"{{0}}.permute{perm}", tuple(s[p] for p in perm), False))
            i, j = self.r(0, nd - 1), self.r(-nd, nd - 1)
            t = list(s)
            t[i], t[j] = t[j], t[i]
            opts.append((f"{{0}}.transpose({i}, {j})", tuple(t), False))
            opts.append(("{0}.mT", s[:-2] + (s[-1], s[-2]), False))
            opts.append(("{0}.flatten(1)", (s[0], int(np.prod(s[1:]))), False))
            if nd == 2:
                opts.append(("{0}.t()", (s[1], s[0]), False))
        if nd >= 1 and s[0] >= 2:
            opts.append(("{0}[1:]", (s[0] - 1,) + s[1:], False))
            opts.append(("{0}[-1]", s[1:], False))
        if nd >= 2 and s[1] >= 2:
            opts.append(("{0}[:, ::2]", (s[0], (s[1] + 1) // 2) + s[2:], False))
        if nd >= 1:
            opts.append(("{0}[..., 0]", s[:-1], False))
        if nd >= 1 and s[-1] >= 2:
            opts.append(("{0}[None, ..., 1:]", (1,) + s[:-1] + (s[-1] - 1,), False))
        ones = [i for i, d in enumerate(s) if d == 1]
        if ones:
            i = self.choice(ones)
            opts.append((f"{{0}}.squeeze({i})", s[:i] + s[i + 1:], False))
            e = tuple(self.r(2, 3) if d == 1 and self.chance(0.7) else d for d in s)
            opts.append((f"{{0}}.expand{e}", e, True))
        if nd <= 3:
            k = self.r(2, 3)
            opts.append((f"{{0}}.expand({k}, *{{0}}.shape)", (k,) + s, True))
        code, shape, ties = self.choice(opts)
        if shape is None:  # unsqueeze
            d = int(code.split("(")[1].rstrip(")"))
            d = d % (nd + 1)
            shape = s[:d] + (1,) + s[d:]
        self.emit(code, (a,), shape, ties or self.ties[a])
        return True

    def matmul(self) -> bool:
        a = self.pick(lambda s, n: 1 <= len(s) <= 3)
        if a is None:
            return False
        s = self.shape[a]
        k = s[-1]
        m = self.r(1, 5)
        kind = self.r(0, 4)
        if kind == 0 or len(s) == 1:  # (..., k) @ (k, m)
            w = self.pick(lambda t, n: t == (k, m)) or self.new_input((k, m))
            self.emit("{0} @ {1}", (a, w), s[:-1] + (m,))
        elif kind == 1:  # (..., n, k) @ (k,)
            w = self.pick(lambda t, n: t == (k,)) or self.new_input((k,))
            self.emit("gc.matmul({0}, {1})", (a, w), s[:-1])
        elif kind == 2:  # F.linear with bias
            w, b = self.new_input((m, k)), self.new_input((m,))
            self.emit("F.linear({0}, {1}, {2})", (a, w, b), s[:-1] + (m,))
        elif kind == 3 and len(s) >= 2:  # batched: (b, n, k) @ (b, k, m) or a vector on the left
            w = self.new_input(s[:-2] + (k, m))
            self.emit("{0}.matmul({1})", (a, w), s[:-1] + (m,))
        else:  # (k,) @ (..., k, m)
            v = self.pick(lambda t, n: t == (s[-2],)) if len(s) >= 2 else None
            if v is None:
                w = self.new_input((k,))
                self.emit("{1} @ {0}.unsqueeze(-1)", (a, w), s[:-1] + (1,)) if len(s) >= 2 else \
                    self.emit("({0} @ {1}).reshape(1)", (a, w), (1,))
            else:
                self.emit("{1} @ {0}", (a, v), s[:-2] + (s[-1],))
        return True

    def image(self) -> str:
        a = self.pick(lambda s, n: len(s) == 4 and s[2] >= 3 and s[3] >= 3)
        if a is not None and self.chance(0.8):
            return a
        n, c, h, w = self.r(1, 2), self.r(1, 4), self.r(3, 7), self.r(3, 7)
        src = self.pick(lambda s, n_: len(s) >= 1 and int(np.prod(s)) == n * c * h * w)
        if src is not None:
            self.emit(f"{{0}}.reshape({n}, {c}, {h}, {w})", (src,), (n, c, h, w), self.ties[src])
            return self.stmts[-1].out
        return self.new_input((n, c, h, w))

    def conv(self) -> bool:
        x = self.image()
        n, c, h, w = self.shape[x]
        kind = self.r(0, 5)
        if kind <= 2:
            g = self.choice([d for d in range(1, c + 1) if c % d == 0])
            cout = g * self.r(1, 2)
            kh, kw = self.r(1, 3), self.r(1, 3)
            stride, pad, dil = self.r(1, 2), self.r(0, 1), self.r(1, 2)
            if (kh - 1) * dil + 1 > h + 2 * pad or (kw - 1) * dil + 1 > w + 2 * pad:
                dil = 1
            if kh > h + 2 * pad or kw > w + 2 * pad:
                return False
            oh = (h + 2 * pad - dil * (kh - 1) - 1) // stride + 1
            ow = (w + 2 * pad - dil * (kw - 1) - 1) // stride + 1
            wt = self.new_input((cout, c // g, kh, kw))
            if self.chance(0.5) or kw > w:
                b = self.new_input((cout,))
                self.emit(f"F.conv2d({{0}}, {{1}}, {{2}}, stride={stride}, padding={pad}, dilation={dil}, "
                          f"groups={g})", (x, wt, b), (n, cout, oh, ow))
            else:
                self.emit(f"F.conv2d({{0}}, {{1}}, stride=({stride}, 1), padding=({pad}, 0), groups={g})",
                          (x, wt), (n, cout, (h + 2 * pad - kh) // stride + 1, w - kw + 1))
            return True
        k = self.r(1, min(3, h, w))
        st = self.r(1, k)
        p = self.r(0, k // 2)
        oh, ow = (h + 2 * p - k) // st + 1, (w + 2 * p - k) // st + 1
        if kind == 3 and not self.ties[x]:
            self.emit(f"F.max_pool2d({{0}}, {k}, stride={st}, padding={p})", (x,), (n, c, oh, ow), True)
        elif kind == 4:
            self.emit(f"F.avg_pool2d({{0}}, {k}, stride={st}, padding={p})", (x,), (n, c, oh, ow), self.ties[x])
        else:
            oh, ow = self.r(1, h), self.r(1, w)
            self.emit(f"F.adaptive_avg_pool2d({{0}}, ({oh}, {ow}))", (x,), (n, c, oh, ow), self.ties[x])
        return True

    def norm_and_loss(self) -> bool:
        kind = self.r(0, 4)
        if kind == 0:
            x = self.pick(lambda s, n: len(s) in (2, 4) and int(np.prod(s)) // s[1] >= 4 and not self.ties[n])
            if x is None:
                return False
            c = self.shape[x][1]
            wt, b = self.new_input((c,)), self.new_input((c,))
            self.emit("F.batch_norm({0}, None, None, {1}, {2}, training=True)", (x, wt, b), self.shape[x])
        elif kind == 1:
            x = self.pick(lambda s, n: len(s) >= 1 and s[-1] >= 3 and not self.ties[n])
            if x is None:
                return False
            d = self.shape[x][-1]
            wt = self.new_input((d,))
            self.emit(f"F.layer_norm({{0}}, ({d},), {{1}})", (x, wt), self.shape[x])
        elif kind == 2:
            x = self.pick(lambda s, n: len(s) == 2 and s[1] >= 2)
            if x is None:
                return False
            nb, c = self.shape[x]
            t = [self.r(0, c - 1) for _ in range(nb)]
            self.emit(f"F.cross_entropy({{0}}, gc.tensor({t}))", (x,), ())
        elif kind == 3:
            x = self.pick()
            y = self.pick(lambda s, n: s == self.shape[x] and n != x) or self.new_input(self.shape[x], False)
            self.emit(self.choice(["F.mse_loss({0}, {1})", "F.binary_cross_entropy_with_logits({0}, {1}.sigmoid())",
                                   "F.mse_loss({0}, {1}, reduction='sum') * 0.1"]), (x, y), ())
        else:
            x = self.pick(lambda s, n: len(s) >= 1)
            if x is None:
                return False
            d = self.r(0, len(self.shape[x]) - 1)
            self.emit(f"F.log_softmax({{0}}, dim={d})", (x,), self.shape[x])
        return True

    def join(self) -> bool:
        a = self.pick(lambda s, n: len(s) >= 1)
        if a is None:
            return False
        s = self.shape[a]
        d = self.r(0, len(s) - 1)
        if self.chance(0.5):
            b = self.pick(lambda t, n: len(t) == len(s) and all(x == y for i, (x, y) in enumerate(zip(t, s)) if i != d))
            if b is None:
                idx = ", ".join([":"] * d + [":1"])
                self.emit(f"gc.cat([{{0}}, ({{0}}[{idx}] * 2).sin()], dim={d})", (a,),
                          s[:d] + (s[d] + 1,) + s[d + 1:], self.ties[a])
            else:
                self.emit(f"gc.cat([{{0}}, {{1}}], {d})", (a, b), s[:d] + (s[d] + self.shape[b][d],) + s[d + 1:],
                          self.ties[a] or self.ties[b])
        else:
            b = self.pick(lambda t, n: t == s and n != a)
            d = self.r(0, len(s))
            if b is None:
                self.emit(f"gc.stack([{{0}}, {{0}}.cos(), -{{0}}], dim={d})", (a,), s[:d] + (3,) + s[d:], self.ties[a])
            else:
                self.emit(f"gc.stack([{{0}}, {{1}}], {d})", (a, b), s[:d] + (2,) + s[d:], self.ties[a] or self.ties[b])
        return True

    def inplace(self) -> bool:
        a = self.pick(lambda s, n: len(s) >= 1)
        if a is None:
            return False
        s = self.shape[a]
        kind = self.r(0, 5)
        if kind <= 1:
            b = self.pick(lambda t, n: n != a and self.broadcast(s, t) == s) or self.new_input(self.bcast_partner(s))
            if self.broadcast(s, self.shape[b]) != s:
                return False
            op = self.choice(["add_", "sub_", "mul_"])
            self.emit(f"{{out}} = {{0}} * 1.0; {{out}}.{op}({{1}})", (a, b), s, self.ties[a] or self.ties[b])
        elif kind == 2:
            op = self.choice(["clamp_(-0.4, 0.6)", "relu_()", "mul_(2.0)", "div_(2.0)", "add_(1.0, alpha=0.5)"])
            self.emit(f"{{out}} = {{0}}.clone(); {{out}}.{op}", (a,), s, True)
        elif kind == 3:  # in place through a view: the base must see it
            op = self.choice(["mul_(2.0)", "add_(0.5)", "clamp_(-0.3, 0.3)", "zero_()"])
            view = self.choice(["[0]", "[..., :1]", ".reshape(-1)[:1]"] + ([".mT[0]", ".transpose(0, 1)[-1]"]
                                                                             if len(s) >= 2 else []))
            self.emit(f"{{out}} = {{0}} * 1.0; {{out}}{view}.{op}", (a,), s, True)
        else:
            d0 = s[0]
            idx = self.choice(["1:", "0", ":1", "::2"] if d0 >= 2 else ["0", ":"])
            if len(s) >= 2 and self.chance(0.4):
                idx += ", 1:" if s[1] >= 2 else ", 0"
            if self.chance(0.3):
                self.emit(f"{{out}} = {{0}}.clone(); {{out}}[{idx}] = 0.5", (a,), s, True)
            else:
                self.emit(f"{{out}} = {{0}}.clone(); {{out}}[{idx}] = ({{out}}[{idx}] * 3).tanh()", (a,), s, True)
        return True

    def factory(self) -> bool:
        a = self.pick(lambda s, n: len(s) >= 1)
        if a is None:
            return False
        s = self.shape[a]
        self.emit(self.choice([f"{{0}} + gc.arange({s[-1]}).float() * 0.1",
                               f"{{0}} * gc.full({s}, 0.5)", f"{{0}} + gc.ones({s[-1]})",
                               f"gc.arange(0, {2 * s[-1]}, 2, dtype=gc.float32) * {{0}}"]), (a,), s, self.ties[a])
        return True

    FAMILIES = [("unary", 5), ("binary", 5), ("reduction", 3), ("view", 3), ("matmul", 2), ("conv", 2),
                ("norm_and_loss", 1), ("join", 1), ("inplace", 1), ("factory", 1)]

    def run(self) -> Program:
        for _ in range(self.r(1, 3)):
            self.new_input(self.random_shape(lo=1, hi=5), requires_grad=self.chance(0.85))
        names = [f for f, _ in self.FAMILIES]
        w = np.array([w for _, w in self.FAMILIES], dtype=float)
        tries = 0
        while len(self.stmts) < self.n_steps and tries < 10 * self.n_steps:
            tries += 1
            fam = names[int(self.rng.choice(len(names), p=w / w.sum()))]
            getattr(self, fam)()
        outs = [s.out for s in self.stmts]
        loss = outs[-3:] if len(outs) >= 3 else outs
        return Program(self.seed, list(self.inputs), list(self.stmts), loss, outs[-1] if outs else self.inputs[0][0])


def make_program(seed: int) -> Program:
    """A valid program for this seed: generated, then kept only if its eager run is finite and tame
    (values below 1e4, gradients below 1e6); otherwise the next candidate for the seed is drawn."""
    for attempt in range(50):
        rng = np.random.default_rng([seed, attempt])
        prog = _Gen(int(rng.integers(2**31)), int(rng.integers(3, 12))).run()
        prog.seed = seed
        if _tame(prog):
            return prog
    raise RuntimeError(f"no valid program for seed {seed}")


# ---- running ------------------------------------------------------------------------------------------------

@dataclass
class Run:
    loss: np.ndarray
    out: np.ndarray
    grads: list[np.ndarray | None]
    error: BaseException | None = None


def input_arrays(prog: Program, seed: int) -> tuple[list[np.ndarray], np.ndarray | None]:
    rng = np.random.default_rng(seed)
    xs = [(rng.standard_normal(s) * 0.8).astype(np.float32) for _, s, _ in prog.inputs]
    return xs, None


def run(fn: Callable, prog: Program, arrays: list[np.ndarray], cot_seed: int) -> Run:
    import graphc as gc

    xs = [gc.tensor(a.copy(), requires_grad=rg) for a, (_, _, rg) in zip(arrays, prog.inputs)]
    try:
        loss, out = fn(*xs)
        total = loss
        if isinstance(out, gc.Tensor) and out.requires_grad:
            ct = np.random.default_rng(cot_seed).standard_normal(out.shape).astype(np.float32)
            total = loss + (out * gc.tensor(ct)).sum()
        if total.requires_grad:
            total.backward()
    except Exception as e:  # noqa: BLE001
        return Run(np.zeros(()), np.zeros(()), [], e)
    grads = [None if x.grad is None else x.grad.numpy().copy() for x in xs]
    return Run(loss.detach().numpy().copy(), out.detach().numpy().copy(), grads)


def _tame(prog: Program) -> bool:
    import graphc as gc

    arrays, _ = input_arrays(prog, prog.seed)
    try:
        fn = prog.function()
        with gc.detect_anomaly():  # no NaN/Inf anywhere, forward or backward
            r = run(fn, prog, arrays, prog.seed)
    except Exception:  # noqa: BLE001
        return False
    if r.error is not None:
        return False
    big = [np.abs(r.loss).max(), np.abs(r.out).max() if r.out.size else 0.0]
    big += [np.abs(g).max() / 100 for g in r.grads if g is not None and g.size]
    return bool(np.all(np.isfinite(big)) and max(big) < 1e4)


def compare(a: Run, b: Run, what: str, rtol: float) -> str | None:
    if b.error is not None:
        return f"{what} raised {type(b.error).__name__}: {b.error}"
    pairs = [("loss", a.loss, b.loss), ("output", a.out, b.out)]
    pairs += [(f"grad of x{i}", ga, gb) for i, (ga, gb) in enumerate(zip(a.grads, b.grads))]
    for name, x, y in pairs:
        if (x is None) != (y is None):
            return f"{what}: {name} is {'None' if y is None else 'set'} (eager: {'None' if x is None else 'set'})"
        if x is None:
            continue
        if x.shape != y.shape:
            return f"{what}: {name} has shape {y.shape}, eager {x.shape}"
        scale = max(1.0, float(np.abs(x).max()) if x.size else 1.0)
        if not np.allclose(y, x, rtol=rtol, atol=rtol * scale, equal_nan=True):
            err = float(np.nanmax(np.abs(y.astype(np.float64) - x)))
            return f"{what}: {name} differs from eager by {err:.3g} (scale {scale:.3g})"
    return None


# ---- checks ----------------------------------------------------------------------------------------------------

def jax_available() -> str | None:
    """None when gc.compile(..., backend="jax") works here, else why not."""
    try:
        import jax  # noqa: F401
    except ImportError:
        return "jax is not installed"
    import graphc as gc

    try:
        gc.compile(lambda x: x * 2, backend="jax")
    except ValueError as e:
        return f"the jax backend is not available: {e}"
    return None


def check_backend(prog: Program, backend: str) -> str | None:
    import graphc as gc

    fn = prog.function()
    cf = gc.compile(fn, backend=backend) if backend != "numpy" else gc.compile(fn)
    rtol = 1e-4 if backend == "numpy" else 5e-4
    for k in range(2):  # the second call runs the cached graph on new values
        arrays, _ = input_arrays(prog, prog.seed + 7919 * k)
        eager = run(fn, prog, arrays, prog.seed + k)
        if eager.error is not None:
            return None  # not a valid program for these values (never for the first set)
        bad = compare(eager, run(cf, prog, arrays, prog.seed + k), f"compiled ({backend}), call {k + 1}", rtol)
        if bad:
            return bad
    if cf.cache_info().entries != 1:
        return f"compiled ({backend}) built {cf.cache_info().entries} graphs for one signature"
    return None


def interpret(graph: Any, arrays: list[Any]) -> list[np.ndarray]:
    """Run a graph node by node with the numpy kernels (the reference every pass is compared with)."""
    from graphc.backends.numpy import KERNELS

    env = {id(v): a for v, a in zip(graph.inputs, arrays)}
    with np.errstate(all="ignore"):
        for node in graph.nodes:
            res = KERNELS[node.op](*[env[id(v)] for v in node.inputs], **node.attrs)
            for v, a in zip(node.outputs, res if len(node.outputs) > 1 else (res,)):
                a = np.asarray(a)
                env[id(v)] = a.astype(v.type.dtype.np) if a.dtype != v.type.dtype.np else a
    return [np.asarray(env[id(v)]) for v in graph.outputs]


def _graph_inputs(graph: Any, rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for v in graph.inputs:
        t = v.type
        if t.dtype.is_floating_point:
            out.append((rng.standard_normal(t.shape) * 0.8).astype(t.dtype.np))
        elif t.dtype.name == "bool":
            out.append(rng.random(t.shape) < 0.5)
        else:
            out.append(np.asarray(rng.integers(0, 2**31, size=t.shape), dtype=t.dtype.np))
    return out


def _same(xs: list[np.ndarray], ys: list[np.ndarray], what: str) -> str | None:
    for k, (x, y) in enumerate(zip(xs, ys)):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or x.dtype != y.dtype:
            return f"{what}: output {k} is {y.dtype}{list(y.shape)}, was {x.dtype}{list(x.shape)}"
        if x.dtype.kind == "f":
            scale = max(1.0, float(np.nanmax(np.abs(x))) if x.size and np.isfinite(x).any() else 1.0)
            if not np.allclose(y, x, rtol=1e-5, atol=1e-5 * scale, equal_nan=True):
                return f"{what}: output {k} differs by {float(np.nanmax(np.abs(y - x))):.3g}"
        elif not np.array_equal(x, y):
            return f"{what}: output {k} differs"
    return None


def check_passes(prog: Program) -> str | None:
    """Each pass against the graph before it, the partition against the joint graph, generated code against
    the graph it was generated from, all on the same random inputs."""
    with np.errstate(all="ignore"):  # random inputs may leave a safe domain: NaN compares equal to NaN
        return _check_passes(prog)


def _check_passes(prog: Program) -> str | None:
    import graphc as gc

    fn = prog.function()
    arrays, _ = input_arrays(prog, prog.seed)
    xs = [gc.tensor(a, requires_grad=rg) for a, (_, _, rg) in zip(arrays, prog.inputs)]
    try:
        low = gc.compile(fn).lower(*xs)
    except Exception as e:  # noqa: BLE001
        return f"lowering raised {type(e).__name__}: {e}"
    rng = np.random.default_rng(prog.seed)
    final = _graph_inputs(low.stages[-1][1], rng)
    prev_name, prev = low.stages[0]
    for name, g in low.stages[1:]:
        n_in = min(len(prev.inputs), len(g.inputs))
        a = interpret(prev, [x.copy() for x in final[:len(prev.inputs)]])
        b = interpret(g, [x.copy() for x in final[:len(g.inputs)]])
        n_out = min(len(a), len(b)) if n_in == len(prev.inputs) else 0
        bad = _same(a[:n_out], b[:n_out], f"pass {name} (after {prev_name})")
        if bad:
            return bad
        prev_name, prev = name, g
    joint = interpret(low.graph, [x.copy() for x in final])
    exe = low.compile()
    if low.partition is not None:
        p = low.partition
        n_primal_in = len(p.forward.inputs)
        n_primal_out = len(p.forward.outputs) - p.n_saved
        fwd = interpret(p.forward, [x.copy() for x in final[:n_primal_in]])
        bwd = interpret(p.backward, [x.copy() for x in fwd[n_primal_out:] + final[n_primal_in:]])
        bad = _same(joint, fwd[:n_primal_out] + bwd, "partition into forward and backward")
        if bad:
            return bad
        gen = list(exe._fn(*[x.copy() for x in final[:n_primal_in]]))
        bad = _same(fwd, gen, "generated forward code")
        if bad:
            return bad
        genb = list(exe._bwd(*[x.copy() for x in gen[n_primal_out:] + final[n_primal_in:]]))
        return _same(bwd, genb, "generated backward code")
    gen = list(exe._fn(*[x.copy() for x in final]))
    return _same(joint, gen, "generated code")


LEGS = {
    "numpy": lambda p: check_backend(p, "numpy"),
    "jax": lambda p: check_backend(p, "jax"),
    "passes": check_passes,
}


def failing(prog: Program, leg: str) -> str | None:
    try:
        return LEGS[leg](prog)
    except Exception as e:  # noqa: BLE001  (a crash in the harness's call is a finding too)
        return f"{leg}: {type(e).__name__}: {e}"


# ---- shrinking -------------------------------------------------------------------------------------------------

def _without(prog: Program, drop: set[str]) -> Program | None:
    """The program without the statements producing `drop` and everything that depends on them."""
    gone = set(drop)
    stmts = []
    for s in prog.stmts:
        if s.out in gone or any(a in gone for a in s.args):
            gone.add(s.out)
        else:
            stmts.append(s)
    if not stmts:
        return None
    loss = [n for n in prog.loss if n not in gone]
    out = prog.out if prog.out not in gone else stmts[-1].out
    used = {a for s in stmts for a in s.args}
    inputs = [i for i in prog.inputs if i[0] in used or i[0] == out]
    return replace(prog, inputs=inputs, stmts=stmts, loss=loss, out=out)


def _prune(prog: Program) -> Program:
    """Only the statements the results need, only the inputs those use."""
    live = set(prog.loss) | {prog.out}
    stmts = []
    for st in reversed(prog.stmts):
        if st.out in live:
            stmts.append(st)
            live.update(st.args)
    stmts.reverse()
    inputs = [i for i in prog.inputs if i[0] in live]
    return replace(prog, inputs=inputs, stmts=stmts)


def _cut(prog: Program, name: str) -> Program | None:
    """The program with statement `name` replaced by a new input of its shape (what precedes it may go)."""
    st = next(s for s in prog.stmts if s.out == name)
    if st is prog.stmts[-1] and prog.out == name and len(prog.stmts) == 1:
        return None
    cand = replace(prog, inputs=prog.inputs + [(name, st.shape, True)], stmts=[s for s in prog.stmts if s is not st])
    cand = _prune(cand)
    return cand if cand.stmts else None


def shrink(prog: Program, leg: str, budget: int = 300) -> tuple[Program, str]:
    """Delete statements (with their dependents), cut statements into inputs and drop loss terms while the
    failure persists."""
    why = failing(prog, leg) or "?"
    tries = 0
    changed = True
    while changed and tries < budget:
        changed = False
        cands: list[Program | None] = [replace(prog, loss=[])] if prog.loss else []
        cands += [_without(prog, {s.out}) for s in reversed(prog.stmts)]
        cands += [_cut(prog, s.out) for s in prog.stmts]
        cands += [replace(prog, loss=[n for n in prog.loss if n != x]) for x in prog.loss]
        for cand in cands:
            if cand is None or tries >= budget:
                continue
            tries += 1
            if not _tame(cand):
                continue
            w = failing(cand, leg)
            if w:
                prog, why, changed = cand, w, True
                break
    return prog, why


@dataclass
class Report:
    programs: int = 0
    checks: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, leg: str) -> None:
        self.checks[leg] = self.checks.get(leg, 0) + 1


def fuzz(seeds: Any, legs: Callable[[int], list[str]], report: Report | None = None) -> Report:
    report = report or Report()
    for seed in seeds:
        prog = make_program(seed)
        report.programs += 1
        for leg in legs(seed):
            report.add(leg)
            if failing(prog, leg):
                small, why = shrink(prog, leg)
                report.failures.append(f"fuzz program {seed} fails the {leg} check: {why}\n"
                                       f"minimal repro ({small.nodes()} of {prog.nodes()} statements):\n"
                                       f"{small.repro()}")
    return report


def ops_used(prog: Program) -> set[str]:
    """Op-table entries the program's traced and differentiated graphs use."""
    import graphc as gc

    arrays, _ = input_arrays(prog, prog.seed)
    xs = [gc.tensor(a, requires_grad=rg) for a, (_, _, rg) in zip(arrays, prog.inputs)]
    low = gc.compile(prog.function(), optimize=False).lower(*xs)
    return {n.op for _, g in low.stages for n in g.nodes}


if __name__ == "__main__":  # python tests/fuzzgen.py SEED [SEED...]: print and check programs
    for arg in sys.argv[1:]:
        p = make_program(int(arg))
        print(p.source())
        for leg in ["numpy", "passes"] + ([] if jax_available() else ["jax"]):
            print(f"  {leg}: {failing(p, leg) or 'ok'}")
