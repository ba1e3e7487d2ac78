"""Data parallelism across processes (docs/jax.md, "Many hosts"): two processes of two simulated CPU devices
each, joined by jax.distributed.initialize() over gloo, train LeNet with `data_parallel=True`; every process
must end with the same losses and parameters as one process training alone on one device."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("jax")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = textwrap.dedent("""
    import sys
    import jax
    rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    if rank >= 0:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=rank)
        assert jax.process_count() == 2 and jax.device_count() == 4, (jax.process_count(), jax.devices())
    import numpy as np
    import graphc as gc
    from graphc import nn, optim
    sys.path.insert(0, "tests")
    from steps import train_step

    gc.manual_seed(0)
    model = gc.models.LeNet()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    step = gc.compile(train_step(model, opt, nn.MSELoss()), backend="jax", data_parallel=rank >= 0)

    rng = np.random.default_rng(0)  # every process passes the same global batches
    losses = [step(gc.tensor(rng.standard_normal((8, 1, 32, 32)).astype(np.float32)),
                   gc.tensor(rng.standard_normal((8, 10)).astype(np.float32))).item() for _ in range(3)]
    np.savez(out, losses=np.array(losses), **{k: v.numpy() for k, v in model.state_dict().items()})
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_train_like_one(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    port = str(_free_port())
    runs = [subprocess.Popen([sys.executable, "-c", WORKER, str(rank), port, str(tmp_path / f"r{rank}.npz")],
                             cwd=ROOT, env={**env, "XLA_FLAGS": "" if rank < 0 else env["XLA_FLAGS"]},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for rank in (0, 1, -1)]  # -1: one process, one device, the reference
    try:
        outs = [p.communicate(timeout=240)[0] for p in runs]
    finally:
        for p in runs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(runs, outs):
        assert p.returncode == 0, out[-3000:]
    ref = np.load(tmp_path / "r-1.npz")
    for rank in (0, 1):
        got = np.load(tmp_path / f"r{rank}.npz")
        np.testing.assert_allclose(got["losses"], ref["losses"], rtol=1e-5)
        for k in ref.files:
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)
