"""Compiled artifacts: bit-identical round trip, and a clear error for every kind of bad file."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from steps import tiny_step

import graphc as gc
from graphc.io.artifact import ArtifactError


def _save(tmp_path):
    step, w = tiny_step()
    x, y = gc.randn(8, 4), gc.randn(8, 3)
    exe = step.lower(x, y).compile()
    path = tmp_path / "step.graphc"
    exe.save(str(path))
    return exe, path, x, y, w


def test_round_trip_is_bit_identical(tmp_path):
    exe, path, x, y, w = _save(tmp_path)
    loaded = gc.load(str(path))
    for _ in range(3):
        a, b = exe(x, y).numpy(), loaded(x, y).numpy()
        assert a.tobytes() == b.tobytes()
    assert loaded.state_dict()["w"].tobytes() == w.detach().numpy().tobytes()
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["graph.json", "manifest.json", "signature.json", "source.py", "state.npz"]


def test_loaded_artifact_trains_without_the_python_code(tmp_path):
    exe, path, x, y, _ = _save(tmp_path)
    loaded = gc.load(str(path))
    losses = [loaded(x, y).item() for _ in range(5)]
    assert losses == sorted(losses, reverse=True)


def test_save_is_atomic(tmp_path):
    exe, path, *_ = _save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["step.graphc"]


def test_not_an_artifact(tmp_path):
    p = tmp_path / "x.graphc"
    p.write_text("hello")
    with pytest.raises(ArtifactError, match="not a graphc artifact"):
        gc.load(str(p))
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "x")
    with pytest.raises(ArtifactError, match="no readable manifest"):
        gc.load(str(tmp_path / "other.zip"))


def test_truncated(tmp_path):
    _, path, *_ = _save(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError):
        gc.load(str(path))


def _rewrite(path, member, fn, keep_manifest=True):
    with zipfile.ZipFile(path) as z:
        items = {n: z.read(n) for n in z.namelist()}
    items[member] = fn(items[member])
    with zipfile.ZipFile(path, "w") as z:
        for n, v in items.items():
            z.writestr(n, v)


def test_corrupted_member_fails_digest(tmp_path):
    _, path, *_ = _save(tmp_path)
    _rewrite(path, "graph.json", lambda b: b.replace(b'"mean"', b'"sum"'))
    with pytest.raises(ArtifactError, match="sha256"):
        gc.load(str(path))


def test_wrong_schema_version(tmp_path):
    _, path, *_ = _save(tmp_path)

    def bump(b):
        m = json.loads(b)
        m["version"] = 99
        return json.dumps(m).encode()

    _rewrite(path, "manifest.json", bump)
    with pytest.raises(ArtifactError, match="version 99"):
        gc.load(str(path))


def test_wrong_input_signature_at_call_time(tmp_path):
    _, path, x, y, _ = _save(tmp_path)
    loaded = gc.load(str(path))
    with pytest.raises(TypeError, match="compiled for f32\\[8,4\\]"):
        loaded(gc.randn(2, 4), y)
    with pytest.raises(TypeError, match="takes 2 tensor argument"):
        loaded(x)
    assert np.isfinite(loaded(x, y).item())
