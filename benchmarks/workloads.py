"""The benchmark workloads of issue 7, each runnable by every engine from the same initial weights.

A workload builds, for each engine it can, a zero-argument callable that runs ONE step
(forward, backward, optimizer update) and returns something small to block on. Engines:
graphc (numpy backend), graphc-jax (gc.compile(..., backend="jax"), skipped if it raises),
torch (eager, when installed) and jax (a hand-written jax.jit step, when jax is installed);
jax-grads, on request, is that step returning its gradients as well (what graphc's step gives
back in every parameter's .grad): the same work as graphc-jax, for reading where its time goes.
Weights start from graphc's initialisation and are copied into the other engines, so every
engine runs the same arithmetic on the same numbers.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import graphc as gc
from graphc import nn, optim

Step = Callable[[], Any]


@dataclass
class Workload:
    name: str
    description: str
    flops: float | None = None  # per step, from graphc's cost analysis of the step graph
    steps: dict[str, Step] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # engine -> why it has no column
    first_call: dict[str, float] = field(default_factory=dict)  # engine -> seconds of its first step (trace, compile)
    exe: Any = None  # graphc's Executable and its arguments, for profiling and memory analysis
    args: tuple = ()
    lowered: Any = None


def _try(w: Workload, engine: str, build: Callable[[], Step]) -> None:
    """Add an engine's step if it can be built and runs once; otherwise record why not."""
    try:
        t0 = time.perf_counter()
        step = build()
        step()
        w.first_call.setdefault(engine, time.perf_counter() - t0)
    except ImportError as e:
        w.skipped[engine] = f"not installed ({e.name or e})"
        return
    except Exception as e:  # noqa: BLE001  (a broken engine is reported, not fatal to the benchmark)
        w.skipped[engine] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        return
    w.steps[engine] = step


def _numpy_state(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: np.array(v.numpy()) for k, v in model.state_dict().items()}


# ---- graphc -----------------------------------------------------------------------------------------

def _graphc_train_step(model: nn.Module, params: Any, loss_fn: Callable, backend: str = "numpy") -> Callable:
    opt = optim.SGD(params, lr=1e-2, momentum=0.9)

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return gc.compile(step, backend=backend)


def _sum_loss(pred, labels):
    return (pred - labels).sum()


def _mse(pred, labels):
    return ((pred - labels) ** 2).mean()


def _resnet(num_classes: int = 1000, frozen: bool = False) -> nn.Module:
    gc.manual_seed(0)
    model = gc.models.resnet18()
    if frozen:
        for p in model.parameters():
            p.requires_grad = False
        model.fc = nn.Linear(512, num_classes)
    return model


def _graphc_column(w: Workload, make_model: Callable[[], nn.Module], trainable: Callable[[nn.Module], Any],
                   loss_fn: Callable, x: np.ndarray, y: np.ndarray, backend: str = "numpy") -> None:
    engine = "graphc" if backend == "numpy" else f"graphc-{backend}"

    def build() -> Step:
        model = make_model()
        fn = _graphc_train_step(model, trainable(model), loss_fn, backend)
        gx, gy = gc.tensor(x), gc.tensor(y)
        t0 = time.perf_counter()
        fn(gx, gy)  # the first step: trace, passes, code generation (jax: XLA compile), one run
        w.first_call[engine] = time.perf_counter() - t0
        fn(gx, gy)  # momentum buffers exist from the second step on: compile the steady-state graph
        if backend == "numpy":  # the same graph again, ahead of time, for profiles and memory analysis
            w.lowered = fn.lower(gx, gy)
            w.exe, w.args = w.lowered.compile(), (gx, gy)
            w.flops = float(w.lowered.cost_analysis()["flops"])
        return lambda: fn(gx, gy).item()

    _try(w, engine, build)


# ---- torch --------------------------------------------------------------------------------------------

def _torch_resnet_cls() -> Any:
    tests = Path(__file__).resolve().parents[1] / "tests"
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    from torch_resnet import ResNet18  # the reference ResNet-18 with torchvision's names

    return ResNet18


def _torch_step(tmodel: Any, params: Any, loss_fn: Callable, x: np.ndarray, y: np.ndarray) -> Step:
    import torch

    opt = torch.optim.SGD(params, lr=1e-2, momentum=0.9)
    tx, ty = torch.from_numpy(x.copy()), torch.from_numpy(y.copy())

    def step() -> float:
        opt.zero_grad()
        loss = loss_fn(tmodel(tx), ty)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def _load_torch(tmodel: Any, state: dict[str, np.ndarray]) -> Any:
    import torch

    tmodel.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()})
    return tmodel


# ---- hand-written jax ------------------------------------------------------------------------------------

def _jax_resnet18(params: dict, x: Any, train_state: dict) -> tuple[Any, dict]:
    """ResNet-18 forward in training mode (batch statistics), returning new BatchNorm running stats."""
    import jax.numpy as jnp
    from jax import lax

    new_state = {}

    def conv(x, w, stride, pad):
        return lax.conv_general_dilated(x, w, (stride, stride), [(pad, pad), (pad, pad)],
                                        dimension_numbers=("NCHW", "OIHW", "NCHW"))

    def bn(x, name):
        mean = x.mean(axis=(0, 2, 3), keepdims=True)
        var = x.var(axis=(0, 2, 3), keepdims=True)
        n = x.size // x.shape[1]
        new_state[name + ".running_mean"] = 0.9 * train_state[name + ".running_mean"] + 0.1 * mean.reshape(-1)
        new_state[name + ".running_var"] = (0.9 * train_state[name + ".running_var"]
                                            + 0.1 * n / (n - 1) * var.reshape(-1))
        y = (x - mean) * lax.rsqrt(var + 1e-5)
        return y * params[name + ".weight"].reshape(1, -1, 1, 1) + params[name + ".bias"].reshape(1, -1, 1, 1)

    relu = lambda t: jnp.maximum(t, 0)  # noqa: E731
    x = relu(bn(conv(x, params["conv1.weight"], 2, 3), "bn1"))
    x = lax.reduce_window(jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-jnp.inf),
                          -jnp.inf, lax.max, (1, 1, 3, 3), (1, 1, 2, 2), "VALID")
    for layer, stride in ((1, 1), (2, 2), (3, 2), (4, 2)):
        for b in range(2):
            p = f"layer{layer}.{b}"
            s = stride if b == 0 else 1
            out = relu(bn(conv(x, params[p + ".conv1.weight"], s, 1), p + ".bn1"))
            out = bn(conv(out, params[p + ".conv2.weight"], 1, 1), p + ".bn2")
            idn = x
            if p + ".downsample.0.weight" in params:
                idn = bn(conv(x, params[p + ".downsample.0.weight"], s, 0), p + ".downsample.1")
            x = relu(out + idn)
    x = x.mean(axis=(2, 3))
    return x @ params["fc.weight"].T + params["fc.bias"], new_state


def _jax_columns(w: Workload, engines: set[str], forward: Callable, loss_fn: Callable, params: dict, state: dict,
                 trainable: set[str], x: np.ndarray, y: np.ndarray) -> None:
    for engine, grads in (("jax", False), ("jax-grads", True)):
        if engine in engines:
            _try(w, engine, lambda g=grads: _jax_sgd_step(forward, loss_fn, params, state, trainable, x, y, g))


def _jax_sgd_step(forward: Callable, loss_fn: Callable, params: dict, state: dict, trainable: set[str],
                  x: np.ndarray, y: np.ndarray, return_grads: bool = False) -> Step:
    import jax
    import jax.numpy as jnp

    train = {k: jnp.asarray(v) for k, v in params.items() if k in trainable}
    frozen = {k: jnp.asarray(v) for k, v in params.items() if k not in trainable}
    st = {k: jnp.asarray(v) for k, v in state.items()}
    bufs = {k: jnp.zeros_like(v) for k, v in train.items()}
    jx, jy = jnp.asarray(x), jnp.asarray(y)

    def loss(train, frozen, st, x, y):
        pred, new_st = forward({**train, **frozen}, x, st)
        return loss_fn(pred, y), new_st

    @jax.jit
    def step(train, frozen, st, bufs, x, y):
        (lv, new_st), grads = jax.value_and_grad(loss, has_aux=True)(train, frozen, st, x, y)
        bufs = {k: 0.9 * bufs[k] + grads[k] for k in train}
        train = {k: train[k] - 1e-2 * bufs[k] for k in train}
        return lv, train, {**st, **new_st}, bufs, grads if return_grads else None

    box = {"train": train, "st": st, "bufs": bufs, "grads": None}

    def run() -> float:
        lv, box["train"], box["st"], box["bufs"], box["grads"] = step(box["train"], frozen, box["st"], box["bufs"],
                                                                      jx, jy)
        return float(lv)

    return run


def _jax_lenet(params: dict, x: Any, state: dict) -> tuple[Any, dict]:
    import jax.numpy as jnp
    from jax import lax

    def conv(x, w, b):
        return lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW")) \
            + b.reshape(1, -1, 1, 1)

    def pool(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    relu = lambda t: jnp.maximum(t, 0)  # noqa: E731
    x = pool(relu(conv(x, params["conv1.weight"], params["conv1.bias"])))
    x = pool(relu(conv(x, params["conv2.weight"], params["conv2.bias"])))
    x = x.reshape(x.shape[0], -1)
    x = relu(x @ params["fc1.weight"].T + params["fc1.bias"])
    x = relu(x @ params["fc2.weight"].T + params["fc2.bias"])
    return x @ params["fc3.weight"].T + params["fc3.bias"], {}


# ---- the workloads ----------------------------------------------------------------------------------------

def resnet18(batch: int, engines: set[str]) -> Workload:
    """(a) ResNet-18 training step, 3x64x64 inputs, loss (pred - labels).sum(), SGD lr 1e-2 momentum 0.9."""
    w = Workload(f"resnet18_b{batch}", f"ResNet-18 train step, batch {batch}, 3x64x64, SGD momentum")
    rng = np.random.default_rng(0)
    x, y = rng.random((batch, 3, 64, 64), dtype=np.float32), rng.random((batch, 1000), dtype=np.float32)
    state = _numpy_state(_resnet())
    if "graphc" in engines:
        _graphc_column(w, _resnet, lambda m: m.parameters(), _sum_loss, x, y)
    if "graphc-jax" in engines:
        _graphc_column(w, _resnet, lambda m: m.parameters(), _sum_loss, x, y, backend="jax")
    if "torch" in engines:
        def build_torch() -> Step:
            tm = _load_torch(_torch_resnet_cls()(), state)
            return _torch_step(tm, tm.parameters(), lambda p, t: (p - t).sum(), x, y)
        _try(w, "torch", build_torch)
    params = {k: v for k, v in state.items() if "running" not in k and "num_batches" not in k}
    bn_state = {k: v for k, v in state.items() if "running" in k}
    _jax_columns(w, engines, _jax_resnet18, lambda p, t: (p - t).sum(), params, bn_state, set(params), x, y)
    return w


def frozen(batch: int, engines: set[str]) -> Workload:
    """(b) ResNet-18 with every backbone parameter frozen and a new 10-class fc, training only fc."""
    w = Workload(f"frozen_b{batch}", f"ResNet-18 frozen backbone, new fc(512, 10), batch {batch}")
    rng = np.random.default_rng(1)
    x, y = rng.random((batch, 3, 64, 64), dtype=np.float32), rng.random((batch, 10), dtype=np.float32)
    state = _numpy_state(_resnet(10, frozen=True))
    make = lambda: _resnet(10, frozen=True)  # noqa: E731
    if "graphc" in engines:
        _graphc_column(w, make, lambda m: m.fc.parameters(), _sum_loss, x, y)
    if "graphc-jax" in engines:
        _graphc_column(w, make, lambda m: m.fc.parameters(), _sum_loss, x, y, backend="jax")
    if "torch" in engines:
        def build_torch() -> Step:
            tm = _torch_resnet_cls()(10)
            _load_torch(tm, state)
            for n, p in tm.named_parameters():
                p.requires_grad = n.startswith("fc.")
            return _torch_step(tm, tm.fc.parameters(), lambda p, t: (p - t).sum(), x, y)
        _try(w, "torch", build_torch)
    params = {k: v for k, v in state.items() if "running" not in k and "num_batches" not in k}
    bn_state = {k: v for k, v in state.items() if "running" in k}
    _jax_columns(w, engines, _jax_resnet18, lambda p, t: (p - t).sum(), params, bn_state, {"fc.weight", "fc.bias"},
                 x, y)
    return w


def lenet(batch: int, engines: set[str]) -> Workload:
    """(c) the seed's LeNet, 1x32x32 inputs, MSELoss, plain SGD (lr 1e-2, momentum 0.9 as elsewhere)."""
    w = Workload(f"lenet_b{batch}", f"LeNet train step, batch {batch}, 1x32x32, MSELoss, SGD")
    rng = np.random.default_rng(2)
    x, y = rng.random((batch, 1, 32, 32), dtype=np.float32), rng.random((batch, 10), dtype=np.float32)

    def make() -> nn.Module:
        gc.manual_seed(0)
        return gc.models.LeNet()

    state = _numpy_state(make())
    if "graphc" in engines:
        _graphc_column(w, make, lambda m: m.parameters(), nn.MSELoss(), x, y)
    if "graphc-jax" in engines:
        _graphc_column(w, make, lambda m: m.parameters(), nn.MSELoss(), x, y, backend="jax")
    if "torch" in engines:
        def build_torch() -> Step:
            import torch
            from torch import nn as tnn
            from torch.nn import functional as tf

            class TorchLeNet(tnn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.conv1, self.conv2 = tnn.Conv2d(1, 6, 3), tnn.Conv2d(6, 16, 3)
                    self.fc1, self.fc2, self.fc3 = tnn.Linear(576, 120), tnn.Linear(120, 84), tnn.Linear(84, 10)

                def forward(self, x: torch.Tensor) -> torch.Tensor:
                    x = tf.max_pool2d(tf.relu(self.conv1(x)), 2)
                    x = tf.max_pool2d(tf.relu(self.conv2(x)), 2).flatten(1)
                    return self.fc3(tf.relu(self.fc2(tf.relu(self.fc1(x)))))

            tm = _load_torch(TorchLeNet(), state)
            return _torch_step(tm, tm.parameters(), tnn.MSELoss(), x, y)
        _try(w, "torch", build_torch)
    _jax_columns(w, engines, _jax_lenet, lambda p, t: ((p - t) ** 2).mean(), state, {}, set(state), x, y)
    return w


def tiny(engines: set[str]) -> Workload:
    """(d) the seed's Q = 3a^3 - b^2: compiled, called, and back-propagated with gradient ones."""
    w = Workload("tiny_seed", "Q = 3a^3 - b^2, call + backward(gradient=[1, 1])")
    a0, b0 = np.array([2.0, 3.0], np.float32), np.array([6.0, 4.0], np.float32)
    if "graphc" in engines:
        def build() -> Step:
            q = gc.compile(lambda a, b: 3 * a ** 3 - b ** 2)
            a, b = gc.tensor(a0, requires_grad=True), gc.tensor(b0, requires_grad=True)
            ones = gc.ones(2)

            def step() -> Any:
                a.grad = b.grad = None
                q(a, b).backward(gradient=ones)
                return a.grad
            return step
        _try(w, "graphc", build)
    if "torch" in engines:
        def build_torch() -> Step:
            import torch

            a, b = torch.tensor(a0, requires_grad=True), torch.tensor(b0, requires_grad=True)
            ones = torch.ones(2)

            def step() -> Any:
                a.grad = b.grad = None
                (3 * a ** 3 - b ** 2).backward(gradient=ones)
                return a.grad
            return step
        _try(w, "torch", build_torch)
    if "jax" in engines:
        def build_jax() -> Step:
            import jax
            import jax.numpy as jnp

            f = jax.jit(lambda a, b: jax.vjp(lambda a, b: 3 * a ** 3 - b ** 2, a, b)[1](jnp.ones(2)))
            a, b = jnp.asarray(a0), jnp.asarray(b0)
            return lambda: f(a, b)[0].block_until_ready()
        _try(w, "jax", build_jax)
    return w


WORKLOADS: dict[str, Callable[[set[str]], Workload]] = {
    "resnet18_b1": lambda e: resnet18(1, e),
    "resnet18_b16": lambda e: resnet18(16, e),
    "frozen_b1": lambda e: frozen(1, e),
    "lenet_b64": lambda e: lenet(64, e),
    "lenet_b1": lambda e: lenet(1, e),  # issue 6: LeNet and ResNet-18 at batch 1 and 16 on the jax engines
    "lenet_b16": lambda e: lenet(16, e),
    "tiny_seed": tiny,
}
ENGINES = ("graphc", "graphc-jax", "torch", "jax")  # the default columns
EXTRA_ENGINES = ("graphc-1t", "torch-1t", "jax-grads")  # on request (--engines)


def graphc_step_for(name: str) -> Workload:
    """Just the graphc column of a workload (for profiling)."""
    return WORKLOADS[name]({"graphc"})
