"""Training steps shared by the tests: the tutorials' step (zero_grad, loss, backward, step), a tiny compiled
one (linear least squares, manual SGD on a captured weight) and the seeds' ResNet-18 step."""
from __future__ import annotations

from typing import Any

import graphc as gc


def train_step(model: Any, opt: Any, loss_fn: Any) -> Any:
    """The tutorials' training step as a plain function (compile it, or run it eagerly as the oracle)."""
    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


def tiny_step(backend: str = "numpy") -> tuple[Any, gc.Tensor]:
    """-> (compiled step(x: f32[8,4], y: f32[8,3]) -> loss, its weight w: f32[4,3])."""
    gc.manual_seed(0)
    w = gc.randn(4, 3, requires_grad=True)

    @gc.compile(backend=backend)
    def step(x, y):
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        with gc.no_grad():
            w.sub_(w.grad * 0.1)
        w.grad = None
        return loss

    return step, w


def save_tiny_step(path: str) -> Any:
    """Lower, compile and save the tiny step; -> the Executable."""
    step, _ = tiny_step()
    exe = step.lower(gc.randn(8, 4), gc.randn(8, 3)).compile()
    exe.save(str(path))
    return exe


def resnet18_seed_step() -> tuple[Any, Any]:
    """The seeds' ResNet-18 step (10 classes): loss (pred - labels).sum(), SGD lr 1e-2 momentum 0.9,
    compiled; -> (step, model)."""
    gc.manual_seed(0)
    model = gc.models.resnet18(num_classes=10)
    opt = gc.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)

    @gc.compile
    def step(x, y):
        opt.zero_grad()
        loss = (model(x) - y).sum()
        loss.backward()
        opt.step()
        return loss

    return step, model
