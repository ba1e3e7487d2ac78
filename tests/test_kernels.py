"""The fast numpy kernels against straightforward references: convolution and its gradients, pooling,
where and the out= variants, in both memory layouts the backend produces (NCHW from users, CNHW from its
own convolutions), with ties, NaN and infinities; and against PyTorch when it is installed."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from graphc.backends.numpy import KERNELS
from graphc.backends.numpy import conv as numpy_conv
from graphc.backends.numpy.conv import _clip, _input_grad_flat
from graphc.backends.numpy.elementwise import clamp, relu, rsqrt, where

try:
    from graphc.backends.jax import run_op_jax
    from graphc.backends.jax.program import x64_scope
except ImportError:  # the jax comparisons skip
    run_op_jax = None


def _jax_pool(x, **attrs):
    """The jax lowering's (maxima, indices), run as in a graph with int64 indices (jax's 64-bit mode on)."""
    with x64_scope(True):
        out, idx = run_op_jax("max_pool2d_with_indices", [x], attrs)
        alone = run_op_jax("max_pool2d", [x], attrs)
        return np.asarray(out), np.asarray(idx), np.asarray(alone)

# ---- references: loops over output positions in float64, the definitions themselves ------------------


def ref_conv2d(x, w, stride, padding, dilation, groups):
    x, w = x.astype(np.float64), w.astype(np.float64)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    out = np.zeros((n, o, ho, wo))
    og = o // groups
    for i in range(ho):
        for j in range(wo):
            for gi in range(groups):
                patch = xp[:, gi * cg:(gi + 1) * cg,
                           i * stride[0]:i * stride[0] + dilation[0] * (kh - 1) + 1:dilation[0],
                           j * stride[1]:j * stride[1] + dilation[1] * (kw - 1) + 1:dilation[1]]
                out[:, gi * og:(gi + 1) * og, i, j] = np.einsum("nckl,ockl->no", patch, w[gi * og:(gi + 1) * og])
    return out


def ref_conv_grads(x, w, g, stride, padding, dilation, groups):
    """Input and weight gradients of ref_conv2d by its linearity: d<conv(x, w), g> along basis vectors."""
    x, w, g = x.astype(np.float64), w.astype(np.float64), g.astype(np.float64)
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for idx in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[idx] = 1
        dx[idx] = (ref_conv2d(e, w, stride, padding, dilation, groups) * g).sum()
    for idx in np.ndindex(*w.shape):
        e = np.zeros_like(w)
        e[idx] = 1
        dw[idx] = (ref_conv2d(x, e, stride, padding, dilation, groups) * g).sum()
    return dx, dw


def ref_max_pool(x, k, s, p):
    n, c, h, w = x.shape
    ho, wo = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
    out = np.full((n, c, ho, wo), -np.inf)
    arg = np.zeros((n, c, ho, wo, 2), dtype=int)
    for a, b in np.ndindex(ho, wo):
        for i, j in itertools.product(range(k[0]), range(k[1])):  # row-major: the first maximum wins
            r, q = a * s[0] + i - p[0], b * s[1] + j - p[1]
            if 0 <= r < h and 0 <= q < w:
                better = x[:, :, r, q] > out[:, :, a, b]
                out[:, :, a, b] = np.where(better, x[:, :, r, q], out[:, :, a, b])
                arg[:, :, a, b] = np.where(better[..., None], [r, q], arg[:, :, a, b])
    return out, arg


def cnhw(a):
    """The same values in (C, N, H, W) memory order, as the backend's own convolutions return them."""
    return np.ascontiguousarray(a.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)


CONVS = [  # x shape, w shape, stride, padding, dilation, groups
    ((2, 3, 6, 5), (4, 3, 3, 3), (1, 1), (0, 0), (1, 1), 1),
    ((2, 4, 7, 7), (6, 4, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((1, 4, 7, 7), (6, 2, 3, 2), (2, 1), (1, 2), (1, 2), 2),
    ((3, 5, 5, 6), (5, 5, 1, 1), (1, 1), (0, 0), (1, 1), 1),
    ((3, 5, 5, 6), (5, 5, 1, 1), (2, 2), (0, 0), (1, 1), 1),
    ((2, 3, 11, 9), (4, 3, 7, 7), (2, 2), (3, 3), (1, 1), 1),
    ((2, 6, 5, 5), (6, 2, 3, 3), (1, 1), (1, 1), (1, 1), 3),
    ((1, 8, 2, 2), (8, 8, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # deep-layer shape: mostly padding
    ((1, 64, 2, 2), (128, 64, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # batch-1 layer4: a 4-column GEMM
    ((4, 2, 9, 9), (3, 2, 3, 3), (1, 1), (2, 2), (2, 2), 1),
    ((20, 2, 12, 12), (3, 2, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # large enough for the flipped-kernel path
    ((20, 3, 12, 12), (8, 3, 3, 3), (1, 1), (0, 0), (1, 1), 1),  # more output channels: col2im
    ((2, 3, 6, 5), (4, 3, 3, 1), (1, 1), (1, 0), (1, 1), 1),  # same width, no column padding
    ((2, 3, 5, 8), (4, 3, 2, 5), (1, 1), (0, 2), (1, 1), 1),  # same width, wide kernel, no row padding
]


@pytest.mark.parametrize("case", range(len(CONVS)))
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
def test_conv2d_and_gradients_match_the_reference(case, layout):
    xs, ws, stride, padding, dilation, groups = CONVS[case]
    rng = np.random.default_rng(case)
    lay = cnhw if layout == "cnhw" else (lambda a: a)
    x, w = lay(rng.standard_normal(xs)), rng.standard_normal(ws)
    a = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    y = KERNELS["conv2d"](x, w, **a)
    want = ref_conv2d(x, w, stride, padding, dilation, groups)
    np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-10)
    g = lay(rng.standard_normal(want.shape))
    dx = KERNELS["conv2d_input_grad"](g, w, input_hw=xs[2:], **a)
    dw = KERNELS["conv2d_weight_grad"](x, g, kernel_size=ws[2:], **a)
    if np.prod(xs) + np.prod(ws) <= 600:  # the basis-vector reference is quadratic: small cases only
        rdx, rdw = ref_conv_grads(x, w, g, stride, padding, dilation, groups)
        np.testing.assert_allclose(dx, rdx, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(dw, rdw, rtol=1e-10, atol=1e-10)
    else:  # adjointness: <conv(x, w), g> = <x, dx> = <w, dw>
        inner = float((want * g).sum())
        assert float((x * dx).sum()) == pytest.approx(inner, rel=1e-9)
        assert float((w * dw).sum()) == pytest.approx(inner, rel=1e-9)
    assert dx.shape == xs and dw.shape == ws


@pytest.mark.parametrize("k,padding,dilation", [((3, 3), (1, 1), (1, 1)), ((3, 5), (0, 2), (1, 1)),
                                                ((3, 3), (2, 2), (2, 2)), ((2, 1), (3, 0), (1, 1)),
                                                ((1, 3), (0, 3), (1, 3))])
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
def test_same_width_im2col_equals_the_row_by_row_copy(k, padding, dilation, layout, monkeypatch):
    """The run-copy im2col (stride 1, output as wide as the input) against the generic strided copy, bit for bit,
    with NaN and inf next to the padding (a wrapped position must come out 0, not a neighbour's value)."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 4, 6, 7)).astype(np.float32)
    x[:, :, :, 0], x[:, :, :, -1], x[:, :, 0, 1] = np.nan, np.inf, -np.inf
    x = cnhw(x) if layout == "cnhw" else x
    ho = 6 + 2 * padding[0] - dilation[0] * (k[0] - 1)
    assert 7 + 2 * padding[1] - dilation[1] * (k[1] - 1) == 7  # the case this path takes
    got = numpy_conv._cols(x, k, (1, 1), padding, dilation, (ho, 7))
    monkeypatch.setattr(numpy_conv, "ROW_RUNS", False)
    want = numpy_conv._cols(x, k, (1, 1), padding, dilation, (ho, 7))
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("padding,dilation", [((0, 0), (1, 1)), ((1, 2), (2, 1)), ((2, 0), (1, 3))])
def test_flat_col2im_input_grad_matches_the_reference(padding, dilation):
    """The contiguous-shift col2im (taken for thin stride-1 gradients on large images) on small cases,
    called directly so that padding and dilation are covered whatever the dispatch thresholds pick."""
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 2, 6, 7)), rng.standard_normal((3, 2, 3, 3))
    a = {"stride": (1, 1), "padding": padding, "dilation": dilation, "groups": 1}
    y = ref_conv2d(x, w, **a)
    g = rng.standard_normal(y.shape)
    rdx, _ = ref_conv_grads(x, w, g, **a)
    for lay in (lambda t: t, cnhw):
        dx = _input_grad_flat(lay(g), w, (6, 7), padding, dilation)
        np.testing.assert_allclose(dx, rdx, rtol=1e-10, atol=1e-10)
        assert dx.transpose(1, 0, 2, 3).flags.c_contiguous


@pytest.mark.parametrize("case", [c for c in range(len(CONVS)) if CONVS[c][5] == 1])
@pytest.mark.parametrize("short", [0, 10**9])
def test_input_grad_product_in_either_orientation_matches_the_reference(case, short, monkeypatch):
    """The col2im input gradient's GEMM runs transposed for short products (few output positions); force each
    orientation on every ungrouped case (strides, padding, dilation, pointwise) so neither hides behind a threshold."""
    xs, ws, stride, padding, dilation, groups = CONVS[case]
    monkeypatch.setattr(numpy_conv, "_SHORT_PRODUCT", short)
    rng = np.random.default_rng(100 + case)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    a = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    y = ref_conv2d(x, w, **a)
    g = rng.standard_normal(y.shape)
    for lay in (lambda t: t, cnhw):
        dx = KERNELS["conv2d_input_grad"](lay(g), w, input_hw=xs[2:], **a)
        assert dx.shape == xs
        if np.prod(xs) + np.prod(ws) <= 600:
            np.testing.assert_allclose(dx, ref_conv_grads(x, w, g, **a)[0], rtol=1e-10, atol=1e-10)
        else:
            assert float((x * dx).sum()) == pytest.approx(float((y * g).sum()), rel=1e-9)


def test_kernels_keep_float32_and_own_their_gradients():
    rng = np.random.default_rng(0)
    x = cnhw(rng.standard_normal((4, 8, 10, 10)).astype(np.float32))
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    a = {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1}
    y = KERNELS["conv2d"](x, w, **a)
    assert y.dtype == np.float32 and y.transpose(1, 0, 2, 3).flags.c_contiguous  # CNHW memory
    dw = KERNELS["conv2d_weight_grad"](x, y, kernel_size=(3, 3), **a)
    assert dw.dtype == np.float32 and dw.base is None  # becomes .grad without a copy
    dx = KERNELS["conv2d_input_grad"](y, w, input_hw=(10, 10), **a)
    assert dx.dtype == np.float32 and dx.transpose(1, 0, 2, 3).flags.c_contiguous
    p = {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1)}
    for op, args in [("max_pool2d", (x,)), ("avg_pool2d", (x,))]:
        assert KERNELS[op](*args, **p).dtype == np.float32
    g, idx = KERNELS["max_pool2d_with_indices"](x, **p)
    assert g.dtype == np.float32 and idx.dtype == np.int64
    assert KERNELS["max_pool2d_indices_grad"](g, idx, input_hw=(10, 10), **p).dtype == np.float32
    assert KERNELS["avg_pool2d_grad"](g, input_hw=(10, 10), **p).dtype == np.float32


POOLS = [((2, 3, 6, 6), (2, 2), (2, 2), (0, 0)), ((1, 2, 5, 4), (3, 3), (2, 1), (1, 1)),
         ((2, 4, 9, 9), (3, 3), (2, 2), (1, 1)), ((2, 3, 8, 8), (8, 8), (8, 8), (0, 0)),
         ((3, 2, 7, 5), (2, 3), (1, 2), (1, 1))]


@pytest.mark.parametrize("case", range(len(POOLS)))
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
def test_pooling_matches_the_reference(case, ties, layout):
    xs, k, s, p = POOLS[case]
    rng = np.random.default_rng(case)
    lay = cnhw if layout == "cnhw" else (lambda a: a)
    raw = np.floor(rng.uniform(0, 3, xs)) if ties else rng.standard_normal(xs)  # ties: integer values
    x = lay(raw.astype(np.float32))
    a = {"kernel_size": k, "stride": s, "padding": p}
    want, arg = ref_max_pool(raw, k, s, p)
    np.testing.assert_array_equal(KERNELS["max_pool2d"](x, **a), want.astype(np.float32))
    g = lay(rng.standard_normal(want.shape).astype(np.float32))
    dx = np.zeros(xs)
    for idx in np.ndindex(*want.shape):
        r, q = arg[idx]
        dx[idx[0], idx[1], r, q] += g[idx]
    out, idx = KERNELS["max_pool2d_with_indices"](x, **a)
    np.testing.assert_array_equal(out, want.astype(np.float32))
    np.testing.assert_array_equal(idx, arg[..., 0] * xs[3] + arg[..., 1])
    assert idx.dtype == np.int64
    np.testing.assert_allclose(KERNELS["max_pool2d_indices_grad"](g, idx, input_hw=xs[2:], **a), dx,
                               rtol=1e-6, atol=1e-6)
    # average pooling (count_include_pad): a convolution with a constant kernel per channel
    c = xs[1]
    box = np.zeros((c, c, *k))
    for i in range(c):
        box[i, i] = 1.0 / (k[0] * k[1])
    conv = {"stride": s, "padding": p, "dilation": (1, 1), "groups": 1}
    np.testing.assert_allclose(KERNELS["avg_pool2d"](x, **a), ref_conv2d(raw, box, **conv), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(KERNELS["avg_pool2d_grad"](g, input_hw=xs[2:], **a),
                               KERNELS["conv2d_input_grad"](g.astype(np.float64), box, input_hw=xs[2:], **conv),
                               rtol=1e-5, atol=1e-6)


def test_clip_gives_exactly_the_in_bounds_positions():
    for i, s, p, d, n in itertools.product(range(5), range(1, 4), range(4), range(1, 3), range(1, 9)):
        for n_out in (1, 3, 5, max(1, (n + 2 * p - d * 4 - 1) // s + 1)):
            rows, ins = _clip(i, s, p, d, n, n_out)
            want = [r for r in range(n_out) if 0 <= r * s + i * d - p < n]
            assert list(range(n_out))[rows] == want
            assert (list(range(n))[ins] if want else []) == [r * s + i * d - p for r in want]


SPECIAL = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1.5, -2.0, 3.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_where_selects_bits_exactly(dtype):
    rng = np.random.default_rng(0)
    a = rng.choice(SPECIAL, (6, 8)).astype(dtype)
    b = rng.choice(SPECIAL, (8,)).astype(dtype)
    c = rng.random((6, 1)) > 0.5
    for aa, bb in [(a, b), (a, np.asarray(dtype(0))), (a, np.asarray(dtype(-0.0))), (np.asarray(dtype(0)), b),
                   (a, np.asarray(dtype(2.5)))]:
        got, want = where(c, aa, bb), np.where(c, aa, bb)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    for target in ("a", "b", "new"):  # in place into either operand, or a fresh buffer
        aa, bb = a.copy(), np.broadcast_to(b, a.shape).copy()
        want = np.where(c, aa, bb)
        out = {"a": aa, "b": bb, "new": np.empty_like(aa)}[target]
        assert where(c, aa, bb, out=out) is out
        np.testing.assert_array_equal(out.view(np.uint8), want.view(np.uint8))
    np.testing.assert_array_equal(where(np.array([True, False]), np.array([1, 2]), np.array([3, 4])), [1, 4])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["c", "cnhw", "strided", "small"])
def test_relu_gives_the_bits_of_maximum_with_zero(dtype, layout, monkeypatch):
    """relu reads an array of zeros on dense arrays (numpy's maximum against a scalar is 4x slower): the same
    bits as np.maximum(x, 0) for NaN, inf and -0.0, in x's memory order, in place or not, over several runs
    of the zero array."""
    from graphc.backends.numpy import elementwise

    monkeypatch.setattr(elementwise, "_ZERO_RUN", 1000)  # several runs of zeros per call
    monkeypatch.setattr(elementwise, "_zeros", {})
    rng = np.random.default_rng(1)
    shape = (2, 3, 4, 5) if layout == "small" else (4, 6, 20, 18)
    base = rng.choice(SPECIAL, shape).astype(dtype)
    x = {"c": base, "cnhw": cnhw(base), "strided": base[:, :, ::2], "small": base}[layout]
    want = np.maximum(x, dtype(0))
    got = relu(x)
    assert got.dtype == want.dtype and got.strides == want.strides
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    buf = x.copy(order="K")
    assert relu(buf, out=buf) is buf
    np.testing.assert_array_equal(buf.view(np.uint8), want.view(np.uint8))
    if layout != "small" and layout != "strided":
        assert elementwise._zeros[np.dtype(dtype)].size == 1000  # the array path ran, not the scalar one
        assert not elementwise._zeros[np.dtype(dtype)].any()


def test_out_variants_equal_the_allocating_kernels():
    rng = np.random.default_rng(0)
    x = rng.choice(SPECIAL, (5, 7)).astype(np.float32)
    pos = np.abs(rng.standard_normal((5, 7))).astype(np.float32) + 0.1
    for fn, arg, kw in [(relu, x, {}), (rsqrt, pos, {}), (clamp, x, {"min": -1.0, "max": 2.0}),
                        (KERNELS["sigmoid"], x, {})]:
        want = fn(arg, **kw)
        buf = arg.copy()
        got = fn(buf, out=buf, **kw)
        assert got is buf and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert isinstance(rsqrt(np.float32(4.0)), np.floating) and rsqrt(np.float32(4.0)) == 0.5


@pytest.mark.parametrize("a_shape,b_shape", [((7, 1), (1, 5)), ((3, 7, 1), (1, 5)), ((2, 1, 4, 1), (3, 1, 6)),
                                             ((7, 2), (2, 5))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.bool_])
def test_matmul_over_one_term_is_the_outer_product(a_shape, b_shape, dtype):
    """matmul with a contracted size of 1 runs as a broadcast multiply: same values (NaN and inf included),
    dtype and batch broadcasting as np.matmul, into out= as well."""
    rng = np.random.default_rng(5)
    values = SPECIAL if np.issubdtype(dtype, np.floating) else np.arange(-3, 4)
    a, b = rng.choice(values, a_shape).astype(dtype), rng.choice(values, b_shape).astype(dtype)
    with np.errstate(all="ignore"):
        want = np.matmul(a, b)
        got = KERNELS["matmul"](a, b)
        out = np.empty_like(want)
        into = KERNELS["matmul"](a, b, out=out)
    assert got.dtype == want.dtype and got.shape == want.shape and into is out
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(out, want)


@pytest.mark.torch
@pytest.mark.parametrize("case", range(len(CONVS)))
def test_conv_kernels_match_torch(case):
    torch = pytest.importorskip("torch")
    xs, ws, stride, padding, dilation, groups = CONVS[case]
    rng = np.random.default_rng(case)
    x, w = cnhw(rng.standard_normal(xs).astype(np.float32)), rng.standard_normal(ws).astype(np.float32)
    tx = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, None, stride, padding, dilation, groups)
    g = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.tensor(g))
    a = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    np.testing.assert_allclose(KERNELS["conv2d"](x, w, **a), ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(KERNELS["conv2d_input_grad"](cnhw(g), w, input_hw=xs[2:], **a), tx.grad.numpy(),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(KERNELS["conv2d_weight_grad"](x, cnhw(g), kernel_size=ws[2:], **a), tw.grad.numpy(),
                               rtol=1e-4, atol=1e-3)


@pytest.mark.torch
@pytest.mark.parametrize("case", range(len(POOLS)))
def test_max_pool_with_ties_matches_torch(case):
    torch = pytest.importorskip("torch")
    xs, k, s, p = POOLS[case]
    rng = np.random.default_rng(case)
    x = np.floor(rng.uniform(0, 3, xs)).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.max_pool2d(tx, k, s, p)
    g = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.tensor(g))
    a = {"kernel_size": k, "stride": s, "padding": p}
    np.testing.assert_array_equal(KERNELS["max_pool2d"](cnhw(x), **a), ty.detach().numpy())
    _, ti = torch.nn.functional.max_pool2d(torch.tensor(x), k, s, p, return_indices=True)
    out, idx = KERNELS["max_pool2d_with_indices"](cnhw(x), **a)
    np.testing.assert_array_equal(out, ty.detach().numpy())
    np.testing.assert_array_equal(idx, ti.numpy())
    np.testing.assert_allclose(KERNELS["max_pool2d_indices_grad"](cnhw(g), idx, input_hw=xs[2:], **a),
                               tx.grad.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.torch
def test_max_pool_indices_match_torch_on_windows_of_minus_infinity():
    """A window whose in-image inputs are all -inf: torch names its first in-image element, not padding."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6)).astype(np.float32)
    x[:, :, :3, :3] = -np.inf
    x[1, 2] = -np.inf
    for k, s, p in [((3, 3), (2, 2), (1, 1)), ((2, 2), (2, 2), (0, 0)), ((3, 2), (1, 2), (1, 1))]:
        to, ti = torch.nn.functional.max_pool2d(torch.tensor(x), k, s, p, return_indices=True)
        out, idx = KERNELS["max_pool2d_with_indices"](x, kernel_size=k, stride=s, padding=p)
        np.testing.assert_array_equal(out, to.numpy())
        np.testing.assert_array_equal(idx, ti.numpy())
        if run_op_jax is not None:  # the jax lowering makes the same choice
            jo, ji, _ = _jax_pool(x, kernel_size=k, stride=s, padding=p)
            np.testing.assert_array_equal(jo, to.numpy())
            np.testing.assert_array_equal(ji, ti.numpy())


@pytest.mark.torch
def test_max_pool_indices_match_torch_on_nan():
    """torch's CPU kernel moves the index to every NaN a window holds (its last one) and not past it; the maxima
    are NaN there. Equal values keep the first index. (XLA's own max-reductions on CPU may drop a NaN.)"""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    for k, s, p in [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((3, 2), (1, 2), (1, 1)),
                    ((1, 1), (1, 1), (0, 0))]:
        x = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
        x[rng.random(x.shape) < 0.15] = np.nan
        x[rng.random(x.shape) < 0.1] = 1.0  # ties
        to, ti = torch.nn.functional.max_pool2d(torch.tensor(x), k, s, p, return_indices=True)
        out, idx = KERNELS["max_pool2d_with_indices"](x, kernel_size=k, stride=s, padding=p)
        assert np.isnan(out).any()
        np.testing.assert_array_equal(out, to.numpy())
        np.testing.assert_array_equal(idx, ti.numpy())
        if run_op_jax is not None:  # tiling windows and the general path of the jax lowering alike
            jo, ji, alone = _jax_pool(x, kernel_size=k, stride=s, padding=p)
            np.testing.assert_array_equal(jo, to.numpy())
            np.testing.assert_array_equal(ji, ti.numpy())
            np.testing.assert_array_equal(alone, to.numpy())


class _FakeBlas:
    def __init__(self):
        self.num_threads = 2
        self.history = []

    def set_num_threads(self, n):
        self.num_threads = n
        self.history.append(n)


def test_blas_thread_policy_follows_measurements(monkeypatch):
    """The adaptive policy times its calls with all threads and with one, keeps the faster, re-checks the
    other now and then, restores the thread count after every call and respects an outer limit."""
    from graphc.backends.numpy import threads

    lib = _FakeBlas()
    slow_with = {"value": 2}  # which thread count is slow right now
    clock = {"t": 0.0}
    monkeypatch.setattr(threads.time, "perf_counter", lambda: clock["t"])

    def step():
        clock["t"] += 0.05 if lib.num_threads == slow_with["value"] else 0.01
        return lib.num_threads

    run = threads.AdaptiveThreads([lib]).wrap(step)
    used = [run() for _ in range(40)]
    assert lib.num_threads == 2  # restored after every call
    assert used[:4] == [2, 1, 2, 1]  # warm-up alternates
    assert used[10:].count(1) > 0.8 * len(used[10:])  # one thread was faster: mostly one thread
    slow_with["value"] = 1  # the machine got quiet: two threads are faster now
    used = [run() for _ in range(400)]
    assert used[-100:].count(2) > 90
    lib.num_threads = 1  # an enclosing threadpool_limits(1): nothing to choose
    n = len(lib.history)
    assert run() == 1 and len(lib.history) == n
    lib.num_threads = 2
    fast = threads.AdaptiveThreads([lib])
    quick = fast.wrap(lambda: clock.__setitem__("t", clock["t"] + 1e-5))
    for _ in range(6):
        quick()
    assert fast.off  # steps under a millisecond are not worth adapting


def test_blas_thread_policy_does_not_flip_on_a_small_difference(monkeypatch):
    """Step times vary by more than a few percent: the other setting takes over only when it is MARGIN faster."""
    from graphc.backends.numpy import threads

    lib = _FakeBlas()
    clock = {"t": 0.0}
    cost = {2: 0.0100, 1: 0.0098}  # one thread 2% faster: not enough to leave two
    monkeypatch.setattr(threads.time, "perf_counter", lambda: clock["t"])

    def step():
        clock["t"] += cost[lib.num_threads]
        return lib.num_threads

    policy = threads.AdaptiveThreads([lib])
    run = policy.wrap(step)
    choices = []
    for _ in range(300):
        run()
        choices.append(policy.one)
    assert not any(choices[4:])  # two threads all along (the other is still probed, every 8 calls)
    cost[1] = 0.0080  # now 20% faster: one thread takes over
    used = [run() for _ in range(100)]
    assert policy.one and used[-50:].count(1) > 40


def test_blas_threads_can_be_pinned(monkeypatch):
    from graphc.backends.numpy import threads

    lib = _FakeBlas()
    monkeypatch.setattr(threads, "_blas", lambda: [lib])
    monkeypatch.setenv("GRAPHC_BLAS_THREADS", "1")
    assert threads.with_blas_policy(lambda: lib.num_threads)() == 1 and lib.num_threads == 2
    monkeypatch.setenv("GRAPHC_BLAS_THREADS", "off")
    f = lambda: 0  # noqa: E731
    assert threads.with_blas_policy(f) is f


def test_where_with_zero_dimensional_operands():
    """0-d condition and branches (fuzz program 5330): the bit-select path must not hand numpy a scalar as out=."""
    from graphc.backends.numpy.registry import KERNELS

    where = KERNELS["where"]
    for c in (np.array(True), np.array(False)):
        for a, b in ((np.array(2.0, np.float32), np.array(0.0, np.float32)),
                     (np.array(0.0, np.float32), np.array(3.0, np.float32)),
                     (np.array(2.0, np.float32), np.array(3.0, np.float32))):
            np.testing.assert_array_equal(where(c, a, b), np.where(c, a, b))
