"""Directions for loss surfaces: filter normalisation, masks, seeds, interpolation and PCA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from torch import nn

from compute.directions import interpolation_direction, pca_directions, random_direction
from compute.state import flatten_state, layout_of, unflatten
from tracker import SpecError


class ConvNet(nn.Module):
    """Conv + BatchNorm + Linear: tensors of 4, 2 and 1 dimensions, and running statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(5)
        self.fc = nn.Linear(5 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


@pytest.fixture
def net() -> tuple[ConvNet, list, torch.Tensor]:
    torch.manual_seed(0)
    model = ConvNet()
    with torch.no_grad():  # non-trivial running statistics, so buffers are distinguishable
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    layout = layout_of(model)
    return model, layout, flatten_state(model, layout)


def _norms(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).norm(dim=1)


def test_filter_normalised_slices_have_the_weights_norms(net):
    _, layout, centre = net
    d = unflatten(random_direction(layout, centre, seed=3), layout)
    w = unflatten(centre, layout)
    for name in ("conv.weight", "fc.weight"):
        torch.testing.assert_close(_norms(d[name]), _norms(w[name]), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(d[name], w[name])  # rescaled noise, not a copy


def test_biasbn_zeroes_every_tensor_of_at_most_one_dimension(net):
    _, layout, centre = net
    for target in ("weights", "states"):
        d = unflatten(random_direction(layout, centre, seed=1, target=target), layout)
        for e in layout:
            if len(e["shape"]) <= 1:
                assert not d[e["name"]].any(), e["name"]
            else:
                assert d[e["name"]].abs().min() > 0, e["name"]


def test_without_ignore_filter_copies_the_centre_into_one_dimensional_tensors(net):
    _, layout, centre = net
    d = unflatten(random_direction(layout, centre, seed=1, ignore="none"), layout)
    w = unflatten(centre, layout)
    for name in ("conv.bias", "bn.weight", "bn.bias", "fc.bias"):
        assert torch.equal(d[name], w[name])


def test_weights_leave_buffers_zero_and_states_move_them(net):
    _, layout, centre = net
    weights = unflatten(random_direction(layout, centre, seed=2, ignore="none"), layout)
    states = unflatten(
        random_direction(layout, centre, seed=2, ignore="none", target="states"), layout
    )
    w = unflatten(centre, layout)
    for name in ("bn.running_mean", "bn.running_var"):
        assert not weights[name].any()
        assert torch.equal(states[name], w[name])
    # One draw over the whole layout: the parameters' part does not depend on the target.
    for e in layout:
        if e["kind"] == "param":
            assert torch.equal(weights[e["name"]], states[e["name"]])


def test_same_seed_same_direction_other_seed_other_direction(net):
    _, layout, centre = net
    a = random_direction(layout, centre, seed=7)
    assert torch.equal(a, random_direction(layout, centre, seed=7))
    b = random_direction(layout, centre, seed=8)
    assert (a != b).sum() > 0.9 * (a != 0).sum()


def test_layer_model_and_none_normalisations(net):
    _, layout, centre = net
    w = unflatten(centre, layout)
    layer = unflatten(random_direction(layout, centre, seed=4, normalization="layer"), layout)
    for name in ("conv.weight", "fc.weight"):
        torch.testing.assert_close(layer[name].norm(), w[name].norm(), rtol=1e-5, atol=0)
    # per tensor only: the filters keep the noise's own spread
    assert not torch.allclose(_norms(layer["conv.weight"]), _norms(w["conv.weight"]), rtol=1e-3)

    model = random_direction(layout, centre, seed=4, normalization="model")
    moved = model != 0
    torch.testing.assert_close(model.norm(), centre[moved].norm(), rtol=1e-5, atol=0)

    raw = random_direction(layout, centre, seed=4, normalization="none", ignore="none")
    gaussian = torch.randn(centre.numel(), generator=torch.Generator().manual_seed(4))
    # the raw draw on the parameters of two or more dimensions; 1-D tensors are d = w
    multi = torch.cat(
        [
            torch.ones(e["size"])
            if e["kind"] == "param" and len(e["shape"]) > 1
            else torch.zeros(e["size"])
            for e in layout
        ]
    )
    assert torch.equal(raw * multi, gaussian * multi)


@pytest.mark.parametrize("norm", ["filter", "layer", "model", "none"])
@pytest.mark.parametrize("target", ["weights", "states"])
def test_without_ignore_every_norm_copies_the_centre_into_one_dimensional_tensors(
    net, norm, target
):
    # Goldstein's normalize_directions_for_weights sets d = w for biases and BN weights before
    # it looks at the normalisation, so a `--norm layer --ignore none` surface moves them too.
    _, layout, centre = net
    d = unflatten(
        random_direction(layout, centre, seed=5, normalization=norm, ignore="none", target=target),
        layout,
    )
    w = unflatten(centre, layout)
    names = ["conv.bias", "bn.weight", "bn.bias", "fc.bias"]
    if target == "states":
        names += ["bn.running_mean", "bn.running_var"]
    for name in names:
        assert torch.equal(d[name], w[name]), (norm, name)
    for name in ("conv.weight", "fc.weight"):  # the others stay (scaled) noise
        assert not torch.allclose(d[name], w[name]), (norm, name)
    if norm == "model":
        big = torch.cat([d[n].flatten() for n in ("conv.weight", "fc.weight")])
        ref = torch.cat([w[n].flatten() for n in ("conv.weight", "fc.weight")])
        torch.testing.assert_close(big.norm(), ref.norm(), rtol=1e-5, atol=0)


def test_interpolation_is_b_minus_a_on_the_target(net):
    _, layout, a = net
    b = a + torch.linspace(-1, 1, a.numel())
    d = unflatten(interpolation_direction(layout, a, b), layout)
    full = unflatten(b - a, layout)
    for e in layout:
        expected = full[e["name"]] if e["kind"] == "param" else torch.zeros(e["shape"])
        assert torch.equal(d[e["name"]], expected)
    states = interpolation_direction(layout, a, b, target="states")
    assert torch.equal(states, b - a)


def _trajectory(centre: torch.Tensor, n: int = 6) -> torch.Tensor:
    gen = torch.Generator().manual_seed(11)
    steps = torch.randn(n, centre.numel(), generator=gen) * torch.linspace(2.0, 0.1, n)[:, None]
    return centre + steps.cumsum(0).flip(0) * 0.01


def test_pca_matches_sklearn_and_coordinates_reconstruct_the_projection(net):
    _, layout, centre = net
    traj = _trajectory(centre)
    d1, d2, ratio, coords = pca_directions(layout, traj, centre, ignore="none")

    keep = torch.cat(
        [torch.ones(e["size"]) if e["kind"] == "param" else torch.zeros(e["size"]) for e in layout]
    ).bool()
    diffs = (traj - centre)[:, keep].double().numpy()
    reference = PCA(n_components=2, svd_solver="full").fit(diffs)
    np.testing.assert_allclose(ratio.numpy(), reference.explained_variance_ratio_, rtol=1e-6)
    assert ((ratio >= 0) & (ratio <= 1)).all() and float(ratio.sum()) <= 1.0
    for k, d in enumerate((d1, d2)):
        assert d.dtype == torch.float32 and d.numel() == centre.numel()
        assert not d[~keep].any()  # buffers are not part of a 'weights' plane
        cosine = float(np.dot(d[keep].double().numpy(), reference.components_[k]))
        assert abs(cosine) == pytest.approx(1.0, abs=1e-6)

    basis = torch.stack([d1, d2]).double()
    torch.testing.assert_close(
        basis @ basis.T, torch.eye(2, dtype=torch.float64), atol=1e-6, rtol=0
    )
    # Each checkpoint's coordinates give its orthogonal projection onto the plane.
    plane = np.linalg.qr(basis.T.numpy())[0]
    projection = (traj - centre).double().numpy() @ plane @ plane.T
    np.testing.assert_allclose(coords.numpy() @ basis.numpy(), projection, atol=1e-6)


def test_pca_with_biasbn_leaves_one_dimensional_tensors_out(net):
    _, layout, centre = net
    d1, d2, ratio, coords = pca_directions(layout, _trajectory(centre), centre)
    for d in (d1, d2):
        parts = unflatten(d, layout)
        for e in layout:
            assert (len(e["shape"]) > 1) == bool(parts[e["name"]].any()), e["name"]
    assert coords.shape == (6, 2) and ratio.shape == (2,)


def test_wrong_lengths_and_choices_raise_spec_errors(net):
    _, layout, centre = net
    with pytest.raises(SpecError, match="different architectures"):
        random_direction(layout, centre[:-1], seed=0)
    with pytest.raises(SpecError, match="normalization"):
        random_direction(layout, centre, seed=0, normalization="filters")
    with pytest.raises(SpecError, match="different architectures"):
        interpolation_direction(layout, centre, torch.zeros(centre.numel() + 1))
    with pytest.raises(SpecError, match="different architectures"):
        pca_directions(layout, _trajectory(centre)[:, 1:], centre)
    with pytest.raises(SpecError, match="at least 3 checkpoints"):
        pca_directions(layout, _trajectory(centre)[:2], centre)
    with pytest.raises(SpecError, match="span a plane"):
        pca_directions(layout, centre.repeat(4, 1), centre)


@pytest.mark.parametrize("ignore", ["biasbn", "none"])
def test_filter_std_scales_each_filter_of_the_draw_by_its_weights_std(net, ignore):
    """Issue 14 item 7: seed 001's direction, d_i = std(theta_i) z_i per filter (whole tensor
    for biases), the same Gaussian draw z as the other normalisations."""
    _, layout, centre = net
    d = random_direction(layout, centre, seed=4, normalization="filter-std", ignore=ignore)
    raw = random_direction(layout, centre, seed=4, normalization="none", ignore=ignore)
    z = torch.randn(centre.shape[0], generator=torch.Generator().manual_seed(4))
    for entry in layout:
        part = slice(entry["offset"], entry["offset"] + entry["size"])
        name, shape = entry["name"], entry["shape"]
        if not name.endswith(("weight", "bias")) or (len(shape) <= 1 and ignore == "biasbn"):
            assert not d[part].any(), name  # buffers and ignored tensors stay put
            continue
        w = centre[part].reshape(shape[0] if len(shape) > 1 else 1, -1)
        expected = z[part].reshape(w.shape) * w.double().std(dim=1, keepdim=True).float()
        torch.testing.assert_close(d[part].reshape(w.shape), expected)
        if len(shape) > 1:
            torch.testing.assert_close(raw[part], z[part])  # 'none' is the bare draw
    assert not torch.equal(d, random_direction(layout, centre, seed=4, normalization="filter"))
