"""LeNet and ResNet-18 against an independent JAX implementation (the oracle when torch is absent).

The reference models below are written directly in jax.lax from the published architectures,
share nothing with graphc but the weights (copied by state_dict name), and are differentiated by
jax.grad. Everything runs in float64, so agreement is to rounding: outputs, every parameter
gradient, and BatchNorm running statistics after a training-mode forward.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
import graphc.nn.functional as F

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
lax = jax.lax
HI = lax.Precision.HIGHEST
EPS, MOMENTUM = 1e-5, 0.1


# ruff: noqa: N803, N806  (P and S: parameter and statistics dicts, as in the papers' notation)


def _x64():
    return getattr(jax, "enable_x64", None)(True) if hasattr(jax, "enable_x64") else \
        __import__("jax.experimental", fromlist=["enable_x64"]).enable_x64()


def conv(x, w, b=None, stride=1, pad=0):
    y = lax.conv_general_dilated(x, w, (stride, stride), [(pad, pad), (pad, pad)],
                                 dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=HI)
    return y if b is None else y + b[None, :, None, None]


def max_pool(x, k, s, p=0):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, k, k), (1, 1, s, s), [(0, 0), (0, 0), (p, p), (p, p)])


def linear(x, w, b):
    return jnp.matmul(x, w.T, precision=HI) + b


def batch_norm(x, P, S, name, new_stats):
    """Training mode: batch statistics; running stats updated as torch does (unbiased variance)."""
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))
    n = x.size // x.shape[1]
    new_stats[name + ".running_mean"] = (1 - MOMENTUM) * S[name + ".running_mean"] + MOMENTUM * mean
    new_stats[name + ".running_var"] = (1 - MOMENTUM) * S[name + ".running_var"] + MOMENTUM * var * n / (n - 1)
    xhat = (x - mean[None, :, None, None]) / jnp.sqrt(var[None, :, None, None] + EPS)
    return xhat * P[name + ".weight"][None, :, None, None] + P[name + ".bias"][None, :, None, None]


def lenet(P, x):
    relu = jax.nn.relu
    x = max_pool(relu(conv(x, P["conv1.weight"], P["conv1.bias"])), 2, 2)
    x = max_pool(relu(conv(x, P["conv2.weight"], P["conv2.bias"])), 2, 2)
    x = x.reshape(x.shape[0], -1)
    x = relu(linear(x, P["fc1.weight"], P["fc1.bias"]))
    x = relu(linear(x, P["fc2.weight"], P["fc2.bias"]))
    return linear(x, P["fc3.weight"], P["fc3.bias"])


def resnet18(P, S, x):
    stats: dict = {}
    relu = jax.nn.relu
    x = relu(batch_norm(conv(x, P["conv1.weight"], stride=2, pad=3), P, S, "bn1", stats))
    x = max_pool(x, 3, 2, 1)
    for li, stride in zip((1, 2, 3, 4), (1, 2, 2, 2)):
        for bi in range(2):
            pre = f"layer{li}.{bi}."
            s = stride if bi == 0 else 1
            out = relu(batch_norm(conv(x, P[pre + "conv1.weight"], stride=s, pad=1), P, S, pre + "bn1", stats))
            out = batch_norm(conv(out, P[pre + "conv2.weight"], pad=1), P, S, pre + "bn2", stats)
            if pre + "downsample.0.weight" in P:
                x = batch_norm(conv(x, P[pre + "downsample.0.weight"], stride=s), P, S, pre + "downsample.1", stats)
            x = relu(out + x)
    x = x.mean(axis=(2, 3))
    return linear(x, P["fc.weight"], P["fc.bias"]), stats


def _params(model):
    return {n: p.detach().numpy().copy() for n, p in model.named_parameters()}


def _buffers(model):
    return {n: b.numpy().copy() for n, b in model.named_buffers() if not n.endswith("num_batches_tracked")}


def test_lenet_forward_and_every_gradient_match_jax():
    gc.manual_seed(0)
    model = gc.models.LeNet().double()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1, 32, 32))
    target = rng.standard_normal((3, 10))
    out = model(gc.tensor(x))
    loss = F.mse_loss(out, gc.tensor(target))
    loss.backward()
    with _x64():
        P = {k: jnp.asarray(v) for k, v in _params(model).items()}
        ref_out = lenet(P, jnp.asarray(x))
        grads = jax.grad(lambda P: jnp.mean((lenet(P, jnp.asarray(x)) - target) ** 2))(P)
        np.testing.assert_allclose(out.detach().numpy(), np.asarray(ref_out), rtol=1e-12, atol=1e-12)
        for n, p in model.named_parameters():
            np.testing.assert_allclose(p.grad.numpy(), np.asarray(grads[n]), rtol=1e-10, atol=1e-12, err_msg=n)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_resnet18_training_forward_gradients_and_running_stats_match_jax(compiled):
    gc.manual_seed(0)
    model = gc.models.resnet18(num_classes=10).double()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 32, 32))
    labels = rng.standard_normal((2, 10))
    P, S = _params(model), _buffers(model)

    def seed_loss(m, x):  # the seed's loss: (prediction - labels).sum()
        return (m(x) - gc.tensor(labels)).sum()

    fn = gc.compile(seed_loss) if compiled else seed_loss
    loss = fn(model, gc.tensor(x))
    loss.backward()
    with _x64():
        JP = {k: jnp.asarray(v) for k, v in P.items()}
        JS = {k: jnp.asarray(v) for k, v in S.items()}

        def ref_loss(JP):
            out, stats = resnet18(JP, JS, jnp.asarray(x))
            return (out - labels).sum(), stats

        (ref, stats), grads = jax.value_and_grad(ref_loss, has_aux=True)(JP)
        np.testing.assert_allclose(float(loss.detach().numpy()), float(ref), rtol=1e-10)
        for n, p in model.named_parameters():
            # batch statistics over 2 samples make some gradients cancel to tiny values next to
            # entries of size 1e3: compare at float64 rounding relative to the tensor's scale
            ref_g = np.asarray(grads[n])
            np.testing.assert_allclose(p.grad.numpy(), ref_g, rtol=1e-8, atol=1e-9 * np.abs(ref_g).max(), err_msg=n)
        for n, b in _buffers(model).items():
            np.testing.assert_allclose(b, np.asarray(stats[n]), rtol=1e-10, atol=1e-12, err_msg=n)
