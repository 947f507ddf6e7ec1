"""The Gauss-Newton trace (compute.curvature, ``estimator='gauss-newton'``) and the
piecewise-linearity check behind it (compute.piecewise), against exact Hessians and exact
Gauss-Newton matrices of small networks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from compute.curvature import HessianOperator, _prepared, hutchinson_trace
from compute.models import build_model
from compute.piecewise import nonlinearity
from tracker import SpecError


def _relu_mlp(classes: int = 3) -> nn.Module:
    return build_model("mlp", {"widths": [12, 12], "activation": "relu"}, input_shape=(5,),
                       num_classes=classes, seed=0).double()  # fmt: skip


def _data(n: int = 64, classes: int = 3, mse: bool = False):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    y = (torch.randn(n, classes, generator=g, dtype=torch.float64) if mse
         else torch.randint(0, classes, (n,), generator=g))  # fmt: skip
    return x, y


class _ResidualCNN(nn.Module):
    """Convolution, BatchNorm (eval), ReLU, a residual sum, max and average pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.fc = nn.Linear(3 * 2 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.max_pool2d(F.relu(h + self.conv2(h)), 2)
        return self.fc(F.avg_pool2d(h, 2).flatten(1))


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    model = _ResidualCNN().double()
    with torch.no_grad():  # running statistics unlike the data's, as after training
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn1.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _flat_function(model: nn.Module, x: torch.Tensor):
    named = list(model.named_parameters())
    theta = torch.cat([p.detach().reshape(-1) for _, p in named])
    buffers = dict(model.named_buffers())

    def outputs(t: torch.Tensor) -> torch.Tensor:
        parts = t.split([p.numel() for _, p in named])
        params = {k: v.view(p.shape) for (k, p), v in zip(named, parts, strict=True)}
        return functional_call(model.eval(), (params, buffers), (x,))

    return theta, outputs


def _loss(out: torch.Tensor, y: torch.Tensor, mse: bool) -> torch.Tensor:
    return (out - y).square().mean() if mse else F.cross_entropy(out, y)


def _exact_h_and_g(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mse: bool):
    """The exact Hessian of the mean loss and the exact Gauss-Newton matrix J^T H_L J."""
    theta, outputs = _flat_function(model, x)
    h = torch.autograd.functional.hessian(lambda t: _loss(outputs(t), y, mse), theta, vectorize=True)
    out = outputs(theta).detach()
    jac = torch.autograd.functional.jacobian(outputs, theta, vectorize=True).reshape(out.numel(), -1)
    h_out = torch.autograd.functional.hessian(lambda o: _loss(o.view(out.shape), y, mse),
                                              out.reshape(-1))  # fmt: skip
    return h.numpy(), (jac.T @ h_out @ jac).numpy()


@pytest.mark.parametrize("case", ["mlp-ce", "mlp-mse", "cnn-ce"])
def test_piecewise_linear_networks_have_the_gauss_newton_diagonal(case) -> None:
    """The premise: for a network piecewise linear in each parameter tensor the Hessian's
    diagonal blocks (per parameter tensor) are the Gauss-Newton matrix's, though H != G; a
    tanh network is refused, and its diagonals differ."""
    mse = case.endswith("mse")
    model = _cnn() if case.startswith("cnn") else _relu_mlp()
    x, y = (torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(3),
                        dtype=torch.float64), torch.arange(16) % 3) if case.startswith("cnn") \
        else _data(32, mse=mse)  # fmt: skip
    h, g = _exact_h_and_g(model, x, y, mse)
    assert np.abs(h - g).max() > 1e-3 * np.abs(h).max()  # the residual term is there
    sizes = [p.numel() for p in model.parameters()]
    lo = 0
    for size in sizes:  # every diagonal block, hence every diagonal entry
        block = slice(lo, lo + size)
        np.testing.assert_allclose(h[block, block], g[block, block], atol=1e-10, rtol=1e-8)
        lo += size
    prepared = _prepared(model, "eval")
    assert nonlinearity(prepared, dict(prepared.named_parameters()),
                        dict(prepared.named_buffers()), x[:1]) is None  # fmt: skip

    tanh = build_model("mlp", {"widths": [12, 12], "activation": "tanh"}, input_shape=(5,),
                       num_classes=3, seed=0).double()  # fmt: skip
    xt, yt = _data(32)
    ht, gt = _exact_h_and_g(tanh, xt, yt, False)
    assert np.abs(np.diag(ht) - np.diag(gt)).max() > 1e-4
    assert HessianOperator(tanh, xt, yt).gauss_newton_refusal() == "tanh"


def _refusal(model: nn.Module, x: torch.Tensor, bn: str = "eval") -> str | None:
    prepared = _prepared(model, bn)
    return nonlinearity(prepared, dict(prepared.named_parameters()),
                        dict(prepared.named_buffers()), x)  # fmt: skip


class _Square(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        return h * h


class _Gated(nn.Module):
    """a(x) * b(x): bilinear in two parameter tensors, linear in each."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) * self.b(x)


class _Normalised(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        return h / h.norm(dim=1, keepdim=True)


class _Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.spare = nn.Linear(4, 3), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_the_check_accepts_relu_networks_and_names_what_is_not_piecewise_linear() -> None:
    x4 = torch.randn(2, 4)
    shared = nn.Linear(4, 4)
    for model, x in (
        (build_model("resnet20", {}, input_shape=(3, 32, 32), num_classes=10, seed=0),
         torch.randn(1, 3, 32, 32)),
        (build_model("cnn", {"channels": [4], "hidden": [8], "batchnorm": True},
                     input_shape=(1, 8, 8), num_classes=3, seed=0), torch.randn(1, 1, 8, 8)),
        (nn.Sequential(nn.Linear(4, 5), nn.LeakyReLU(), nn.Dropout(0.5), nn.Linear(5, 3)), x4),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.ReLU6(), nn.Flatten(),
                       nn.Linear(18, 3)), torch.randn(2, 1, 8, 8)),
        (_Gated(), x4),
        (torchvision.models.resnet18(num_classes=10), torch.randn(1, 3, 32, 32)),
        (torchvision.models.densenet121(num_classes=10), torch.randn(1, 3, 32, 32)),
    ):  # fmt: skip
        assert _refusal(model, x) is None, type(model).__name__
    bn = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
    for model, x, bn_mode, reason in (
        (nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)), x4, "eval", "tanh"),
        (nn.Sequential(nn.Linear(4, 5), nn.GELU(), nn.Linear(5, 3)), x4, "eval", "gelu"),
        (nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 3)), x4, "eval",
         "layer_norm"),
        (nn.Sequential(nn.Linear(4, 5), nn.Softmax(dim=1)), x4, "eval", "softmax"),
        (bn, torch.randn(3, 4), "train", "batch statistics (BatchNorm in train mode)"),
        (nn.Sequential(shared, nn.ReLU(), shared), x4, "eval",
         "linear with parameter '0.weight' in two factors"),
        (_Square(), x4, "eval", "mul with parameter 'fc.bias' in two factors"),
        (_Normalised(), x4, "eval", "norm"),
        (_Unused(), x4, "eval", "parameter 'spare.weight' is not used by the forward pass"),
        (torchvision.models.mobilenet_v3_small(num_classes=10), torch.randn(1, 3, 32, 32),
         "eval", "hardswish"),
    ):  # fmt: skip
        assert _refusal(model, x, bn_mode) == reason, type(model).__name__
    assert _refusal(bn, torch.randn(3, 4), "eval") is None


@pytest.mark.parametrize("mse", [False, True])
def test_the_gauss_newton_trace_estimates_the_exact_hessian_trace(mse) -> None:
    model, (x, y) = _relu_mlp(), _data(mse=mse)
    loss = "mse" if mse else "cross_entropy"
    h, _ = _exact_h_and_g(model, x, y, mse)
    op = HessianOperator(model, x, y, loss=loss)
    assert op.gauss_newton_refusal() is None
    result = hutchinson_trace(op, 4000, seed=4, per_layer=True)
    assert result.config["estimator"] == "gauss-newton"
    assert result.config["gauss_newton_refused"] is None
    assert op.gn_count == 4000 and op.hvp_count == 0  # no Hessian-vector product at all
    exact = float(np.trace(h))
    assert abs(result.trace - exact) <= 4 * result.stderr and result.stderr < 0.05 * exact
    assert math.isclose(sum(result.layer_traces.values()), result.trace, rel_tol=1e-9)
    for name, block in op.layers().items():
        part = float(np.trace(h[block, block]))
        assert abs(result.layer_traces[name] - part) <= 4 * result.layer_stderr[name], name
    # The same probes through the Hessian: also unbiased, here with a larger error.
    hessian = hutchinson_trace(op, 4000, seed=4, estimator="hessian")
    assert hessian.config["estimator"] == "hessian" and op.hvp_count == 4000
    assert abs(hessian.trace - exact) <= 4 * hessian.stderr
    assert result.stderr < hessian.stderr


def test_sample_batches_kept_or_rebuilt_give_the_same_probes_and_bitwise_reruns() -> None:
    """Batches of 20, 20, 20, 4 with weights by size: each probe's value is the one-batch
    value to rounding, whether the forward graphs are kept or rebuilt per probe block, and a
    rerun at the same settings repeats the bits."""
    model, (x, y) = _relu_mlp(), _data()
    base = hutchinson_trace(HessianOperator(model, x, y), 30, seed=9).samples
    for kwargs in ({"batch_size": 20}, {"batch_size": 20, "graph_budget": 0},
                   {"probe_block": 8}, {"graph_budget": 0, "probe_block": 4}):  # fmt: skip
        op = HessianOperator(model, x, y, **kwargs)
        assert op.keep_graphs == ("graph_budget" not in kwargs)
        runs = [hutchinson_trace(op, 30, seed=9).samples for _ in range(2)]
        assert np.array_equal(runs[0], runs[1])
        np.testing.assert_allclose(runs[0], base, rtol=1e-10)
    other = hutchinson_trace(HessianOperator(model, x, y), 30, seed=10).samples
    assert not np.array_equal(other, base)


def test_estimators_are_chosen_and_refused_by_the_network() -> None:
    x, y = _data()
    tanh = build_model("mlp", {"widths": [12], "activation": "tanh"}, input_shape=(5,),
                       num_classes=3, seed=0).double()  # fmt: skip
    op = HessianOperator(tanh, x, y)
    auto = hutchinson_trace(op, 10)
    assert auto.config["estimator"] == "hessian"
    assert auto.config["gauss_newton_refused"] == "tanh"
    with pytest.raises(SpecError, match=r"^the Gauss-Newton trace equals the Hessian's only "
                       r"for a piecewise-linear network, and this one is not \(tanh\)"):  # fmt: skip
        hutchinson_trace(op, 10, estimator="gauss-newton")
    with pytest.raises(SpecError, match="unknown trace estimator 'ggn'"):
        hutchinson_trace(op, 10, estimator="ggn")
    relu = HessianOperator(_relu_mlp(), x, y, bn="train")  # no BatchNorm: still linear
    assert relu.gauss_newton_refusal() is None
    bn = build_model("cnn", {"channels": [4], "hidden": [8], "batchnorm": True},
                     input_shape=(1, 8, 8), num_classes=3, seed=0)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    xi, yi = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
    assert HessianOperator(bn, xi, yi).gauss_newton_refusal() is None
    assert HessianOperator(bn, xi, yi, bn="train").gauss_newton_refusal() == (
        "batch statistics (BatchNorm in train mode)"
    )
