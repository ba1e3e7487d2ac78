"""graphc.io weights files: safetensors / npz round trips, torch checkpoints, torchvision layouts."""
from __future__ import annotations

import sys

import numpy as np
import pytest

import graphc as gc
from graphc import nn


def _small():
    gc.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k].numpy(), sb[k].numpy(), err_msg=k)
        assert sa[k].dtype == sb[k].dtype


@pytest.mark.parametrize("ext", [".npz", ".safetensors"])
def test_round_trip(tmp_path, ext):
    if ext == ".safetensors":
        pytest.importorskip("safetensors")
    src = _small()
    src(gc.randn(4, 1, 4, 4))  # move the running stats and the batch counter off their defaults
    path = tmp_path / f"w{ext}"
    gc.io.save_weights(src, path)
    loaded = gc.io.load_weights(path)
    assert all(isinstance(v, np.ndarray) for v in loaded.values())
    assert loaded["1.num_batches_tracked"].dtype == np.int64
    gc.manual_seed(2)
    dst = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    dst.load_state_dict(loaded)
    _assert_same_state(src, dst)
    gc.io.save_weights({"a": gc.ones(2), "b": np.zeros((1, 2), np.float64)}, tmp_path / f"d{ext}")
    d = gc.io.load_weights(tmp_path / f"d{ext}")
    assert d["a"].tolist() == [1.0, 1.0] and d["b"].dtype == np.float64


def test_unknown_extension_and_missing_safetensors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown weights format '.h5'"):
        gc.io.load_weights(tmp_path / "w.h5")
    with pytest.raises(ValueError, match="writes .safetensors or .npz"):
        gc.io.save_weights({}, tmp_path / "w.pth")
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(ImportError, match="pip install safetensors"):
        gc.io.load_weights(tmp_path / "w.safetensors")


@pytest.mark.torch
def test_torch_checkpoint_loads(tmp_path):
    torch = pytest.importorskip("torch")
    tm = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(),
                             torch.nn.Linear(8, 3))
    torch.save(tm.state_dict(), tmp_path / "w.pth")
    torch.save({"state_dict": tm.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    for name in ("w.pth", "ckpt.pt"):
        gm = _small()
        gm.load_state_dict(gc.io.load_weights(tmp_path / name))
        for k, v in tm.state_dict().items():
            np.testing.assert_array_equal(gm.state_dict()[k].numpy(), v.numpy())


@pytest.mark.torch
def test_torchvision_layout_resnet18_loads_without_renaming(tmp_path):
    """A torchvision-layout ResNet-18 saved to safetensors loads into gc.models.resnet18() as is,
    and both models then compute the same outputs."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file
    from torch_resnet import randomized_resnet18

    tm = randomized_resnet18(5).eval()
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in tm.state_dict().items()}, str(path))
    gm = gc.models.resnet18()
    result = gm.load_state_dict(gc.io.load_weights(path))
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k, v in tm.state_dict().items():
        np.testing.assert_array_equal(gm.state_dict()[k].numpy(), v.numpy(), err_msg=k)
    x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    with gc.no_grad():
        out = gm.eval()(gc.tensor(x)).numpy()
    with torch.no_grad():
        ref = tm(torch.tensor(x)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.torch
def test_wrong_checkpoint_names_every_bad_key(tmp_path):
    pytest.importorskip("torch")
    from torch_resnet import randomized_resnet18

    sd = {k: v.numpy() for k, v in randomized_resnet18(0, num_classes=10).state_dict().items()}
    del sd["layer1.0.bn1.running_mean"]
    sd["head.weight"] = sd.pop("fc.weight")
    gm = gc.models.resnet18()
    before = gm.fc.bias.detach().numpy().copy()
    with pytest.raises(RuntimeError) as e:
        gm.load_state_dict(sd)
    msg = str(e.value)
    assert msg.startswith("Error(s) in loading state_dict for ResNet:\n\t")
    assert 'Missing key(s) in state_dict: "layer1.0.bn1.running_mean", "fc.weight". ' in msg
    assert 'Unexpected key(s) in state_dict: "head.weight". ' in msg
    assert ("size mismatch for fc.bias: copying a param with shape graphc.Size([10]) from checkpoint, the shape in "
            "current model is graphc.Size([1000]).") in msg
    np.testing.assert_array_equal(gm.fc.bias.detach().numpy(), before)
