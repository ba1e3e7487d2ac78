"""The automatic op-table test (DESIGN.md, Testing): every op declared in graphc.ops.OPS has a numpy
kernel, a jax lowering, a VJP (or a reason why not) and sample inputs; over those samples the
forward matches the op's shape/dtype rule, the VJP matches central finite differences with
torch.autograd.gradcheck's tolerances, and both agree with the JAX lowering and jax.vjp as an
independent oracle. Adding an op to the table adds its cases here with no edit to this file.
"""
from __future__ import annotations

import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.backends.numpy import KERNELS
from graphc.dispatch import apply
from graphc.ir.types import TensorType, dtype_of
from graphc.ops import OPS, Sample

try:
    import jax
    import jax.numpy as jnp

    from graphc.backends.jax import LOWERINGS, run_op_jax
except ImportError:  # the jax checks skip; the rest of the file still runs
    jax = jnp = run_op_jax = None
    LOWERINGS = None

EPS, ATOL, RTOL = 1e-6, 1e-5, 1e-3  # torch.autograd.gradcheck's defaults
FD_EPS_LOW_PRECISION = 1e-2  # for float32 outputs (cast): 1e-6 would drown in rounding; the op is linear anyway


def _samples(name: str) -> list[Sample]:
    return OPS[name].samples(np.random.default_rng(0))


CASES = [pytest.param(name, i, id=f"{name}-{i}") for name in OPS for i in range(len(_samples(name)))]
DIFF_CASES = [c for c in CASES if OPS[c.values[0]].vjp is not None]
RANDOM_OPS = sorted(n for n, op in OPS.items() if op.kind == "random")


def _case(name: str, i: int) -> Sample:
    return _samples(name)[i]


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _is_float(a: np.ndarray) -> bool:
    return a.dtype.kind == "f"


def _as_tuple(res: object) -> tuple:
    return res if isinstance(res, tuple) else (res,)


def _eager(name: str, arrays: list[np.ndarray], attrs: dict, grad: bool = False) -> tuple[list[gc.Tensor], tuple]:
    """Run the op through graphc's eager dispatch; float inputs require grad when asked."""
    ts = [gc.Tensor(a, requires_grad=grad and _is_float(a)) for a in arrays]
    return ts, _as_tuple(apply(name, ts, attrs))


def _kernel(name: str, arrays: list[np.ndarray], attrs: dict) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(o) for o in _as_tuple(KERNELS[name](*arrays, **attrs)))


def _vjp_graphc(name: str, sample: Sample, ct: np.ndarray, wrt: list[int]) -> list[np.ndarray]:
    """VJP of output 0 w.r.t. the inputs in `wrt` (only those require grad), via gc.autograd.grad."""
    ts = [gc.Tensor(a, requires_grad=k in wrt) for k, a in enumerate(sample.inputs)]
    out = _as_tuple(apply(name, ts, sample.attrs))[0]
    grads = gc.autograd.grad(out, [ts[k] for k in wrt], grad_outputs=gc.Tensor(ct))
    return [g.numpy() for g in grads]


def _vjp_fd(name: str, sample: Sample, ct: np.ndarray, k: int) -> np.ndarray:
    """d<ct, f(x)>/dx_k by central differences on the numpy kernel, one element at a time."""
    arrays = [a.copy() for a in sample.inputs]
    x = arrays[k]
    eps = EPS if ct.dtype == np.float64 else FD_EPS_LOW_PRECISION
    grad = np.zeros_like(x)
    for j in np.ndindex(x.shape):
        orig = x[j]
        x[j] = orig + eps
        hi = np.vdot(ct, _kernel(name, arrays, sample.attrs)[0].astype(np.float64))
        x[j] = orig - eps
        lo = np.vdot(ct, _kernel(name, arrays, sample.attrs)[0].astype(np.float64))
        x[j] = orig
        grad[j] = (hi - lo) / (2 * eps)
    return grad


def _cotangent(key: str, out_type: TensorType) -> np.ndarray:
    """The seeded cotangent of case `key`: graphc and JAX get the same one."""
    return _rng(key, "ct").standard_normal(out_type.shape).astype(out_type.dtype.np)


def _float_inputs(sample: Sample) -> list[int]:
    return [k for k, a in enumerate(sample.inputs) if _is_float(a)]


# ---- the table is complete --------------------------------------------------------------------------

def test_every_op_has_kernel_lowering_vjp_and_samples():
    problems = []
    for name, op in OPS.items():
        if name not in KERNELS:
            problems.append(f"{name}: no numpy kernel (graphc.backends.numpy.KERNELS)")
        if LOWERINGS is not None and name not in LOWERINGS:
            problems.append(f"{name}: no jax lowering (graphc.backends.jax.LOWERINGS)")
        if op.vjp is None and not op.nondiff:
            problems.append(f"{name}: no VJP and no `nondiff` reason")
        if op.vjp is not None and op.nondiff:
            problems.append(f"{name}: has a VJP yet claims to be non-differentiable ({op.nondiff})")
        if op.samples is None or not op.samples(np.random.default_rng(0)):
            problems.append(f"{name}: no sample inputs")
    assert not problems, "op table incomplete:\n" + "\n".join(problems)


def test_graphc_imports_and_runs_without_jax():
    """Nothing in graphc's core imports jax: block it and run an eager backward."""
    code = ("import sys; sys.modules['jax'] = None\n"
            "import graphc as gc\n"
            "x = gc.tensor([1., 2.], requires_grad=True); (x * x).sum().backward()\n"
            "assert x.grad.tolist() == [2., 4.]\n"
            "assert not any(m == 'jax' or m.startswith(('jax.', 'jaxlib')) for m in sys.modules if sys.modules[m])\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).resolve().parents[1])


# ---- forward: shape/dtype rule, eager == kernel -------------------------------------------------------

@pytest.mark.parametrize("name,i", CASES)
def test_forward_matches_shape_rule(name, i):
    s = _case(name, i)
    types = OPS[name].infer_types([TensorType(a.shape, dtype_of(a.dtype)) for a in s.inputs], s.attrs)
    raw = _kernel(name, s.inputs, s.attrs)
    _, outs = _eager(name, s.inputs, s.attrs, grad=OPS[name].vjp is not None)
    assert len(raw) == len(outs) == len(types) == OPS[name].nout
    for k, (r, o, t) in enumerate(zip(raw, outs, types, strict=True)):
        # the kernel itself must honour the rule: generated code calls it without dispatch's cast
        assert (r.shape, r.dtype) == (t.shape, t.dtype.np), f"kernel output {k}: {r.shape} {r.dtype} vs rule {t}"
        assert o.type == t
        if OPS[name].kind != "random":
            np.testing.assert_array_equal(o.detach().numpy(), r)


# ---- VJP against central finite differences ------------------------------------------------------------

@pytest.mark.parametrize("name,i", DIFF_CASES)
def test_vjp_matches_finite_differences(name, i):
    s = _case(name, i)
    wrt = _float_inputs(s)
    assert wrt, "a differentiable op's samples need a floating input"
    out_type = OPS[name].infer_types([TensorType(a.shape, dtype_of(a.dtype)) for a in s.inputs], s.attrs)[0]
    ct = _cotangent(f"{name}-{i}", out_type)
    expected = {k: _vjp_fd(name, s, ct, k) for k in wrt}
    # all float inputs at once, then each alone (VJP rules skip inputs that need no grad)
    for subset in [wrt] + ([[k] for k in wrt] if len(wrt) > 1 else []):
        got = _vjp_graphc(name, s, ct, subset)
        for k, g in zip(subset, got, strict=True):
            assert g.shape == s.inputs[k].shape and g.dtype == s.inputs[k].dtype, f"grad of input {k}"
            np.testing.assert_allclose(g, expected[k], rtol=RTOL, atol=ATOL,
                                       err_msg=f"{name}: grad of input {k} (requires_grad on {subset})")


# ---- JAX as an independent oracle ------------------------------------------------------------------------

_TIES = {  # integer-valued floats: ties everywhere, where kernels must pick like torch and JAX
    "max_pool2d": Sample([np.floor(_rng("ties").uniform(0, 3, (2, 2, 6, 5)))],
                         {"kernel_size": (3, 3), "stride": (2, 1), "padding": (1, 1)}),
    "max_pool2d_with_indices": Sample([np.floor(_rng("ties").uniform(0, 3, (2, 2, 6, 5)))],
                                      {"kernel_size": (3, 3), "stride": (2, 1), "padding": (1, 1)}),
    "amax": Sample([np.floor(_rng("ties").uniform(0, 3, (3, 5)))], {"axes": (1,), "keepdim": False}),
    "amin": Sample([np.floor(_rng("ties").uniform(0, 3, (3, 5)))], {"axes": (0, 1), "keepdim": True}),
    "max_dim": Sample([np.floor(_rng("ties").uniform(0, 3, (3, 5)))], {"axis": 1, "keepdim": False}),
    "min_dim": Sample([np.floor(_rng("ties").uniform(0, 3, (3, 5)))], {"axis": 0, "keepdim": True}),
    "maximum": Sample([np.floor(_rng("a").uniform(0, 3, (3, 5))), np.floor(_rng("b").uniform(0, 3, (5,)))]),
    "minimum": Sample([np.floor(_rng("a").uniform(0, 3, (3, 5))), np.floor(_rng("b").uniform(0, 3, (5,)))]),
    "argmax": Sample([np.floor(_rng("ties").uniform(0, 3, (3, 5)))], {"axis": 1, "keepdim": False}),
    "relu": Sample([np.floor(_rng("ties").uniform(-2, 2, (3, 5)))]),  # exact zeros: the kink
}
TIE_CASES = [pytest.param(name, id=f"{name}-ties") for name in _TIES]


def _all_cases() -> dict[str, tuple[str, Sample]]:
    cases = {f"{c.values[0]}-{c.values[1]}": (c.values[0], _case(*c.values)) for c in CASES}
    cases.update({f"{name}-ties": (name, s) for name, s in _TIES.items()})
    return cases


def _jax_case(key: str, name: str, sample: Sample, args: list, vjp: bool) -> tuple:
    """(outputs, VJP of output 0 w.r.t. the float inputs for a seeded cotangent, or None)."""
    f = lambda *a: _as_tuple(run_op_jax(name, a, sample.attrs))
    outs = f(*args)
    if not vjp or OPS[name].vjp is None:
        return outs, None
    wrt = _float_inputs(sample)

    def f0(*floats):
        a = list(args)
        for k, v in zip(wrt, floats, strict=True):
            a[k] = v
        return f(*a)[0]

    out0, pull = jax.vjp(f0, *(args[k] for k in wrt))
    return outs, pull(jnp.asarray(_cotangent(key, TensorType(out0.shape, dtype_of(out0.dtype)))))


def _jax_table(cases: dict[str, tuple[str, Sample]], vjp: bool) -> dict[str, object]:
    """Every case through its jax lowering (and jax.vjp) inside ONE jax.jit: XLA compiles one module instead
    of hundreds (one compile costs ~50 ms on CPU and dominated this file's run time). A case that fails to
    trace keeps its exception, which only that case's test raises."""
    errors: dict[str, Exception] = {}

    def run_all(inputs):
        res = {}
        for key, (name, s) in cases.items():
            try:
                res[key] = _jax_case(key, name, s, inputs[key], vjp)
            except Exception as e:  # noqa: BLE001
                errors[key] = e
        return res

    out = jax.jit(run_all)({key: list(s.inputs) for key, (_, s) in cases.items()})
    table: dict[str, object] = jax.tree.map(np.asarray, out)
    table.update(errors)
    return table


def _result(table: dict[str, object], key: str) -> tuple:
    r = table[key]
    if isinstance(r, Exception):
        raise r
    return r


@pytest.fixture(scope="module")
def jax64() -> dict[str, object]:
    """Outputs and VJPs of every case from the jax lowerings, with float64 enabled in JAX for this only."""
    jx = pytest.importorskip("jax")
    enable = getattr(jx, "enable_x64", None)
    if enable is None:
        from jax.experimental import enable_x64 as enable
    with enable(True):
        return _jax_table(_all_cases(), vjp=True)


@pytest.fixture(scope="module")
def jax32() -> dict[str, object]:
    """Forward outputs of every case in float32, with JAX as most users run it (x64 off)."""
    pytest.importorskip("jax")
    with warnings.catch_warnings():  # int64 results (argmax, iota) come back int32: expected, not news
        warnings.filterwarnings("ignore", "Explicitly requested dtype", UserWarning)
        return _jax_table({k: (name, _to_f32(s)) for k, (name, s) in _all_cases().items()}, vjp=False)


def _check_forward_vs_jax(name: str, s: Sample, ref: tuple, rtol: float, atol: float) -> None:
    _, outs = _eager(name, s.inputs, s.attrs)
    assert len(ref) == len(outs)
    for o, r in zip(outs, ref, strict=True):
        assert o.shape == r.shape and o.dtype.np == r.dtype, f"graphc {o.type} vs jax {r.shape} {r.dtype}"
        if OPS[name].kind != "random":
            np.testing.assert_allclose(o.numpy(), r, rtol=rtol, atol=atol)


def _check_vjp_vs_jax(key: str, name: str, s: Sample, expected: tuple, rtol: float, atol: float) -> None:
    wrt = _float_inputs(s)
    out_type = OPS[name].infer_types([TensorType(a.shape, dtype_of(a.dtype)) for a in s.inputs], s.attrs)[0]
    got = _vjp_graphc(name, s, _cotangent(key, out_type), wrt)
    for k, g, e in zip(wrt, got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"{name}: grad of input {k}")


@pytest.mark.parametrize("name,i", CASES)
def test_forward_matches_jax(jax64, name, i):
    _check_forward_vs_jax(name, _case(name, i), _result(jax64, f"{name}-{i}")[0], rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("name,i", DIFF_CASES)
def test_vjp_matches_jax(jax64, name, i):
    key = f"{name}-{i}"
    _check_vjp_vs_jax(key, name, _case(name, i), _result(jax64, key)[1], rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("name", TIE_CASES)
def test_ties_match_jax(jax64, name):
    """Where several inputs hold the max, graphc picks and routes the gradient as JAX (and torch) do."""
    key, s = f"{name}-ties", _TIES[name]
    outs, grads = _result(jax64, key)
    _check_forward_vs_jax(name, s, outs, rtol=0, atol=1e-12)
    if OPS[name].vjp is not None:
        _check_vjp_vs_jax(key, name, s, grads, rtol=1e-12, atol=1e-12)


def test_max_pool2d_gradient_routes_to_the_first_max():
    """torch's rule: in a window of equal values the first one (row-major) takes the whole gradient, whether
    the winners were recorded by the forward (max_pool2d_with_indices) or found by a bare max_pool2d's VJP."""
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 3, 3] = -1.0
    g = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])

    def grads(g, attrs):
        hw = {"input_hw": (4, 4)}
        _, idx = apply("max_pool2d_with_indices", [gc.Tensor(x)], attrs)
        recorded = apply("max_pool2d_indices_grad", [gc.Tensor(g), idx], {**attrs, **hw}).numpy()
        t = gc.Tensor(x, requires_grad=True)
        (bare,) = gc.autograd.grad(apply("max_pool2d", [t], attrs), [t], grad_outputs=gc.Tensor(g))
        return recorded, bare.numpy()

    want = np.zeros((1, 1, 4, 4))
    want[0, 0, ::2, ::2] = g[0, 0]
    for got in grads(g, {"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0)}):
        np.testing.assert_array_equal(got, want)
    # overlapping windows with padding: padding never wins, every window still routes to its first max
    first = np.zeros((4, 4))
    for i in range(4):
        for j in range(4):
            first[max(i - 1, 0), max(j - 1, 0)] += 1
    for got in grads(np.ones((1, 1, 4, 4)), {"kernel_size": (3, 3), "stride": (1, 1), "padding": (1, 1)}):
        np.testing.assert_array_equal(got[0, 0], first)


# ---- random ops --------------------------------------------------------------------------------------------

def _seed(n: int) -> np.ndarray:
    return np.array(n, dtype=np.int64)


@pytest.mark.parametrize("name", RANDOM_OPS)
@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_random_op_is_a_function_of_its_seed(name, backend):
    for s in _samples(name):
        attrs = {**s.attrs, "dtype": "float32"}  # float32 works with jax's default (x64 off) too
        if backend == "jax":
            pytest.importorskip("jax")
            jitted = jax.jit(lambda seed: LOWERINGS[name](seed, **attrs))  # one compile for the three calls
            run = lambda seed: np.asarray(jitted(seed))
        else:
            run = lambda seed: _eager(name, [seed], attrs)[1][0].numpy()
        a, b, c = run(_seed(7)), run(_seed(7)), run(_seed(8))
        assert a.shape == tuple(attrs["shape"]) and a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
        if name == "rand":
            assert ((a >= 0) & (a < 1)).all()


# ---- float32 --------------------------------------------------------------------------------------------------

def _to_f32(sample: Sample) -> Sample:
    attrs = dict(sample.attrs)
    if attrs.get("dtype") == "float64" and not any(_is_float(a) for a in sample.inputs):
        attrs["dtype"] = "float32"  # factories and random ops: ask for float32 output
    return Sample([a.astype(np.float32) if _is_float(a) else a for a in sample.inputs], attrs)


@pytest.mark.parametrize("name,i", CASES)
def test_float32_forward(name, i):
    s64, s32 = _case(name, i), _to_f32(_case(name, i))
    types = OPS[name].infer_types([TensorType(a.shape, dtype_of(a.dtype)) for a in s32.inputs], s32.attrs)
    raw = _kernel(name, s32.inputs, s32.attrs)
    _, outs = _eager(name, s32.inputs, s32.attrs, grad=OPS[name].vjp is not None)
    _, ref = _eager(name, s64.inputs, s64.attrs)
    for r, o, t, o64 in zip(raw, outs, types, ref, strict=True):
        assert (r.shape, r.dtype) == (t.shape, t.dtype.np), f"float32 kernel output {r.shape} {r.dtype} vs rule {t}"
        assert o.type == t
        if OPS[name].kind != "random":
            np.testing.assert_allclose(o.detach().numpy(), o64.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,i", CASES)
def test_float32_forward_matches_jax_default_mode(jax32, name, i):
    """float32 lowerings under JAX's defaults agree with the numpy kernels."""
    s = _to_f32(_case(name, i))
    for r, o in zip(_kernel(name, s.inputs, s.attrs), _result(jax32, f"{name}-{i}")[0], strict=True):
        assert r.shape == o.shape
        if r.dtype == np.float32:  # (64-bit results come back 32-bit when x64 is off)
            assert o.dtype == r.dtype
        if OPS[name].kind != "random":
            np.testing.assert_allclose(o, r, rtol=1e-5, atol=1e-5)
