"""conv.c's direct convolution (graphc/backends/numpy/conv_c.py) against numpy's im2col kernels.

Its sums are in another order than BLAS's (and use FMA where the CPU has it), so values agree to float32
rounding, not bit for bit; what must hold exactly is the set of positions that are NaN or infinite, that the
thread count never changes a number, and that a program never switches paths: the first convolution waits for
the build."""
from __future__ import annotations

import importlib
import shutil

import numpy as np
import pytest

from graphc.backends.numpy import KERNELS

conv_c = importlib.import_module("graphc.backends.numpy.conv_c")
native = importlib.import_module("graphc.backends.numpy.native")
chunks = importlib.import_module("graphc.backends.numpy.chunks")
lanes = importlib.import_module("graphc.backends.numpy.lanes")

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) on this machine")

# (C, O, kernel, padding, H, W, N): LeNet's two layers, output channels around the register block of 6 and the
# vector of 8, rows shorter and longer than a vector, a 1x1 and a 5x5 kernel, padding on one axis or both
CASES = [
    (1, 6, (3, 3), (0, 0), 32, 32, 8), (6, 16, (3, 3), (0, 0), 15, 15, 8), (3, 5, (3, 3), (1, 1), 9, 11, 3),
    (2, 7, (5, 5), (2, 0), 12, 9, 2), (4, 13, (2, 3), (1, 2), 6, 19, 3), (5, 32, (1, 1), (0, 0), 7, 5, 2),
    (1, 1, (3, 3), (0, 0), 5, 4, 1), (6, 9, (3, 3), (2, 2), 4, 4, 5), (16, 24, (3, 3), (1, 1), 10, 10, 2),
]


def _cnhw(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)


def _three(x, w, g, padding, monkeypatch, c_path: bool):
    """(forward, input gradient, weight gradient) from conv.py's kernels, with conv.c or without."""
    monkeypatch.setattr(conv_c, "MAX_TERMS", 160 if c_path else 0)
    a = {"stride": (1, 1), "padding": padding, "dilation": (1, 1), "groups": 1}
    return (KERNELS["conv2d"](x, w, **a), KERNELS["conv2d_input_grad"](g, w, input_hw=x.shape[2:], **a),
            KERNELS["conv2d_weight_grad"](x, g, kernel_size=w.shape[2:], **a))


def _data(case: int, dtype=np.float32, layout: str = "cnhw"):
    """x, w, g, padding: x and g in memory as (C, N, H, W), the layout graphc's kernels produce, or as numpy's
    (N, C, H, W), which conv.c reads in place as well."""
    c, o, (kh, kw), (ph, pw), h, w, n = CASES[case]
    rng = np.random.default_rng(case)
    lay = _cnhw if layout == "cnhw" else np.ascontiguousarray
    x = lay(rng.standard_normal((n, c, h, w)).astype(dtype))
    wt = rng.standard_normal((o, c, kh, kw)).astype(dtype)
    g = lay(rng.standard_normal((n, o, h + 2 * ph - kh + 1, w + 2 * pw - kw + 1)).astype(dtype))
    return x, wt, g, (ph, pw)


@needs_cc
@pytest.mark.parametrize("layout", ["cnhw", "nchw"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_conv_c_gives_the_im2col_kernels_values(case, layout, monkeypatch):
    x, w, g, padding = _data(case, layout=layout)
    c_out = _three(x, w, g, padding, monkeypatch, c_path=True)
    assert conv_c._lib, "conv.c should have been built and used"
    want = _three(x, w, g, padding, monkeypatch, c_path=False)
    for got, ref in zip(c_out, want):
        assert got.shape == ref.shape and got.dtype == ref.dtype == np.float32
        scale = float(np.abs(ref).max()) or 1.0
        np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-6 * scale)
    fwd, igrad = c_out[:2]
    assert fwd.transpose(1, 0, 2, 3).flags.c_contiguous and igrad.transpose(1, 0, 2, 3).flags.c_contiguous


@needs_cc
@pytest.mark.parametrize("layout", ["cnhw", "nchw"])
@pytest.mark.parametrize("case", [0, 1, 3])
def test_conv_c_puts_nan_and_inf_where_numpy_does(case, layout, monkeypatch):
    """An infinite input next to a row's end or a plane's end: the vector lanes the forward reads past a row (and
    drops) must not turn it into NaN where numpy's sums stay finite, nor may the weight gradient's channel lanes."""
    x, w, g, padding = _data(case, layout=layout)
    xc = x.transpose(1, 0, 2, 3)
    xc[0, 0, 1, 0] = np.inf
    xc[-1, -1, -1, -1] = -np.inf
    xc[0, -1, 2, -1] = np.nan
    gc = g.transpose(1, 0, 2, 3)
    gc[0, 0, 0, -1] = np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        c_out = _three(x, w, g, padding, monkeypatch, c_path=True)
        want = _three(x, w, g, padding, monkeypatch, c_path=False)
    for got, ref in zip(c_out, want):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_array_equal(np.isposinf(got), np.isposinf(ref))
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(ref))
        fin = np.isfinite(ref)
        np.testing.assert_allclose(got[fin], ref[fin], rtol=2e-5, atol=2e-6 * float(np.abs(ref[fin]).max()))


@needs_cc
@pytest.mark.parametrize("case", [0, 1, 8])
def test_the_thread_count_never_changes_a_number(case, monkeypatch):
    x, w, g, padding = _data(case)
    monkeypatch.setattr(conv_c, "MIN_SPLIT", 1)  # split the forward's images whenever two threads are allowed
    runs = []
    assert lanes.wait()  # two threads really take parts
    for threads in (1, 2):
        monkeypatch.setitem(chunks.state, "threads", threads)
        runs.append(_three(x, w, g, padding, monkeypatch, c_path=True))
    for one, two in zip(*runs):
        np.testing.assert_array_equal(one, two)


@needs_cc
def test_the_weight_gradient_goes_into_out(monkeypatch):
    x, w, g, padding = _data(1)
    monkeypatch.setattr(conv_c, "MAX_TERMS", 160)
    out = np.full(w.shape, 7.0, dtype=np.float32)
    a = {"stride": (1, 1), "padding": padding, "dilation": (1, 1), "groups": 1}
    got = KERNELS["conv2d_weight_grad"](x, g, kernel_size=w.shape[2:], out=out, **a)
    assert got is out
    want = KERNELS["conv2d_weight_grad"](x, g, kernel_size=w.shape[2:], **a)
    np.testing.assert_array_equal(out, want)
    strided = np.full(w.shape, 7.0, dtype=np.float32, order="F")  # not C-contiguous: filled by a copy
    assert KERNELS["conv2d_weight_grad"](x, g, kernel_size=w.shape[2:], out=strided, **a) is strided
    np.testing.assert_array_equal(strided, want)


def test_other_convolutions_keep_the_numpy_kernels():
    f32 = (np.float32, np.float32)
    assert conv_c.applies(f32, (3, 3), (1, 1), (1, 1), 1, (1, 1), 54, 16)
    assert not conv_c.applies((np.float64, np.float64), (3, 3), (1, 1), (1, 1), 1, (1, 1), 54, 16)
    assert not conv_c.applies(f32, (3, 3), (2, 2), (1, 1), 1, (1, 1), 54, 16)  # stride
    assert not conv_c.applies(f32, (3, 3), (1, 1), (2, 2), 1, (1, 1), 54, 16)  # dilation
    assert not conv_c.applies(f32, (3, 3), (1, 1), (1, 1), 2, (1, 1), 54, 16)  # groups
    assert not conv_c.applies(f32, (3, 3), (1, 1), (1, 1), 1, (3, 3), 54, 16)  # padding beyond the kernel
    assert not conv_c.applies(f32, (3, 3), (1, 1), (1, 1), 1, (1, 1), 576, 64)  # ResNet's: BLAS is busy there
    assert not conv_c.applies(f32, (3, 3), (1, 1), (1, 1), 1, (1, 1), 54, 33)


@needs_cc
def test_the_first_convolution_waits_for_the_build(tmp_path, monkeypatch):
    """With an empty cache the first call builds conv.c and uses it: a program never starts on numpy's sums and
    switches when the build ends."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_builds", {})
    monkeypatch.setattr(conv_c, "_lib", [])
    x, w, g, padding = _data(0)
    first = conv_c.conv2d(x, w, padding)
    assert first is not None and conv_c._lib
    assert list((tmp_path / "cache").glob("*.so"))
    np.testing.assert_array_equal(first, conv_c.conv2d(x, w, padding))


def test_without_a_compiler_the_numpy_kernels_run(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", "graphc-no-such-compiler")
    monkeypatch.setattr(native, "_builds", {})
    monkeypatch.setattr(conv_c, "_lib", [])
    x, w, g, padding = _data(1)
    assert conv_c.conv2d(x, w, padding) is None
    a = {"stride": (1, 1), "padding": padding, "dilation": (1, 1), "groups": 1}
    got = KERNELS["conv2d"](x, w, **a)
    monkeypatch.setattr(conv_c, "MAX_TERMS", 0)
    np.testing.assert_array_equal(got, KERNELS["conv2d"](x, w, **a))  # exactly the im2col kernel's numbers
    monkeypatch.setenv("CC", "cc")
    monkeypatch.setenv("GRAPHC_NATIVE", "0")
    monkeypatch.setattr(native, "_builds", {})
    assert conv_c.conv2d(x, w, padding) is None


@needs_cc
def test_conv_c_reads_nothing_past_its_arrays(monkeypatch):
    """The gradient ends at the last readable byte (the next page unmapped): the weight gradient's transposition,
    in blocks of 8 positions, must not read past its last plane (a crash otherwise)."""
    from guarded import guarded

    for case, layout in [(0, "cnhw"), (1, "cnhw"), (3, "cnhw"), (0, "nchw"), (1, "nchw")]:
        # 6, 16 and 7 output channels, planes of 30x30, 13x13 and 12x5 positions; the gradient's last plane is its
        # last channel's (CNHW) or its last image's (NCHW)
        x, w, g, padding = _data(case, layout=layout)
        monkeypatch.setattr(conv_c, "MAX_TERMS", 160)
        if layout == "cnhw":
            gg = guarded(np.ascontiguousarray(g.transpose(1, 0, 2, 3))).transpose(1, 0, 2, 3)
        else:
            gg = guarded(np.ascontiguousarray(g))
        got = conv_c.weight_grad(x, gg, w.shape[2:], padding, None)
        monkeypatch.setattr(conv_c, "MAX_TERMS", 0)
        a = {"stride": (1, 1), "padding": padding, "dilation": (1, 1), "groups": 1}
        want = KERNELS["conv2d_weight_grad"](x, g, kernel_size=w.shape[2:], **a)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6 * float(np.abs(want).max()))
