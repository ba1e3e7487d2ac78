"""Small compiled training steps for the visualization tests (LeNet + MSE + SGD with momentum)."""
from __future__ import annotations

import graphc as gc
from graphc import nn, optim


def lenet_step(freeze_conv1: bool = False, dump: str | None = None):
    """(compiled step, x, y): one SGD step of LeNet, optionally with conv1 frozen."""
    gc.manual_seed(0)
    model = gc.models.LeNet()
    if freeze_conv1:
        model.conv1.requires_grad_(False)
    opt = optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    crit = nn.MSELoss()

    def step(x, y):
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return gc.compile(step, dump=dump), gc.randn(2, 1, 32, 32), gc.randn(2, 10)


def lenet_lowered(freeze_conv1: bool = False):
    step, x, y = lenet_step(freeze_conv1)
    return step.lower(x, y)
