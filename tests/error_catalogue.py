"""The error catalogue: every user mistake graphc diagnoses, as a runnable snippet.

Each case is a small program saved as `example.py`; running it must raise the listed exception whose
message contains the listed fragments, with a traceback whose last frame is the line marked `# <-` in
the snippet (never a graphc-internal frame). tests/test_error_catalogue.py checks every case;
`python tests/error_catalogue.py` rewrites docs/errors.md from the real output.
"""
from __future__ import annotations

import contextlib
import linecache
import os
import re
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

FILENAME = "example.py"
HEAD = "import numpy as np\nimport graphc as gc\nfrom graphc import nn, optim\nimport graphc.nn.functional as F\n"
_HIDE = len(HEAD.splitlines())
DOC = Path(__file__).resolve().parent.parent / "docs" / "errors.md"


@dataclass
class Case:
    key: str
    section: str
    title: str
    code: str  # shown in the docs; the line marked "# <-" is where the traceback must end
    error: str  # the exception class name
    expect: list[str] = field(default_factory=list)  # fragments of str(exception)
    located: bool = True  # the message itself names example.py and the marked line
    setup: str = ""  # run first, not shown (creates files and such)
    after: str = ""  # run after the error in the same namespace: asserts that nothing changed
    note: str = ""  # one sentence for the docs

    @property
    def line(self) -> int:
        n = _HIDE + len(self.setup.splitlines())
        for i, text in enumerate(self.code.splitlines(), 1):
            if "# <-" in text:
                return n + i
        raise ValueError(f"case {self.key}: no line marked '# <-'")




def _shape_cases() -> list[Case]:
    """Each shape family, eager and compiled: op, both shapes, module path and the user's line."""
    families = [
        ("matmul", "matmul", """
class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(gc.ones(4, 3))

    def forward(self, x):
        return x @ self.w  # <-

model = nn.Sequential(nn.ReLU(), Head())
x = gc.ones(2, 5)
""", ["matmul", "(2x5 and 4x3)", "in module 1"]),
        ("broadcast", "broadcasting", """
class Shift(nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(gc.zeros(3))

    def forward(self, x):
        return x + self.bias  # <-

model = nn.Sequential(nn.ReLU(), Shift())
x = gc.ones(2, 5)
""", ["add", "(2, 5)", "(3,)", "size of tensor a (5) must match the size of tensor b (3) at non-singleton "
                                "dimension 1", "in module 1"]),
        ("reshape", "reshape size", """
class Unflatten(nn.Module):
    def forward(self, x):
        return x.reshape(x.shape[0], 4, 4)  # <-

model = nn.Sequential(nn.ReLU(), Unflatten())
x = gc.ones(2, 12)
""", ["shape '[2, 4, 4]' is invalid for input of size 24", "in module 1"]),
        ("cat", "cat dimensions", """
class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.extra = nn.Parameter(gc.zeros(1, 4))

    def forward(self, x):
        return gc.cat([x, self.extra], dim=0)  # <-

model = nn.Sequential(nn.ReLU(), Concat())
x = gc.ones(2, 5)
""", ["cat", "Sizes of tensors must match except in dimension 0", "(2, 5)", "(1, 4)", "in module 1"]),
        ("conv2d", "conv2d channel count", """
model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(8, 16, 3))
x = gc.ones(1, 3, 10, 10)
""", ["conv2d", "weight of size [16, 8, 3, 3], expected input[1, 6, 8, 8] to have 8 channels, but got 6 "
                 "channels instead", "in module 2"]),
        ("linear", "nn.Linear input size", """
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(16, 2))
x = gc.ones(2, 4)
""", ["matmul", "(2x8 and 16x2)", "in module 2"]),
    ]
    cases = []
    for key, what, setup, expect in families:
        marked = "# <-" in setup  # the error is inside the user's module, else at the call
        for mode, call in (("eager", "model(x)"), ("compiled", "gc.compile(model)(x)")):
            code = setup.strip("\n") + "\n" + call + ("" if marked else "  # <-") + "\n"
            cases.append(Case(f"shape-{key}-{mode}", "Shape mismatches", f"{what} ({mode})", code, "ShapeError",
                              expect))
    return cases


CASES: list[Case] = _shape_cases() + [
    # ---- dtypes -----------------------------------------------------------------------------------------
    Case("dtype-int-requires-grad", "Dtypes", "an integer tensor cannot require grad", """
labels = gc.tensor([0, 2, 1], requires_grad=True)  # <-
""", "RuntimeError", ["only Tensors of floating point dtype can require gradients (got int64)"]),
    Case("dtype-int-parameter", "Dtypes", "an integer nn.Parameter", """
counts = nn.Parameter(gc.tensor([1, 2, 3]))  # <-
""", "RuntimeError", ["only Tensors of floating point dtype can require gradients (got int64)"]),
    Case("dtype-bool-sub", "Dtypes", "subtracting a mask", """
x = gc.randn(4)
mask = x > 0
y = x - mask  # <-
""", "RuntimeError", ["Subtraction, the `-` operator, with a bool tensor is not supported",
                      "use the `~` or `logical_not()` operator"]),
    Case("dtype-bool-neg-compiled", "Dtypes", "negating a mask (compiled)", """
@gc.compile
def keep_negative(x):
    mask = x > 0
    return gc.where(-mask, x, 0.0)  # <-

keep_negative(gc.randn(4))
""", "RuntimeError", ["Negation, the `-` operator, on a bool tensor is not supported"]),
    # ---- control flow -------------------------------------------------------------------------------------
    Case("trace-if", "Data-dependent control flow", "`if` on a traced tensor", """
@gc.compile
def f(x, w):
    h = (x @ w).relu()
    if h.sum() > 0:  # <-
        return h
    return -h

f(gc.ones(2, 3), gc.ones(3, 4))
""", "TraceError", ["bool(tensor) needs the concrete value of a traced tensor", "gc.where(cond, a, b)",
                    "static Python argument"]),
    Case("trace-item", "Data-dependent control flow", "`.item()` on a traced tensor", """
@gc.compile
def normalize(x):
    return x / x.abs().max().item()  # <-

normalize(gc.randn(5))
""", "TraceError", ["Tensor.item() needs the concrete value of a traced tensor"]),
    # ---- backward -------------------------------------------------------------------------------------------
    Case("backward-twice", "Backward", "backward through the same graph twice", """
w = gc.randn(3, requires_grad=True)
loss = (w.exp() * w).sum()
loss.backward()
loss.backward()  # <-
""", "RuntimeError", ["Trying to backward through the graph a second time", "retain_graph=True"], located=False),
    Case("backward-non-scalar", "Backward", "backward on a non-scalar without a gradient", """
w = gc.randn(3, requires_grad=True)
y = w * 2
y.backward()  # <-
""", "RuntimeError", ["grad can be implicitly created only for scalar outputs"], located=False),
    Case("backward-no-grad-fn", "Backward", "backward on a tensor that does not require grad", """
x = gc.randn(3)
loss = (x * 2).sum()
loss.backward()  # <-
""", "RuntimeError", ["element 0 of tensors does not require grad and does not have a grad_fn"], located=False),
    Case("backward-inplace", "Backward", "a tensor saved for backward was modified in place", """
w = gc.randn(3, requires_grad=True)
y = w.exp()
y.mul_(2)
y.sum().backward()  # <-
""", "RuntimeError", ["one of the variables needed for gradient computation has been modified by an inplace "
                      "operation", "output 0 of Exp", "is at version 1; expected version 0 instead"],
         located=False),
    Case("backward-inplace-compiled", "Backward", "an input saved by a compiled function was modified in place", """
f = gc.compile(lambda w, x: (w * x).sum())
w, x = gc.randn(3, requires_grad=True), gc.randn(3)
loss = f(w, x)
x.mul_(2)
loss.backward()  # <-
""", "RuntimeError", ["one of the variables needed for gradient computation has been modified by an inplace "
                      "operation", "is at version 1; expected version 0 instead"], located=False),
    # ---- calling compiled functions -------------------------------------------------------------------------
    Case("call-missing", "Calling a compiled function", "a missing argument", """
@gc.compile
def step(x, y):
    return ((x - y) ** 2).mean()

step(gc.ones(3))  # <-
""", "TypeError", ["step() missing 1 required positional argument: 'y'"], located=False),
    Case("call-too-many", "Calling a compiled function", "too many arguments", """
@gc.compile
def step(x, y):
    return ((x - y) ** 2).mean()

step(gc.ones(3), gc.ones(3), gc.ones(3))  # <-
""", "TypeError", ["step() takes 2 positional arguments but 3 were given"], located=False),
    Case("call-keyword", "Calling a compiled function", "an unknown keyword", """
model = gc.compile(nn.Linear(3, 2))
model(gc.ones(1, 3), bias=False)  # <-
""", "TypeError", ["forward() got an unexpected keyword argument 'bias'"], located=False),
    Case("call-numpy", "Calling a compiled function", "a numpy array instead of a tensor", """
@gc.compile
def step(x, y):
    return ((x - y) ** 2).mean()

step(gc.ones(3), np.ones(3, dtype=np.float32))  # <-
""", "TypeError", ["argument 'y' of a compiled function is a numpy array", "gc.tensor(array)"], located=False),
    Case("call-executable-shape", "Calling a compiled function", "an executable called with another shape", """
def step(x, y):
    return ((x - y) ** 2).mean()

exe = gc.compile(step).lower(gc.ones(8, 3), gc.ones(8, 3)).compile()
exe(gc.ones(4, 3), gc.ones(4, 3))  # <-
""", "TypeError", ["tensor argument 0 has type f32[4,3], but the executable was compiled for f32[8,3]"],
         located=False),
    Case("compile-backend", "Calling a compiled function", "an unknown backend", """
f = gc.compile(lambda x: x * 2, backend="tpu")  # <-
""", "ValueError", ["unknown backend 'tpu'"], located=False),
    # ---- state dicts -----------------------------------------------------------------------------------------
    Case("state-dict", "Loading weights", "missing, unexpected and mis-shaped keys (nothing is written)", """
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
checkpoint = {"0.weight": np.zeros((8, 5)), "0.bias": np.zeros(8), "2.weight": np.zeros((2, 8)),
              "head.weight": np.zeros((2, 8))}
model.load_state_dict(checkpoint)  # <-
""", "RuntimeError", ["Error(s) in loading state_dict for Sequential", 'Missing key(s) in state_dict: "2.bias"',
                      'Unexpected key(s) in state_dict: "head.weight"',
                      "size mismatch for 0.weight: copying a param with shape"], located=False,
         after="""
assert all((model.state_dict()[k].numpy() == v).all() for k, v in before.items())
"""),
    # ---- artifacts ---------------------------------------------------------------------------------------------
    Case("artifact-not-zip", "Compiled artifacts", "a file that is not an artifact", """
gc.load("notes.txt")  # <-
""", "ArtifactError", ["notes.txt is not a graphc artifact, or it was truncated (not a readable zip file"],
         located=False, setup="open('notes.txt', 'w').write('hello')\n"),
    Case("artifact-other-zip", "Compiled artifacts", "a zip file that is not an artifact", """
gc.load("photos.zip")  # <-
""", "ArtifactError", ["photos.zip is not a graphc artifact (no readable manifest.json"], located=False,
         setup="import zipfile\nwith zipfile.ZipFile('photos.zip', 'w') as z:\n    z.writestr('a.txt', 'x')\n"),
    Case("artifact-corrupt", "Compiled artifacts", "a member altered after saving", """
gc.load("step.graphc")  # <-
""", "ArtifactError", ["step.graphc: member graph.json does not match its sha256 in the manifest"],
         located=False, setup="make_artifact('step.graphc')\ncorrupt('step.graphc', 'graph.json')\n"),
    Case("artifact-truncated", "Compiled artifacts", "a truncated file", """
gc.load("step.graphc")  # <-
""", "ArtifactError", ["step.graphc is not a graphc artifact, or it was truncated"], located=False,
         setup="make_artifact('step.graphc')\ndata = open('step.graphc', 'rb').read()\n"
               "open('step.graphc', 'wb').write(data[:len(data) // 2])\n"),
    Case("artifact-version", "Compiled artifacts", "an artifact from another format version", """
gc.load("step.graphc")  # <-
""", "ArtifactError", ["step.graphc was written with artifact version 99", "this graphc reads version"],
         located=False, setup="make_artifact('step.graphc')\nset_version('step.graphc', 99)\n"),
    Case("artifact-signature", "Compiled artifacts", "a loaded artifact called with the wrong input types", """
step = gc.load("step.graphc")
step(gc.ones(2, 4), gc.ones(2, 3))  # <-
""", "TypeError", ["tensor argument 0 has type f32[2,4], but the executable was compiled for f32[8,4]"],
         located=False, setup="make_artifact('step.graphc')\n"),
    # ---- anomaly mode ---------------------------------------------------------------------------------------------
    Case("anomaly-forward", "Anomaly mode", "the first NaN in the forward pass (eager)", """
x = gc.tensor([1.0, -1.0], requires_grad=True)
with gc.detect_anomaly():
    y = x.log()  # <-
""", "RuntimeError", ["detect_anomaly: op 'log' produced NaN/Inf in its output during the forward phase"]),
    Case("anomaly-forward-compiled", "Anomaly mode", "the first NaN in the forward pass (compiled)", """
class Scale(nn.Module):
    def forward(self, x):
        return (x - 1).log()

model = gc.compile(nn.Sequential(nn.Linear(2, 2), Scale()))
with gc.detect_anomaly():
    model(gc.ones(3, 2))  # <-
""", "RuntimeError", ["detect_anomaly: op 'log' produced NaN/Inf", "during the forward phase",
                      "in module 1", f"at {FILENAME}:"], located=False),
    Case("anomaly-backward", "Anomaly mode", "the first Inf in the backward pass (eager)", """
x = gc.tensor([0.0, 1.0], requires_grad=True)
with gc.detect_anomaly():
    y = x.sqrt().sum()
    y.backward()  # <-
""", "RuntimeError", ["Function 'SqrtBackward0' returned inf values in its 0th output during the backward phase",
                      f"forward op recorded at {FILENAME}:"], located=False),
    Case("anomaly-backward-compiled", "Anomaly mode", "the first Inf in the backward pass of a compiled step", """
w = gc.tensor([0.0, 1.0], requires_grad=True)

@gc.compile
def step(x):
    loss = (w.sqrt() * x).sum()
    loss.backward()
    return loss

with gc.detect_anomaly():
    step(gc.ones(2))  # <-
""", "RuntimeError", ["produced NaN/Inf in its output during the backward phase of a compiled graph",
                      f"at {FILENAME}:"], located=False, after="assert w.grad is None\n"),
]


# ---- running a case ------------------------------------------------------------------------------------------

def _helpers() -> dict:
    """Functions the hidden setup code may call."""
    import json
    import zipfile

    from steps import save_tiny_step


    def make_artifact(path: str) -> None:
        save_tiny_step(path)

    def _rewrite(path: str, member: str, fn) -> None:
        with zipfile.ZipFile(path) as z:
            items = {n: z.read(n) for n in z.namelist()}
        items[member] = fn(items[member])
        with zipfile.ZipFile(path, "w") as z:
            for n, v in items.items():
                z.writestr(n, v)

    def corrupt(path: str, member: str) -> None:
        _rewrite(path, member, lambda b: b.replace(b'"mean"', b'"sum"'))

    def set_version(path: str, version: int) -> None:
        _rewrite(path, "manifest.json", lambda b: json.dumps({**json.loads(b), "version": version}).encode())

    return {"make_artifact": make_artifact, "corrupt": corrupt, "set_version": set_version}


@dataclass
class Outcome:
    exc: BaseException | None
    frames: list[traceback.FrameSummary]  # the frames from example.py on
    text: str  # the traceback as Python prints it, from example.py's first frame


def run_case(case: Case) -> Outcome:
    source = HEAD + case.setup + case.code.replace("  # <-", "")
    linecache.cache[FILENAME] = (len(source), None, source.splitlines(True), FILENAME)
    code = compile(source, FILENAME, "exec")
    ns: dict = {"__name__": "__example__", **_helpers()}
    exc = None
    with tempfile.TemporaryDirectory() as d, _chdir(d):
        try:
            exec(code, ns)  # noqa: S102  (the catalogue's own snippets)
        except Exception as e:  # noqa: BLE001
            exc = e
        if exc is not None and case.after:
            exec(compile(case.after, "<after>", "exec"), ns)  # noqa: S102
    if exc is None:
        return Outcome(None, [], "")
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != FILENAME:  # drop the harness's own frame
        tb = tb.tb_next
    frames = traceback.extract_tb(tb)
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    return Outcome(exc, frames, text)


@contextlib.contextmanager
def _chdir(path: str):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


# ---- the document ----------------------------------------------------------------------------------------------

INTRO = """# Error catalogue

Every mistake below is diagnosed by graphc with the message shown, which is the **real output** of the
snippet (saved as `example.py`; `tests/error_catalogue.py` runs them all and rewrites this page, and
`tests/test_error_catalogue.py` fails when a message here no longer matches what graphc prints).
Each snippet starts with `import numpy as np`, `import graphc as gc`, `from graphc import nn, optim` and
`import graphc.nn.functional as F` (not shown).

## How graphc reports errors

* **Messages name your code.** Shape and dtype errors name the op, both shapes, the module path
  (`in module 2`, the name under which `nn.Sequential` or your `__init__` registered the layer) and your
  file and line, in eager and in compiled code alike. Wording follows PyTorch where PyTorch has an error for
  the same mistake.
* **Tracebacks end at your line.** When graphc diagnoses a mistake, its public entry points (tensor
  methods, `gc.*` functions, `Module.__call__`, compiled functions, `backward`, `gc.load`) remove graphc's
  internal frames from the traceback, so its last frame is the line of yours that went wrong, and add a note
  saying how many frames were hidden. This is JAX's traceback filtering, applied only to graphc's own
  diagnoses (exceptions raised by a `raise` statement in graphc): an exception from your own code, or an
  unexpected failure inside graphc (a bug), keeps its full traceback. `GRAPHC_TRACEBACK_FILTERING=off`
  keeps every frame.
* **Nothing is half-done.** A failed `load_state_dict` writes nothing; a compiled call that fails writes no
  parameter, gradient or optimizer state back (every output is computed before any is written; the one
  exception: a `.grad` the step cleared with `zero_grad()` and whose memory it was reusing for the new
  gradient is left None, as `zero_grad()` left it); an artifact is written to a temporary file and renamed,
  so an interrupted save never leaves a partial file.
"""


def render() -> str:
    parts = [INTRO]
    section = None
    for case in CASES:
        if case.section != section:
            section = case.section
            parts.append(f"\n## {section}\n")
        out = run_case(case)
        parts.append(f"\n### {case.title}\n")
        if case.note:
            parts.append(f"\n{case.note}\n")
        shown = case.code.replace("  # <-", "").strip("\n")
        parts.append(f"\n```python\n{shown}\n```\n```\n{out.text.rstrip()}\n```\n")
    return "".join(parts)


def normalize(text: str) -> str:
    """What may differ between two runs without the catalogue being stale: frame counts, file paths."""
    text = re.sub(r"graphc: \d+ internal frame", "graphc: N internal frame", text)
    return text


def main() -> None:
    sys.path.insert(0, str(DOC.parent.parent))
    DOC.write_text(render())
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
