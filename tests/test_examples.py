"""The seed-tutorial examples run in fast mode and print what the tutorials print."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

EXPECTED = {
    "autograd_basics.py": ["tensor([True, True])\ntensor([True, True])", "tensor([[3., 3.],\n        [3., 3.]])",
                           "tensor([2., 4., 6.])", "Does `a` require gradients?: False",
                           "Does `b` require gradients?: True"],
    "lenet_mse.py": ["Net(\n  (conv1): Conv2d(1, 6, kernel_size=(3, 3), stride=(1, 1))", "\n10\n(6, 1, 3, 3)\n",
                     "conv1.bias.grad before backward\nNone\nconv1.bias.grad after backward\ntensor([",
                     "SGD (\nParameter Group 0\n    dampening: 0", "step 3: loss"],
    "resnet18_train_step.py": ["    lr: 0.01\n    maximize: False\n    momentum: 0.9\n", "step 1: loss",
                               "62 parameter tensors, 11689512 parameters"],
    "resnet18_finetune_frozen.py": ["parameters with a gradient: ['fc.weight', 'fc.bias']", "step 2: loss",
                                    "with a frozen backbone"],
}


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_fast(script):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--fast"], capture_output=True, text=True,
                         env=env, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    for piece in EXPECTED[script]:
        assert piece in res.stdout, f"{piece!r} not in output:\n{res.stdout}"
