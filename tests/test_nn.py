"""graphc.nn: Module bookkeeping, state_dict loading, reprs, layers and functional ops (against torch where present)."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
import graphc.nn.functional as F  # noqa: N812  (torch's convention)
from graphc import nn

torch_mark = pytest.mark.torch


class Net(nn.Module):
    """The seed tutorial's network, verbatim but for the import."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3)
        self.conv2 = nn.Conv2d(6, 16, 3)
        self.fc1 = nn.Linear(16 * 6 * 6, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(-1, 576)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


SEED_NET_REPR = """Net(
  (conv1): Conv2d(1, 6, kernel_size=(3, 3), stride=(1, 1))
  (conv2): Conv2d(6, 16, kernel_size=(3, 3), stride=(1, 1))
  (fc1): Linear(in_features=576, out_features=120, bias=True)
  (fc2): Linear(in_features=120, out_features=84, bias=True)
  (fc3): Linear(in_features=84, out_features=10, bias=True)
)"""


def _np(t):
    return t.detach().numpy()


# ---- Parameter and registration -------------------------------------------------------------------

def test_parameter_is_a_leaf_tensor_that_requires_grad():
    t = gc.tensor([1.0, 2.0])
    p = nn.Parameter(t)
    assert isinstance(p, nn.Parameter) and isinstance(p, gc.Tensor)
    assert p.requires_grad and p.is_leaf and p.dtype == gc.float32
    assert repr(p) == "Parameter containing:\ntensor([1., 2.], requires_grad=True)"
    with gc.no_grad():
        p.mul_(2)
    assert t.tolist() == [2.0, 4.0]  # shares memory with the tensor it wraps, like torch
    assert not nn.Parameter(gc.zeros(2), requires_grad=False).requires_grad
    assert type(p * 2) is gc.Tensor


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)
        self.register_buffer("scratch", gc.zeros(2), persistent=False)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Block()
        self.b = self.a  # shared: reported once by parameters(), under both names by state_dict()
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(2, 1))
        self.scale = nn.Parameter(gc.ones(1))


def test_named_members_use_torch_dotted_names_and_deduplicate():
    m = Model()
    assert [n for n, _ in m.named_parameters()] == ["scale", "a.lin.weight", "a.lin.bias", "a.bn.weight", "a.bn.bias",
                                                    "head.1.weight", "head.1.bias"]
    assert [n for n, _ in m.named_buffers()] == ["a.scratch", "a.bn.running_mean", "a.bn.running_var",
                                                 "a.bn.num_batches_tracked"]
    assert [n for n, _ in m.named_modules()] == ["", "a", "a.lin", "a.bn", "head", "head.0", "head.1"]
    assert [n for n, _ in m.named_children()] == ["a", "head"]
    assert len(list(m.parameters())) == 7 and len(list(m.modules())) == 7
    assert len(list(m.parameters(recurse=False))) == 1
    sd = m.state_dict()
    assert "a.scratch" not in sd and "b.lin.weight" in sd and "a.lin.weight" in sd
    assert list(sd)[:6] == ["scale", "a.lin.weight", "a.lin.bias", "a.bn.weight", "a.bn.bias", "a.bn.running_mean"]


def test_setattr_getattr_delattr_follow_torch():
    m = Model()
    assert m.a.lin.weight.shape == (2, 3) and m.get_submodule("head.1") is m.head[1]
    with pytest.raises(TypeError, match="cannot assign 'Tensor' as parameter 'scale'"):
        m.scale = gc.ones(1)
    m.scale = None
    assert "scale" not in dict(m.named_parameters())
    with pytest.raises(AttributeError, match="'Model' object has no attribute 'nope'"):
        _ = m.nope
    del m.head
    assert not hasattr(m, "head") and "head.1.weight" not in m.state_dict()
    m.extra = nn.Linear(1, 1)
    assert "extra.weight" in m.state_dict()
    m.a.register_parameter("gain", nn.Parameter(gc.ones(2)))
    assert "a.gain" in dict(m.named_parameters())
    with pytest.raises(KeyError, match="already exists"):
        m.a.register_buffer("lin", gc.zeros(1))

    class NoInit(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(gc.ones(1))

    with pytest.raises(AttributeError, match="before Module.__init__"):
        NoInit()


def test_state_dict_values_alias_module_tensors():
    m = nn.Linear(2, 2)
    sd = m.state_dict()
    assert not sd["weight"].requires_grad
    with gc.no_grad():
        m.weight.fill_(3.0)
    assert sd["weight"].tolist() == [[3.0, 3.0], [3.0, 3.0]]
    assert m.state_dict(keep_vars=True)["weight"] is m.weight


def test_train_eval_zero_grad_requires_grad_apply_to():
    m = Model()
    assert m.training and m.eval() is m and not any(x.training for x in m.modules())
    m.train()
    assert all(x.training for x in m.modules())
    out = m.head(m.a.lin(gc.ones(4, 3))).sum() * m.scale
    out.backward()
    assert m.a.lin.weight.grad is not None
    m.zero_grad(set_to_none=False)
    assert float(m.a.lin.weight.grad.abs().sum()) == 0.0
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    m.requires_grad_(False)
    assert not any(p.requires_grad for p in m.parameters())
    seen = []
    m.apply(lambda mod: seen.append(type(mod).__name__))
    assert seen[-1] == "Model" and seen.count("Linear") == 2
    w = m.a.lin.weight
    m.double()
    assert m.a.lin.weight is w and w.dtype == gc.float64 and m.a.bn.num_batches_tracked.dtype == gc.int64
    assert m.to("cpu") is m
    with pytest.raises(RuntimeError, match="CPU"):
        m.to("cuda")


def test_modules_record_their_path_in_traced_graphs():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Sequential(nn.Linear(3, 2)))
    low = gc.compile(model).lower(gc.ones(2, 4))
    modules = {n.meta.get("module") for n in low.stages[0][1].nodes}
    assert {"0", "1", "2.0"} <= modules


def test_forward_hooks():
    m = nn.Linear(2, 2)
    seen = []
    h = m.register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    m(gc.ones(3, 2))
    h.remove()
    m(gc.ones(3, 2))
    assert seen == [(3, 2)]


# ---- load_state_dict -------------------------------------------------------------------------------

def test_load_state_dict_accepts_arrays_and_tensors():
    src, dst = Block(), Block()
    sd = {k: v.numpy() for k, v in src.state_dict().items()}
    sd["lin.bias"] = gc.tensor(sd["lin.bias"])  # a graphc tensor works too
    res = dst.load_state_dict(sd)
    assert res.missing_keys == [] and res.unexpected_keys == []
    for k, v in src.state_dict().items():
        np.testing.assert_array_equal(dst.state_dict()[k].numpy(), v.numpy())
    assert dst.lin.weight.requires_grad  # still the same Parameter


def test_failed_load_lists_every_bad_key_and_changes_nothing():
    m = Block()
    before = {k: v.numpy().copy() for k, v in m.state_dict().items()}
    sd = {k: np.full(v.shape, 7.0, dtype=np.float32) for k, v in m.state_dict().items()}
    del sd["lin.bias"], sd["bn.running_var"]
    sd["extra.weight"] = np.zeros(3, np.float32)
    sd["other"] = np.zeros(1, np.float32)
    sd["lin.weight"] = np.zeros((5, 3), np.float32)
    with pytest.raises(RuntimeError) as e:
        m.load_state_dict(sd)
    assert str(e.value) == (
        "Error(s) in loading state_dict for Block:\n"
        '\tMissing key(s) in state_dict: "lin.bias", "bn.running_var". \n'
        '\tUnexpected key(s) in state_dict: "extra.weight", "other". \n'
        "\tsize mismatch for lin.weight: copying a param with shape graphc.Size([5, 3]) from checkpoint, "
        "the shape in current model is graphc.Size([2, 3]).")
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_non_strict_load_reports_keys_but_still_refuses_shape_mismatch():
    m = Block()
    sd = {"lin.weight": np.ones((2, 3), np.float32), "junk": np.ones(1)}
    res = m.load_state_dict(sd, strict=False)
    assert res.unexpected_keys == ["junk"] and "lin.bias" in res.missing_keys
    assert m.lin.weight.tolist() == [[1.0] * 3] * 2
    with pytest.raises(RuntimeError, match="size mismatch for lin.weight"):
        m.load_state_dict({"lin.weight": np.ones((3, 3), np.float32)}, strict=False)


def test_checkpoint_without_num_batches_tracked_loads_like_torch():
    m = nn.BatchNorm2d(3)
    with gc.no_grad():
        m.num_batches_tracked.fill_(5)
    sd = {k: v.numpy() for k, v in m.state_dict().items() if k != "num_batches_tracked"}
    m.load_state_dict(sd)
    assert int(m.num_batches_tracked) == 0


# ---- reprs -----------------------------------------------------------------------------------------

def test_seed_net_repr_and_parameter_listing():
    net = Net()
    assert repr(net) == SEED_NET_REPR
    params = list(net.parameters())
    assert len(params) == 10 and params[0].size() == (6, 1, 3, 3)
    out = net(gc.randn(1, 1, 32, 32))
    assert out.shape == (1, 10) and out.grad_fn is not None


LAYERS = [
    "Conv2d(3, 4, 3, padding=1, bias=False)", "Conv2d(3, 4, (3, 5), stride=2, padding=(1, 2), dilation=2)",
    "Conv2d(4, 4, 3, groups=2, padding='same')", "Linear(3, 2, bias=False)", "BatchNorm2d(3)",
    "BatchNorm2d(3, affine=False, track_running_stats=False)", "BatchNorm1d(5, momentum=None)", "ReLU()",
    "ReLU(inplace=True)", "MaxPool2d(2)", "MaxPool2d(3, 2, 1)", "AvgPool2d(2)", "AdaptiveAvgPool2d((1, 1))",
    "AdaptiveAvgPool2d(3)", "Flatten()", "Dropout()", "Dropout(0.2)", "Identity()", "Softmax(dim=1)", "Softmax()",
    "LayerNorm(4)", "LayerNorm([2, 3], elementwise_affine=False)", "Embedding(10, 3)",
    "Embedding(10, 3, padding_idx=0)",
    "MSELoss()", "CrossEntropyLoss()", "L1Loss()", "Sequential(Linear(2, 3), ReLU())", "Sequential()",
    "ModuleList([ReLU(), ReLU(), Linear(1, 1)])", "ModuleDict({'a': ReLU()})",
]


@torch_mark
@pytest.mark.parametrize("expr", LAYERS)
def test_layer_repr_matches_torch(expr):
    torch = pytest.importorskip("torch")
    assert repr(eval(expr, {}, vars(nn))) == repr(eval(expr, {}, vars(torch.nn)))


# ---- layers and functional ops against torch -------------------------------------------------------

def _copy_params(g_module, t_module):
    g_module.load_state_dict({k: v.detach().numpy() for k, v in t_module.state_dict().items()})


def _check_fn(gfn, tfn, arrays, rtol=1e-5, atol=1e-5, grad=True):
    """Same inputs through graphc and torch: outputs and input gradients agree."""
    torch = pytest.importorskip("torch")
    gx = [gc.tensor(a, requires_grad=grad and a.dtype.kind == "f") for a in arrays]
    tx = [torch.tensor(a, requires_grad=grad and a.dtype.kind == "f") for a in arrays]
    go, to = gfn(*gx), tfn(*tx)
    np.testing.assert_allclose(_np(go), to.detach().numpy(), rtol=rtol, atol=atol)
    if grad:
        seed = np.random.default_rng(9).standard_normal(to.shape).astype(np.float32)
        go.backward(gc.tensor(seed))
        to.backward(torch.tensor(seed))
        for g, t in zip(gx, tx, strict=True):
            if t.grad is not None:
                np.testing.assert_allclose(g.grad.numpy(), t.grad.numpy(), rtol=rtol, atol=atol)


def _r(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@torch_mark
@pytest.mark.parametrize("kw", [{}, {"stride": 2, "padding": 1}, {"stride": (2, 1), "padding": (0, 2), "dilation": 2},
                                {"groups": 2, "padding": "same"}])
def test_conv2d_matches_torch(kw):
    torch = pytest.importorskip("torch")
    _check_fn(lambda x, w, b: F.conv2d(x, w, b, **kw), lambda x, w, b: torch.nn.functional.conv2d(x, w, b, **kw),
              [_r(2, 4, 7, 6), _r(6, 4 // kw.get("groups", 1), 3, 3, seed=1), _r(6, seed=2)])


@torch_mark
@pytest.mark.parametrize("name,args", [
    ("max_pool2d", ((2, 2),)), ("max_pool2d", (3, 2, 1)), ("avg_pool2d", (2,)), ("avg_pool2d", (3, 1, 1)),
    ("adaptive_avg_pool2d", ((1, 1),)), ("adaptive_avg_pool2d", (3,)), ("adaptive_avg_pool2d", ((2, None),)),
])
def test_pooling_matches_torch(name, args):
    torch = pytest.importorskip("torch")
    _check_fn(lambda x: getattr(F, name)(x, *args), lambda x: getattr(torch.nn.functional, name)(x, *args),
              [_r(2, 3, 7, 8)])


@torch_mark
@pytest.mark.parametrize("shape", [(2, 3, 7, 8), (3, 9, 6)])
@pytest.mark.parametrize("grad", [True, False])
def test_max_pool_return_indices_matches_torch(shape, grad):
    """return_indices gives torch's int64 plane indices (also for an unbatched input); with or without a
    gradient to take (which picks the op that records the winners), outputs and gradients agree."""
    torch = pytest.importorskip("torch")
    x = np.floor(np.random.default_rng(3).uniform(0, 3, shape)).astype(np.float32)  # ties
    for module in (nn.MaxPool2d(3, 2, 1, return_indices=True), nn.MaxPool2d(2, return_indices=True)):
        tmod = torch.nn.MaxPool2d(module.kernel_size, module.stride, module.padding, return_indices=True)
        gx, tx = gc.tensor(x, requires_grad=grad), torch.tensor(x, requires_grad=grad)
        (go, gi), (to, ti) = module(gx), tmod(tx)
        np.testing.assert_array_equal(_np(go), to.detach().numpy())
        assert gi.dtype == gc.int64
        np.testing.assert_array_equal(gi.numpy(), ti.numpy())
        if grad:
            seed = np.random.default_rng(1).standard_normal(to.shape).astype(np.float32)
            go.backward(gc.tensor(seed))
            to.backward(torch.tensor(seed))
            np.testing.assert_allclose(gx.grad.numpy(), tx.grad.numpy(), rtol=1e-6, atol=1e-6)


@torch_mark
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm2d_outputs_grads_and_running_stats_match_torch(training):
    torch = pytest.importorskip("torch")
    tm, gm = torch.nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    with torch.no_grad():
        tm.weight.uniform_(0.5, 1.5)
        tm.bias.uniform_(-1, 1)
        tm.running_mean.uniform_(-1, 1)
        tm.running_var.uniform_(0.5, 2)
    _copy_params(gm, tm)
    tm.train(training)
    gm.train(training)
    for step in range(2):
        _check_fn(gm, tm, [_r(4, 3, 5, 5, seed=step) * 2 + 1])
    for (n, g), (_, t) in zip(gm.named_buffers(), tm.named_buffers(), strict=True):
        np.testing.assert_allclose(g.numpy(), t.numpy(), rtol=1e-5, atol=1e-6, err_msg=n)
    for (n, g), (_, t) in zip(gm.named_parameters(), tm.named_parameters(), strict=True):
        np.testing.assert_allclose(g.grad.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=n)


@torch_mark
def test_batchnorm_cumulative_average_and_no_running_stats_match_torch():
    torch = pytest.importorskip("torch")
    for kw in ({"momentum": None}, {"track_running_stats": False}, {"affine": False}):
        tm, gm = torch.nn.BatchNorm1d(4, **kw), nn.BatchNorm1d(4, **kw)
        for step in range(3):
            x = _r(6, 4, seed=step)
            np.testing.assert_allclose(_np(gm(gc.tensor(x))), tm(torch.tensor(x)).detach().numpy(), atol=1e-5)
        for (n, g), (_, t) in zip(gm.named_buffers(), tm.named_buffers(), strict=True):
            np.testing.assert_allclose(g.numpy(), t.numpy(), rtol=1e-5, atol=1e-6, err_msg=n)
        gm.eval()
        tm.eval()
        x = _r(6, 4, seed=7)
        np.testing.assert_allclose(_np(gm(gc.tensor(x))), tm(torch.tensor(x)).detach().numpy(), atol=1e-5)


def test_batchnorm_numpy_reference():
    """Training normalizes with the biased batch variance and moves running_var toward the
    unbiased one; eval uses the running statistics."""
    x = _r(4, 3, 2, 5, seed=3) * 2 + 1
    bn = nn.BatchNorm2d(3, momentum=0.2)
    y = _np(bn(gc.tensor(x)))
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3))
    np.testing.assert_allclose(y, (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5), atol=1e-5)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.2 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.8 + 0.2 * x.var((0, 2, 3), ddof=1), rtol=1e-5)
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    rm, rv = bn.running_mean.numpy()[:, None, None], bn.running_var.numpy()[:, None, None]
    np.testing.assert_allclose(_np(bn(gc.tensor(x))), (x - rm) / np.sqrt(rv + 1e-5), atol=1e-5)
    assert int(bn.num_batches_tracked) == 1


def test_batchnorm_training_needs_more_than_one_value_per_channel():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm2d(2)(gc.ones(1, 2, 1, 1))
    with pytest.raises(ValueError, match="expected 4D input"):
        nn.BatchNorm2d(2)(gc.ones(3, 2))


@torch_mark
def test_linear_layernorm_embedding_match_torch():
    torch = pytest.importorskip("torch")
    for gmod, tmod, x in [(nn.Linear(5, 3), torch.nn.Linear(5, 3), _r(2, 4, 5)),
                          (nn.LayerNorm([3, 4]), torch.nn.LayerNorm([3, 4]), _r(2, 3, 4))]:
        with torch.no_grad():
            for p in tmod.parameters():
                p.uniform_(-1, 1)
        _copy_params(gmod, tmod)
        _check_fn(gmod, tmod, [x])
        for g, t in zip(gmod.parameters(), tmod.parameters(), strict=True):
            np.testing.assert_allclose(g.grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-5)
    te, ge = torch.nn.Embedding(7, 3, padding_idx=2), nn.Embedding(7, 3, padding_idx=2)
    _copy_params(ge, te)
    idx = np.array([[0, 2, 6], [2, 1, 0]])
    go, to = ge(gc.tensor(idx)), te(torch.tensor(idx))
    np.testing.assert_allclose(_np(go), to.detach().numpy())
    seed = _r(2, 3, 3)
    go.backward(gc.tensor(seed))
    to.backward(torch.tensor(seed))
    np.testing.assert_allclose(ge.weight.grad.numpy(), te.weight.grad.numpy(), atol=1e-6)


@torch_mark
@pytest.mark.parametrize("fn", ["relu", "sigmoid", "tanh", "softmax", "log_softmax"])
def test_activations_match_torch(fn):
    torch = pytest.importorskip("torch")
    kw = {"dim": 1} if "softmax" in fn else {}
    _check_fn(lambda x: getattr(F, fn)(x, **kw), lambda x: getattr(torch.nn.functional, fn)(x, **kw), [_r(3, 5)])


@torch_mark
@pytest.mark.parametrize("backend", [None, "numpy", "jax"])
def test_relu_gradient_at_nan_zero_and_negative_inputs_matches_torch(backend):
    """torch's relu backward zeroes the gradient where the output is <= 0: a NaN passes it on, a zero does not."""
    torch = pytest.importorskip("torch")
    if backend == "jax":
        pytest.importorskip("jax")
    x = np.array([np.nan, 2.0, 0.0, -1.5, -np.inf, np.inf], dtype=np.float32)
    seed = np.arange(1, 7, dtype=np.float32)
    f = lambda t: (F.relu(t) * gc.tensor(seed)).sum()  # noqa: E731
    gx = gc.tensor(x, requires_grad=True)
    (f if backend is None else gc.compile(f, backend=backend))(gx).backward()
    tx = torch.tensor(x, requires_grad=True)
    (torch.relu(tx) * torch.tensor(seed)).sum().backward()
    np.testing.assert_array_equal(gx.grad.numpy(), tx.grad.numpy())


@torch_mark
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_regression_losses_match_torch(reduction):
    torch = pytest.importorskip("torch")
    for name in ("mse_loss", "l1_loss"):
        _check_fn(lambda a, b: getattr(F, name)(a, b, reduction=reduction),
                  lambda a, b: getattr(torch.nn.functional, name)(a, b, reduction=reduction),
                  [_r(4, 3), _r(4, 3, seed=1)])


@torch_mark
@pytest.mark.parametrize("kw", [{}, {"reduction": "sum"}, {"reduction": "none"}, {"ignore_index": 1},
                                {"weight": True}, {"weight": True, "ignore_index": 1, "reduction": "sum"},
                                {"label_smoothing": 0.2}, {"label_smoothing": 0.1, "ignore_index": 1},
                                {"label_smoothing": 0.1, "weight": True}])
def test_cross_entropy_matches_torch(kw):
    torch = pytest.importorskip("torch")
    target = np.array([0, 1, 4, 1, 2, 3])
    w = np.linspace(0.5, 2.0, 5).astype(np.float32)
    for logits, tgt in [(_r(6, 5), target), (_r(3, 5, 2, seed=3), target.reshape(3, 2))]:
        gkw, tkw = dict(kw), dict(kw)
        if kw.get("weight"):
            gkw["weight"], tkw["weight"] = gc.tensor(w), torch.tensor(w)
        _check_fn(lambda x, t: F.cross_entropy(x, t, **gkw),
                  lambda x, t: torch.nn.functional.cross_entropy(x, t, **tkw), [logits, tgt])
    probs = np.random.default_rng(4).dirichlet(np.ones(5), 6).astype(np.float32)
    _check_fn(lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1),
              lambda x, t: torch.nn.functional.cross_entropy(x, t, label_smoothing=0.1), [_r(6, 5), probs])
    loss_mod = nn.CrossEntropyLoss()
    assert abs(float(loss_mod(gc.tensor(_r(6, 5)), gc.tensor(target)).detach())
               - float(torch.nn.CrossEntropyLoss()(torch.tensor(_r(6, 5)), torch.tensor(target)))) < 1e-5


def test_cross_entropy_analytic_and_target_check():
    logits = gc.tensor([[0.0, 0.0], [0.0, np.log(3.0)]], requires_grad=True)
    loss = F.cross_entropy(logits, gc.tensor([0, 1]))
    expected = (np.log(2.0) + np.log(4.0 / 3.0)) / 2
    assert abs(float(loss.detach()) - expected) < 1e-6
    loss.backward()
    np.testing.assert_allclose(logits.grad.numpy(), [[-0.25, 0.25], [0.125, -0.125]], atol=1e-6)
    with pytest.raises(IndexError, match="Target 5 is out of bounds"):
        F.cross_entropy(gc.zeros(2, 3), gc.tensor([0, 5]))


def test_mse_loss_analytic_gradient():
    x = gc.tensor([1.0, 2.0, 3.0], requires_grad=True)
    loss = nn.MSELoss()(x, gc.tensor([0.0, 0.0, 0.0]))
    loss.backward()
    assert abs(float(loss.detach()) - 14 / 3) < 1e-6
    np.testing.assert_allclose(x.grad.numpy(), [2 / 3, 4 / 3, 2.0], rtol=1e-6)


def test_dropout_is_seeded_scaled_and_off_in_eval():
    d = nn.Dropout(0.25)
    x = gc.ones(200, 50)
    gc.manual_seed(3)
    a = d(x).numpy()
    gc.manual_seed(3)
    b = d(x).numpy()
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((a == 0).mean() - 0.25) < 0.02
    d.eval()
    assert d(x) is x
    assert float(F.dropout(x, 1.0).sum()) == 0.0


def test_adaptive_pool_uneven_bins_analytic():
    x = gc.arange(5.0).reshape(1, 1, 1, 5)
    out = F.adaptive_avg_pool2d(x, (1, 3))  # bins [0,2), [1,4), [3,5)
    np.testing.assert_allclose(out.numpy().ravel(), [0.5, 2.0, 3.5])


def test_init_is_reproducible_under_manual_seed_and_bounded():
    gc.manual_seed(123)
    a = nn.Linear(100, 20)
    gc.manual_seed(123)
    b = nn.Linear(100, 20)
    np.testing.assert_array_equal(a.weight.detach().numpy(), b.weight.detach().numpy())
    w = a.weight.detach().numpy()
    assert np.abs(w).max() <= 1 / np.sqrt(100) and w.std() > 0.5 / np.sqrt(300)  # kaiming_uniform(a=sqrt(5))
    assert np.abs(a.bias.detach().numpy()).max() <= 0.1
    c = nn.Conv2d(8, 16, 3)
    nn.init.kaiming_normal_(c.weight, mode="fan_out", nonlinearity="relu")
    assert abs(c.weight.detach().numpy().std() - np.sqrt(2 / (16 * 9))) < 0.02
    bn = nn.BatchNorm2d(4)
    assert bn.weight.tolist() == [1.0] * 4 and bn.bias.tolist() == [0.0] * 4


def test_containers():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    seq.append(nn.Linear(3, 1))
    assert len(seq) == 3 and isinstance(seq[-1], nn.Linear) and isinstance(seq[1:], nn.Sequential)
    assert [type(m).__name__ for m in seq] == ["Linear", "ReLU", "Linear"]
    assert seq(gc.ones(4, 2)).shape == (4, 1)
    del seq[1]
    assert [n for n, _ in seq.named_children()] == ["0", "1"]
    ml = nn.ModuleList([nn.Linear(1, 1) for _ in range(3)])
    md = nn.ModuleDict({"x": nn.Linear(1, 2)})
    holder = nn.Module()
    holder.ml, holder.md = ml, md
    assert len(list(holder.parameters())) == 8 and "md.x.weight" in holder.state_dict()
