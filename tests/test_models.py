"""graphc.models: LeNet and ResNet against PyTorch (weights copied in), frozen fine-tuning, key layout."""
from __future__ import annotations

import numpy as np
import pytest
from steps import train_step

import graphc as gc
from graphc import nn, optim
from graphc.passes import autodiff

# torchvision's state_dict sizes (parameters + BatchNorm buffers)
TORCHVISION_KEYS = {"resnet18": 122, "resnet34": 218, "resnet50": 320}


def _data(seed=0, shape=(1, 3, 64, 64), n_out=1000):
    rng = np.random.default_rng(seed)
    return rng.random(shape, dtype=np.float32), rng.random((shape[0], n_out), dtype=np.float32)


@pytest.fixture(scope="module")
def torch_resnet():
    pytest.importorskip("torch")
    from torch_resnet import randomized_resnet18

    return randomized_resnet18


def _gc_copy(tmodel, gmodel):
    gmodel.load_state_dict({k: v.detach().numpy() for k, v in tmodel.state_dict().items()})
    return gmodel


def _seed_step(model, lib, x, labels):
    """The seed tutorial: prediction = model(data); loss = (prediction - labels).sum(); loss.backward()."""
    pred = model(lib.tensor(x))
    loss = (pred - lib.tensor(labels)).sum()
    loss.backward()
    return pred, loss


# ---- ResNet-18 -------------------------------------------------------------------------------------

def test_resnet_state_dict_keys_follow_torchvision():
    m = gc.models.resnet18()
    keys = list(m.state_dict())
    assert len(keys) == TORCHVISION_KEYS["resnet18"]
    assert keys[:6] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                        "bn1.num_batches_tracked"]
    for k in ("layer1.0.conv1.weight", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var",
              "layer4.1.bn2.bias", "fc.weight", "fc.bias"):
        assert k in keys
    assert m.fc.weight.shape == (1000, 512) and gc.models.resnet18(num_classes=10).fc.weight.shape == (10, 512)
    assert len(list(m.parameters())) == 62


def test_resnet34_and_50_key_counts():
    assert len(gc.models.resnet34().state_dict()) == TORCHVISION_KEYS["resnet34"]
    m = gc.models.resnet50(num_classes=10)
    assert len(m.state_dict()) == TORCHVISION_KEYS["resnet50"] and m.fc.weight.shape == (10, 2048)
    assert "layer1.0.conv3.weight" in m.state_dict() and "layer1.0.downsample.0.weight" in m.state_dict()


def test_resnet_construction_is_reproducible_under_manual_seed():
    gc.manual_seed(7)
    a = gc.models.resnet18(num_classes=4)
    gc.manual_seed(7)
    b = gc.models.resnet18(num_classes=4)
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=k)
    w = a.layer1[0].conv1.weight.detach().numpy()
    assert abs(w.std() - np.sqrt(2 / (64 * 9))) < 0.01  # kaiming_normal_, fan_out, relu (torchvision)


@pytest.mark.torch
def test_resnet18_float64_matches_torch_exactly(torch_resnet):
    """In float64 every output, parameter gradient and running statistic agrees to rounding:
    the formulas (BatchNorm's batch statistics and unbiased running variance included) are torch's."""
    import torch

    tm = torch_resnet(0).double()
    gm = _gc_copy(tm, gc.models.resnet18().double())
    x, labels = (a.astype(np.float64) for a in _data())
    gp, _ = _seed_step(gm, gc, x, labels)
    tp, _ = _seed_step(tm, torch, x, labels)
    np.testing.assert_allclose(gp.detach().numpy(), tp.detach().numpy(), rtol=1e-10, atol=1e-10)
    for (n, p), (_, t) in zip(gm.named_parameters(), tm.named_parameters(), strict=True):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-9, atol=1e-9, err_msg=n)
    for (n, b), (_, t) in zip(gm.named_buffers(), tm.named_buffers(), strict=True):
        np.testing.assert_allclose(b.numpy(), t.numpy(), rtol=1e-10, atol=1e-12, err_msg=n)


@pytest.mark.torch
def test_resnet18_float32_train_step_matches_torch(torch_resnet):
    """The seed's step in float32: forward, every parameter gradient, BatchNorm running stats and
    one SGD(momentum) update. With batch 1, BatchNorm over layer4's 2x2 maps amplifies rounding:
    torch's own float32 gradients differ from float64 by ~2e-4 of each tensor's scale, so the
    gradient check is relative to that scale."""
    import torch

    tm = torch_resnet(0)
    gm = _gc_copy(tm, gc.models.resnet18())
    x, labels = _data()
    gp, gl = _seed_step(gm, gc, x, labels)
    tp, tl = _seed_step(tm, torch, x, labels)
    assert repr(gm) == repr(tm).replace("ResNet18(", "ResNet(", 1)
    np.testing.assert_allclose(gp.detach().numpy(), tp.detach().numpy(), rtol=1e-4, atol=1e-4)
    for (n, p), (_, t) in zip(gm.named_parameters(), tm.named_parameters(), strict=True):
        tg = t.grad.numpy()
        np.testing.assert_allclose(p.grad.numpy(), tg, rtol=1e-3, atol=1e-3 * np.abs(tg).max(), err_msg=n)
    for (n, b), (_, t) in zip(gm.named_buffers(), tm.named_buffers(), strict=True):
        np.testing.assert_allclose(b.numpy(), t.numpy(), rtol=1e-5, atol=1e-5, err_msg=n)
    go = optim.SGD(gm.parameters(), lr=1e-2, momentum=0.9)
    to = torch.optim.SGD(tm.parameters(), lr=1e-2, momentum=0.9)
    assert repr(go) == repr(to)
    go.step()
    to.step()
    for (n, p), (_, t) in zip(gm.named_parameters(), tm.named_parameters(), strict=True):
        tg = t.grad.numpy()
        np.testing.assert_allclose(p.detach().numpy(), t.detach().numpy(), rtol=1e-4,
                                   atol=1e-5 + 1e-2 * 1e-3 * np.abs(tg).max(), err_msg=n)


@pytest.mark.torch
def test_resnet18_eval_mode_matches_torch_tightly(torch_resnet):
    import torch

    tm = torch_resnet(1).eval()
    gm = _gc_copy(tm, gc.models.resnet18()).eval()
    x, labels = _data(1, shape=(1, 3, 32, 32))
    gp, _ = _seed_step(gm, gc, x, labels)
    tp, _ = _seed_step(tm, torch, x, labels)
    np.testing.assert_allclose(gp.detach().numpy(), tp.detach().numpy(), rtol=1e-4, atol=1e-5)
    for (n, p), (_, t) in zip(gm.named_parameters(), tm.named_parameters(), strict=True):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-4, err_msg=n)
    assert all(int(b.num_batches_tracked) == 0 for b in gm.modules() if isinstance(b, nn.BatchNorm2d))


# ---- frozen fine-tuning (seeds 001/002) --------------------------------------------------------------

def _finetune_backward(model, x):
    out = model(gc.tensor(x))
    loss = (out ** 2).mean()
    loss.backward()
    return autodiff.last_stats["nodes_executed"]


def test_frozen_backbone_runs_only_the_head_backward():
    gc.manual_seed(0)
    model = gc.models.resnet18()
    x, _ = _data(2, shape=(2, 3, 32, 32))
    full = _finetune_backward(model, x)
    model.zero_grad()
    for param in model.parameters():
        param.requires_grad = False
    model.fc = nn.Linear(512, 10)
    frozen = _finetune_backward(model, x)
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("fc."))
    assert model.fc.weight.grad is not None and model.fc.bias.grad is not None
    # fc: matmul (+ its transpose) and the bias add; loss: pow and mean
    assert frozen <= 5 < 200 < full
    opt = optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    before = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    opt.step()
    changed = {n for n, p in model.named_parameters() if not np.array_equal(before[n], p.detach().numpy())}
    assert changed == {"fc.weight", "fc.bias"}


@pytest.mark.torch
def test_frozen_finetune_fc_gradient_matches_torch(torch_resnet):
    import torch

    tm = torch_resnet(3)
    gm = _gc_copy(tm, gc.models.resnet18())
    for m in (tm, gm):
        for p in m.parameters():
            p.requires_grad = False
    tm.fc = torch.nn.Linear(512, 10)
    gm.fc = nn.Linear(512, 10)
    gm.fc.load_state_dict({k: v.detach().numpy() for k, v in tm.fc.state_dict().items()})
    tm.double()  # float64: train-mode BatchNorm over 1x1 maps is too ill-conditioned for a float32 comparison
    gm.double()
    x = _data(3, shape=(2, 3, 32, 32))[0].astype(np.float64)
    (gm(gc.tensor(x)) ** 2).mean().backward()
    (tm(torch.tensor(x)) ** 2).mean().backward()
    for g, t in zip(gm.fc.parameters(), tm.fc.parameters(), strict=True):
        np.testing.assert_allclose(g.grad.numpy(), t.grad.numpy(), rtol=1e-9, atol=1e-10)
    assert all(p.grad is None for n, p in gm.named_parameters() if not n.startswith("fc."))


# ---- LeNet (seed 004) ------------------------------------------------------------------------------

@pytest.mark.torch
def test_lenet_outputs_grads_and_manual_update_match_torch():
    torch = pytest.importorskip("torch")
    from test_nn import SEED_NET_REPR

    class TorchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 6, 3)
            self.conv2 = torch.nn.Conv2d(6, 16, 3)
            self.fc1 = torch.nn.Linear(576, 120)
            self.fc2 = torch.nn.Linear(120, 84)
            self.fc3 = torch.nn.Linear(84, 10)

        def forward(self, x):
            f = torch.nn.functional
            x = f.max_pool2d(f.relu(self.conv1(x)), (2, 2))
            x = f.max_pool2d(f.relu(self.conv2(x)), 2)
            x = f.relu(self.fc1(x.view(-1, 576)))
            return self.fc3(f.relu(self.fc2(x)))

    torch.manual_seed(0)
    tnet = TorchNet()
    gnet = _gc_copy(tnet, gc.models.LeNet())
    assert repr(gnet) == SEED_NET_REPR.replace("Net(", "LeNet(", 1)
    rng = np.random.default_rng(0)
    x, target, vjp = (rng.standard_normal(s).astype(np.float32) for s in ((1, 1, 32, 32), (1, 10), (1, 10)))
    gout, tout = gnet(gc.tensor(x)), tnet(torch.tensor(x))
    np.testing.assert_allclose(gout.detach().numpy(), tout.detach().numpy(), rtol=1e-5, atol=1e-6)
    gout.backward(gc.tensor(vjp))
    tout.backward(torch.tensor(vjp))
    gnet.zero_grad()
    tnet.zero_grad()
    gloss = nn.MSELoss()(gnet(gc.tensor(x)), gc.tensor(target))
    tloss = torch.nn.MSELoss()(tnet(torch.tensor(x)), torch.tensor(target))
    assert abs(float(gloss.detach()) - tloss.item()) < 1e-5
    gloss.backward()
    tloss.backward()
    for (n, p), (_, t) in zip(gnet.named_parameters(), tnet.named_parameters(), strict=True):
        np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=n)
    for f, t in zip(gnet.parameters(), tnet.parameters(), strict=True):  # the seed's manual update
        f.data.sub_(f.grad.data * 0.01)
        t.data.sub_(t.grad.data * 0.01)
        np.testing.assert_allclose(f.detach().numpy(), t.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_lenet_trains_on_a_fixed_batch():
    gc.manual_seed(0)
    net = gc.models.LeNet()
    opt = optim.SGD(net.parameters(), lr=0.01)
    x, y = gc.randn(4, 1, 32, 32), gc.randn(4, 10)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = nn.MSELoss()(net(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


@pytest.mark.torch
def test_lenet_compiled_sgd_steps_match_torch():
    """The compiled LeNet training step records the max-pool winners in the forward and scatters to them
    in the backward (max_pool2d_with_indices / max_pool2d_indices_grad); three SGD(momentum) steps on a
    batch with many ReLU zeros (ties in every pooling window) follow torch's."""
    torch = pytest.importorskip("torch")
    gc.manual_seed(0)
    gnet = gc.models.LeNet()
    state = {k: torch.tensor(v.detach().numpy()) for k, v in gnet.state_dict().items()}  # same parameters
    f = torch.nn.functional

    def tforward(x):
        x = f.max_pool2d(f.relu(f.conv2d(x, state["conv1.weight"], state["conv1.bias"])), 2)
        x = f.max_pool2d(f.relu(f.conv2d(x, state["conv2.weight"], state["conv2.bias"])), 2).flatten(1)
        x = f.relu(f.linear(x, state["fc1.weight"], state["fc1.bias"]))
        return f.linear(f.relu(f.linear(x, state["fc2.weight"], state["fc2.bias"])), state["fc3.weight"],
                        state["fc3.bias"])

    for v in state.values():
        v.requires_grad_(True)
    gopt = optim.SGD(gnet.parameters(), lr=0.05, momentum=0.9)
    topt = torch.optim.SGD(list(state.values()), lr=0.05, momentum=0.9)

    step = gc.compile(train_step(gnet, gopt, nn.MSELoss()))
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((8, 1, 32, 32)).astype(np.float32) - 0.5, rng.random((8, 10), dtype=np.float32)
    for _ in range(3):
        gl = float(step(gc.tensor(x), gc.tensor(y)))
        topt.zero_grad()
        tl = torch.nn.functional.mse_loss(tforward(torch.tensor(x)), torch.tensor(y))
        tl.backward()
        topt.step()
        assert gl == pytest.approx(tl.item(), rel=1e-4)
    for k, p in gnet.state_dict().items():
        np.testing.assert_allclose(p.numpy(), state[k].detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=k)
    ops = {n.op for n in step.lower(gc.tensor(x), gc.tensor(y)).graph.nodes}
    assert {"max_pool2d_with_indices", "max_pool2d_indices_grad"} <= ops and "max_pool2d" not in ops
