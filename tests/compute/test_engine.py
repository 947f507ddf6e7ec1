"""The surface engine: its values against a plain recomputation, its strategies against each
other, determinism, BatchNorm policy and input checks."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compute.directions import random_direction
from compute.engine import SurfaceEvaluator
from compute.state import flatten_state, layout_of, load_flat
from tracker import SpecError

# --------------------------------------------------------------------------- models


class ProtocolMLP(nn.Module):
    """An MLP with the first-affine protocol."""

    first_affine = "fc1"

    def __init__(self, d_in: int = 16, width: int = 24, out: int = 5) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, width)
        self.rest = nn.Sequential(
            nn.Tanh(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, out)
        )

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def forward_after_first(self, z: torch.Tensor) -> torch.Tensor:
        return self.rest(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_after_first(self.fc1(self.prepare_input(x)))


class ProtocolCNN(nn.Module):
    """A small CNN with BatchNorm (2d and 1d) and max pooling, with the protocol."""

    first_affine = "conv1"

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 6, 3, padding=1)
        self.body = nn.Sequential(
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8 * 3 * 3, 12),
            nn.BatchNorm1d(12),
            nn.ReLU(),
            nn.Linear(12, 4),
        )

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_after_first(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_after_first(self.conv1(x))


class PlainNet(nn.Module):
    """No protocol, but its input goes straight into a convolution: the engine finds the
    first-affine shortcut itself (torch.fx)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.bn(self.conv(x))).flatten(1))


class InputNormNet(PlainNet):
    """No protocol, and the input is normalised before the first convolution: the engine must
    fall back to the plain forward."""

    def __init__(self) -> None:
        super().__init__()
        self.bn_in = nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.bn_in(x))


def _settle_running_stats(model: nn.Module, x: torch.Tensor) -> None:
    """A few training-mode passes so running statistics differ from their 0/1 defaults."""
    model.train()
    with torch.no_grad():
        for k in range(3):
            model(x * (1.0 + 0.2 * k) + 0.1 * k)
    model.eval()


def _problem(kind: str, n: int = 40, groups: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "mlp":
        model: nn.Module = ProtocolMLP()
        x = torch.randn(groups * n, 16)
        classes = 5
    else:
        model = {"cnn": ProtocolCNN, "plain": PlainNet, "input-norm": InputNormNet}[kind]()
        x = torch.randn(groups * n, 2, 6, 6)
        classes = 4
        _settle_running_stats(model, x)
    y = torch.randint(0, classes, (groups * n,))
    layout = layout_of(model)
    centre = flatten_state(model, layout)
    pairs = [(x[i * n : (i + 1) * n], y[i * n : (i + 1) * n]) for i in range(groups)]
    return model, layout, centre, pairs


def _directions(layout, centre, target="weights", ignore="biasbn", count=2):
    return [
        random_direction(layout, centre, seed=s, target=target, ignore=ignore)
        for s in range(1, count + 1)
    ]


COORDS = np.array([[0.0, 0.0], [0.4, -0.2], [-0.7, 0.9], [1.0, 1.0], [-0.3, -0.6]])


def _recompute(model, layout, centre, directions, pairs, coords, bn_mode, loss="cross_entropy"):
    """Loss and accuracy by hand: a fresh copy loaded with centre + a d1 + b d2, one forward."""
    losses = np.zeros((len(pairs), len(coords)))
    accs = np.zeros_like(losses)
    for p, point in enumerate(coords):
        flat = centre.clone()
        for c, d in zip(point, directions, strict=True):
            flat = flat + float(c) * d
        net = copy.deepcopy(model)
        load_flat(net, flat, layout)
        net.eval()
        for g, (x, y) in enumerate(pairs):
            if bn_mode == "train":
                net = copy.deepcopy(net)  # batch statistics from exactly this group
                for m in net.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.train()
            with torch.no_grad():
                out = net(x)
            if loss == "cross_entropy":
                losses[g, p] = F.cross_entropy(out, y).item()
                accs[g, p] = (out.argmax(1) == y).double().mean().item()
            elif loss == "softmax_mse":
                diff = out.softmax(1) - F.one_hot(y, out.shape[1]).to(out.dtype)
                losses[g, p] = (diff * diff).mean().item()
                accs[g, p] = (out.argmax(1) == y).double().mean().item()
            else:
                losses[g, p] = F.mse_loss(out, y).item()
    return losses, accs


def _evaluator(model, layout, centre, directions, pairs, **kwargs):
    options = {"loss": "cross_entropy", "bn_mode": "eval", "device": "cpu"}
    options.update(kwargs)
    return SurfaceEvaluator(model, layout, centre, directions, pairs, **options)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("kind", ["mlp", "cnn", "plain", "input-norm"])
@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_values_equal_a_plain_recomputation(kind, bn_mode):
    model, layout, centre, pairs = _problem(kind)
    directions = _directions(layout, centre)
    expected_loss, expected_acc = _recompute(
        model, layout, centre, directions, pairs, COORDS, bn_mode
    )
    for strategy in ("loop", "vmap"):
        ev = _evaluator(
            model, layout, centre, directions, pairs, bn_mode=bn_mode, strategy=strategy
        )
        out = ev.evaluate(COORDS)
        assert out["loss"].shape == out["acc"].shape == (2, len(COORDS))
        assert out["loss"].dtype == np.float64
        np.testing.assert_allclose(out["loss"], expected_loss, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["acc"], expected_acc, atol=1.01 / 40)
    assert ev.plan["first_affine"] is (kind != "input-norm")
    source = {"mlp": "protocol", "cnn": "protocol", "plain": "traced"}.get(kind, "not found")
    assert ev.plan["first_affine_source"].startswith(source)


def test_states_directions_move_the_running_statistics():
    model, layout, centre, pairs = _problem("cnn")
    directions = _directions(layout, centre, target="states", ignore="none")
    expected, _ = _recompute(model, layout, centre, directions, pairs, COORDS, "eval")
    weights_only, _ = _recompute(
        model, layout, centre, _directions(layout, centre, ignore="none"), pairs, COORDS, "eval"
    )
    assert np.abs(expected - weights_only).max() > 1e-3  # the buffers' share is visible
    for strategy in ("loop", "vmap"):
        out = _evaluator(model, layout, centre, directions, pairs, strategy=strategy).evaluate(
            COORDS
        )
        np.testing.assert_allclose(out["loss"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("ignore", ["biasbn", "none"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "softmax_mse"])
def test_registry_mlp_fast_paths_equal_a_plain_recomputation(activation, ignore, loss):
    """The registry MLP runs its own in-place loop forward and its own batched forward (no
    vmap), both feature-major (logits stored [classes, N]); parameters the directions leave
    alone (biases under biasbn) keep their values."""
    from compute.models import build_model

    classes = 1 if loss == "mse" else 10
    model = build_model(
        "mlp", {"widths": [24, 16], "activation": activation},
        input_shape=(1, 4, 4), num_classes=classes, seed=1,
    ).eval()  # fmt: skip
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(40, 1, 4, 4, generator=gen)
    if loss == "mse":
        y = torch.randn(40, 1, generator=gen)
    else:
        y = torch.randint(0, classes, (40,), generator=gen)
    layout = layout_of(model)
    centre = flatten_state(model, layout)
    directions = _directions(layout, centre, ignore=ignore)
    expected, expected_acc = _recompute(
        model, layout, centre, directions, [(x, y)], COORDS, "eval", loss
    )
    for strategy, k in (("loop", None), ("vmap", 2), ("vmap", None)):
        ev = _evaluator(
            model, layout, centre, directions, [(x, y)],
            loss=loss, strategy=strategy, points_per_call=k,
        )  # fmt: skip
        if strategy == "vmap":
            assert ev.plan["batched_by"].startswith("the model")
        out = ev.evaluate(COORDS)
        np.testing.assert_allclose(out["loss"], expected, rtol=1e-5, atol=1e-6)
        if loss != "mse":
            np.testing.assert_allclose(out["acc"], expected_acc, atol=1.01 / 40)


def test_mlp_inference_steps_follow_rebound_parameters():
    """The MLP binds its in-place inference steps once per input buffer; a parameter given new
    storage afterwards is seen (the steps are rebound), and the logits equal the plain forward."""
    from compute.models import build_model

    model = build_model("mlp", {"widths": [8]}, input_shape=(6,), num_classes=3, seed=2).eval()
    z_in = torch.randn(5, 8, generator=torch.Generator().manual_seed(3))
    scratch: dict = {}
    with torch.inference_mode():
        buffer = z_in.clone()
        first = model.infer_after_first(buffer, scratch).clone()
        torch.testing.assert_close(first, model.forward_after_first(z_in), rtol=1e-6, atol=1e-6)
        model.body[1].weight.data = model.body[1].weight.data * 2.0
        buffer.copy_(z_in)
        second = model.infer_after_first(buffer, scratch)
        torch.testing.assert_close(second, model.forward_after_first(z_in), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(first, second)


def test_mse_loss_on_a_regression_model():
    torch.manual_seed(3)
    model = ProtocolMLP(d_in=16, width=24, out=1)
    x, y = torch.randn(30, 16), torch.randn(30, 1)
    layout = layout_of(model)
    centre = flatten_state(model, layout)
    directions = _directions(layout, centre)
    expected, _ = _recompute(model, layout, centre, directions, [(x, y)], COORDS, "eval", "mse")
    for strategy in ("loop", "vmap"):
        out = _evaluator(
            model, layout, centre, directions, [(x, y)], loss="mse", strategy=strategy
        ).evaluate(COORDS)
        np.testing.assert_allclose(out["loss"], expected, rtol=1e-5, atol=1e-6)
        assert np.isnan(out["acc"]).all()


# --------------------------------------------------------------------------- strategies


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_loop_vmap_and_first_affine_agree_in_float32(kind, bn_mode):
    model, layout, centre, pairs = _problem(kind, n=48)
    directions = _directions(layout, centre, ignore="none")
    grid = np.linspace(-1.0, 1.0, 4)
    coords = np.array([(a, b) for b in grid for a in grid])
    results = {}
    for strategy in ("loop", "vmap"):
        for first in (False, True):
            ev = _evaluator(
                model, layout, centre, directions, pairs,
                bn_mode=bn_mode, strategy=strategy, first_affine=first, points_per_call=3,
            )  # fmt: skip
            assert ev.plan["strategy"] == strategy and ev.plan["first_affine"] is first
            results[strategy, first] = ev.evaluate(coords)
    reference = results["loop", False]
    for key, out in results.items():
        np.testing.assert_allclose(
            out["loss"], reference["loss"], rtol=1e-5, atol=1e-5, err_msg=str(key)
        )
        # a flipped arg-max on a near tie moves accuracy by one sample at most
        assert np.abs(out["acc"] - reference["acc"]).max() <= 1.01 / 48, key


def test_one_direction_gives_a_line():
    model, layout, centre, pairs = _problem("mlp")
    (direction,) = _directions(layout, centre, count=1)
    xs = np.linspace(-1, 1, 7)[:, None]
    expected, _ = _recompute(model, layout, centre, [direction], pairs, xs, "eval")
    for strategy in ("loop", "vmap"):
        out = _evaluator(model, layout, centre, [direction], pairs, strategy=strategy).evaluate(xs)
        np.testing.assert_allclose(out["loss"], expected, rtol=1e-5, atol=1e-6)


def test_auto_plan_follows_group_size_and_model_kind():
    model, layout, centre, pairs = _problem("mlp", n=100, groups=1)
    directions = _directions(layout, centre)
    small = _evaluator(model, layout, centre, directions, pairs)
    assert small.plan["strategy"] == "vmap" and small.plan["points_per_call"] == 16
    assert small.plan["first_affine"] is True
    x, y = pairs[0]
    large = _evaluator(model, layout, centre, directions, [(x.repeat(3, 1), y.repeat(3))])
    assert large.plan["strategy"] == "loop" and large.plan["points_per_call"] == 1
    cnn, cnn_layout, cnn_centre, cnn_pairs = _problem("cnn")
    conv = _evaluator(cnn, cnn_layout, cnn_centre, _directions(cnn_layout, cnn_centre), cnn_pairs)
    assert conv.plan["strategy"] == "loop" and conv.plan["channels_last"] is True
    plain, p_layout, p_centre, p_pairs = _problem("input-norm")
    fallback = _evaluator(plain, p_layout, p_centre, _directions(p_layout, p_centre), p_pairs)
    assert fallback.plan["first_affine"] is False
    assert "protocol" in fallback.plan["first_affine_note"]
    assert "BatchNorm2d, not Linear or Conv2d" in fallback.plan["first_affine_source"]


def test_a_tight_memory_budget_turns_the_first_affine_cache_off():
    model, layout, centre, pairs = _problem("mlp")
    directions = _directions(layout, centre)
    ev = _evaluator(model, layout, centre, directions, pairs, max_memory_bytes=4096)
    assert ev.plan["first_affine"] is False and "budget" in ev.plan["first_affine_note"]
    assert ev.plan["sample_batch"] < 40  # eval mode: the group runs in sample batches
    expected, _ = _recompute(model, layout, centre, directions, pairs, COORDS, "eval")
    np.testing.assert_allclose(ev.evaluate(COORDS)["loss"], expected, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize(
    ("kind", "strategy", "first"),
    [("mlp", "vmap", True), ("mlp", "vmap", False), ("cnn", "vmap", True), ("cnn", "loop", True),
     ("mlp", "loop", False)],
)  # fmt: skip
def test_results_are_bitwise_identical_across_repeats_and_tilings(kind, strategy, first):
    model, layout, centre, pairs = _problem(kind)
    directions = _directions(layout, centre)
    # Grid rows (y outer, x inner), as tiles send them; the tiles below cut rows in the middle.
    coords = np.array([(a, b) for b in (-0.5, 0.1, 0.8) for a in np.linspace(-1, 1, 4)])[:11]
    ev = _evaluator(
        model, layout, centre, directions, pairs,
        strategy=strategy, first_affine=first, points_per_call=4,
    )  # fmt: skip
    whole = ev.evaluate(coords)
    again = ev.evaluate(coords)
    assert np.array_equal(whole["loss"], again["loss"]) and np.array_equal(
        whole["acc"], again["acc"]
    )
    # Tiles that cut the K-point chunks elsewhere, evaluated by a fresh evaluator.
    other = _evaluator(
        model, layout, centre, directions, pairs,
        strategy=strategy, first_affine=first, points_per_call=4,
    )  # fmt: skip
    tiles = [other.evaluate(coords[s]) for s in (slice(0, 5), slice(5, 6), slice(6, 11))]
    assert np.array_equal(np.concatenate([t["loss"] for t in tiles], axis=1), whole["loss"])
    assert np.array_equal(np.concatenate([t["acc"] for t in tiles], axis=1), whole["acc"])


@pytest.mark.parametrize(
    ("kind", "strategy", "bn_mode"),
    [("mlp", "loop", "eval"), ("mlp", "vmap", "eval"), ("cnn", "loop", "train"),
     ("cnn", "vmap", "eval")],
)  # fmt: skip
def test_point_threads_give_the_same_bytes_as_one_thread(kind, strategy, bn_mode):
    model, layout, centre, pairs = _problem(kind)
    directions = _directions(layout, centre, target="states", ignore="none")
    coords = np.array([(a, b) for b in (-0.5, 0.1, 0.8) for a in np.linspace(-1, 1, 4)])[:11]
    old = torch.get_num_threads()
    results = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            ev = _evaluator(
                model, layout, centre, directions, pairs,
                strategy=strategy, bn_mode=bn_mode, points_per_call=2,
            )  # fmt: skip
            assert ev.plan["point_threads"] == threads
            results[threads] = ev.evaluate(coords)
            assert torch.get_num_threads() == threads  # restored after the points ran
            assert torch.equal(flatten_state(ev.model, layout), centre)
    finally:
        torch.set_num_threads(old)
    assert results[1]["loss"].tobytes() == results[2]["loss"].tobytes()
    assert results[1]["acc"].tobytes() == results[2]["acc"].tobytes()


def test_point_threads_are_capped_by_the_memory_budget():
    model, layout, centre, pairs = _problem("mlp")
    directions = _directions(layout, centre)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        roomy = _evaluator(model, layout, centre, directions, pairs, strategy="loop")
        tight = _evaluator(
            model, layout, centre, directions, pairs, strategy="loop", max_memory_bytes=4096
        )
    finally:
        torch.set_num_threads(old)
    assert roomy.plan["point_threads"] == 2
    assert tight.plan["point_threads"] == 1  # one more flat copy alone exceeds 4 KiB
    assert roomy.evaluate(COORDS)["loss"].shape == (2, len(COORDS))


# --------------------------------------------------------------------------- BatchNorm


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_train_mode_uses_batch_statistics_and_never_writes_running_ones(strategy):
    model, layout, centre, pairs = _problem("cnn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    directions = _directions(layout, centre, target="states", ignore="none")
    ev = _evaluator(model, layout, centre, directions, pairs, bn_mode="train", strategy=strategy)
    train = ev.evaluate(COORDS)
    # The working copy is back at the centre, running statistics included, bit for bit.
    assert torch.equal(flatten_state(ev.model, layout), centre)
    counters = [
        m.num_batches_tracked for m in ev.model.modules() if hasattr(m, "num_batches_tracked")
    ]
    assert counters and all(int(c) == 3 for c in counters)  # the 3 settling passes only
    # The caller's model is untouched.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # Batch statistics really differ from the running ones.
    eval_mode = _evaluator(model, layout, centre, directions, pairs, strategy=strategy)
    assert np.abs(train["loss"] - eval_mode.evaluate(COORDS)["loss"]).max() > 1e-3


# --------------------------------------------------------------------------- input checks


def test_mismatched_lengths_and_shapes_raise_spec_errors():
    model, layout, centre, pairs = _problem("mlp")
    directions = _directions(layout, centre)
    with pytest.raises(SpecError, match="different architectures"):
        _evaluator(model, layout, centre, [directions[0][:-1], directions[1]], pairs)
    with pytest.raises(SpecError, match="different architectures"):
        _evaluator(model, layout, torch.cat([centre, torch.zeros(2)]), directions, pairs)
    with pytest.raises(SpecError, match="1 or 2 directions"):
        _evaluator(model, layout, centre, [*directions, directions[0]], pairs)
    x, y = pairs[0]
    with pytest.raises(SpecError, match="same, non-zero number of samples"):
        _evaluator(model, layout, centre, directions, [(x, y[:-1])])
    with pytest.raises(SpecError, match="integer class labels"):
        _evaluator(model, layout, centre, directions, [(x, y.float())])
    other = ProtocolMLP(d_in=16, width=23)
    with pytest.raises(SpecError, match="does not match the layout"):
        _evaluator(other, layout, centre, directions, pairs)
    with pytest.raises(SpecError, match="strategy"):
        _evaluator(model, layout, centre, directions, pairs, strategy="fast")
    ev = _evaluator(model, layout, centre, directions, pairs)
    with pytest.raises(SpecError, match=r"shape \[points, 2\]"):
        ev.evaluate(np.zeros((4, 1)))
    with pytest.raises(SpecError, match="NaN"):
        ev.evaluate(np.array([[0.0, np.nan]]))
    assert ev.evaluate(np.zeros((0, 2)))["loss"].shape == (2, 0)


def test_directions_that_move_nothing_give_the_centre_everywhere():
    model, layout, centre, pairs = _problem("plain")
    zero = torch.zeros_like(centre)
    centre_only, _ = _recompute(model, layout, centre, [zero], pairs, np.zeros((1, 1)), "eval")
    for strategy in ("loop", "vmap"):
        ev = _evaluator(model, layout, centre, [zero, zero], pairs, strategy=strategy)
        out = ev.evaluate(COORDS)
        np.testing.assert_allclose(
            out["loss"], np.repeat(centre_only, len(COORDS), axis=1), rtol=1e-6
        )


def test_reduced_precision_is_gpu_only_and_recorded_in_the_plan():
    model, layout, centre, pairs = _problem("mlp")
    dirs = _directions(layout, centre)
    exact = _evaluator(model, layout, centre, dirs, pairs).evaluate(COORDS)
    asked = _evaluator(model, layout, centre, dirs, pairs, precision="bf16")
    assert asked.plan["precision"] == "fp32" and "needs a GPU" in asked.plan["precision_note"]
    got = asked.evaluate(COORDS)
    assert got["loss"].tobytes() == exact["loss"].tobytes()
    with pytest.raises(SpecError, match="precision"):
        _evaluator(model, layout, centre, dirs, pairs, precision="fp8")


def test_exact_float32_turns_tf32_off_on_a_gpu_device_only_and_restores_it():
    """cuDNN computes float32 convolutions in TF32 by default on recent GPUs; fp32 surfaces
    and curvature turn it off for their block. The flags are process-wide settings (no GPU
    is needed to read or set them)."""
    from compute.threads import exact_float32

    flags = torch.backends.cuda.matmul, torch.backends.cudnn
    before = tuple(f.allow_tf32 for f in flags)
    try:
        for f in flags:
            f.allow_tf32 = True
        with exact_float32("cuda:0"):
            assert [f.allow_tf32 for f in flags] == [False, False]
        assert [f.allow_tf32 for f in flags] == [True, True]
        with exact_float32("cpu"):
            assert [f.allow_tf32 for f in flags] == [True, True]
        with pytest.raises(RuntimeError, match="inside"), exact_float32(torch.device("cuda")):
            raise RuntimeError("inside")
        assert [f.allow_tf32 for f in flags] == [True, True]
    finally:
        for f, value in zip(flags, before, strict=True):
            f.allow_tf32 = value


# --------------------------------------------------------------------------- any nn.Module


class TorchvisionStyle(nn.Module):
    """A network written as people write them: nn.Flatten, then nn.Sequential of layers."""

    def __init__(self) -> None:
        super().__init__()
        self.flat = nn.Flatten()
        self.layers = nn.Sequential(nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.flat(x))


def test_a_traced_first_affine_gives_the_plain_paths_numbers():
    torch.manual_seed(3)
    model = TorchvisionStyle()
    x, y = torch.randn(30, 4, 4), torch.randint(0, 5, (30,))
    layout = layout_of(model)
    centre = flatten_state(model, layout)
    directions = _directions(layout, centre)
    expected, _ = _recompute(model, layout, centre, directions, [(x, y)], COORDS, "eval")
    for strategy in ("loop", "vmap"):
        ev = _evaluator(model, layout, centre, directions, [(x, y)], strategy=strategy)
        assert ev.plan["first_affine"] is True
        assert ev.plan["first_affine_source"] == "traced"
        np.testing.assert_allclose(ev.evaluate(COORDS)["loss"], expected, rtol=1e-5, atol=1e-6)
    plain = _evaluator(model, layout, centre, directions, [(x, y)], first_affine=False)
    assert plain.plan["first_affine"] is False
    np.testing.assert_allclose(plain.evaluate(COORDS)["loss"], expected, rtol=1e-5, atol=1e-6)
    assert not hasattr(model, "forward_after_first")  # the caller's model is left alone


def test_a_user_loss_gives_per_sample_losses(tmp_path, monkeypatch):
    (tmp_path / "my_losses.py").write_text(
        "import torch.nn.functional as F\n"
        "def smooth(out, y):\n"
        "    return F.cross_entropy(out, y, reduction='none', label_smoothing=0.1)\n"
        "def scalar(out, y):\n"
        "    return F.cross_entropy(out, y)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model, layout, centre, pairs = _problem("mlp")
    directions = _directions(layout, centre)
    ev = _evaluator(model, layout, centre, directions, pairs, loss="my_losses:smooth")
    out = ev.evaluate(COORDS)
    net = copy.deepcopy(model)
    flat = centre + 0.4 * directions[0] - 0.2 * directions[1]
    load_flat(net, flat, layout)
    with torch.no_grad():
        logits = net(pairs[0][0])
    expected = F.cross_entropy(logits, pairs[0][1], label_smoothing=0.1).item()
    np.testing.assert_allclose(out["loss"][0, 1], expected, rtol=1e-5)
    _, accs = _recompute(model, layout, centre, directions, pairs, COORDS, "eval")
    np.testing.assert_allclose(out["acc"], accs, atol=1e-9)
    bad = _evaluator(model, layout, centre, directions, pairs, loss="my_losses:scalar",
                     strategy="loop")  # fmt: skip
    from tracker import UserCodeError

    with pytest.raises(UserCodeError, match="one loss per sample"):
        bad.evaluate(COORDS)


def _float64_recompute(model, layout, centre, directions, pairs, coords, bn_mode):
    """The loss of each point in float64: a double copy of the model, one forward per group."""
    losses = np.zeros((len(pairs), len(coords)))
    for p, point in enumerate(coords):
        flat = centre.double().clone()
        for c, d in zip(point, directions, strict=True):
            flat = flat + float(c) * d.double()
        net = copy.deepcopy(model).double()
        load_flat(net, flat, layout)
        net.eval()
        if bn_mode == "train":
            for m in net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train()
                    m.track_running_stats = False
                    m.running_mean = m.running_var = None
        for g, (x, y) in enumerate(pairs):
            with torch.no_grad():
                losses[g, p] = F.cross_entropy(net(x.double()), y).item()
    return losses


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_registry_cnn_with_batchnorm_matches_float64_to_1e6(bn_mode):
    """Issue 14 item 1: a registry cnn with BatchNorm on digits, --bn train included, agrees with
    a float64 recomputation to 1e-6 relative (the cached first-layer output was channels_last on
    CPU, where BatchNorm's training-mode statistics lose ~1e-4 relative)."""
    from compute.data import load_dataset
    from compute.models import build_model

    ds = load_dataset("digits", seed=0)
    model = build_model("cnn", {"channels": [8, 16], "hidden": [32], "batchnorm": True},
                        input_shape=(1, 8, 8), num_classes=10, seed=0)  # fmt: skip
    x, y = ds.split("train")
    _settle_running_stats(model, x[:512])
    layout = layout_of(model)
    centre = flatten_state(model, layout)
    directions = _directions(layout, centre)
    pairs = [(x[:700], y[:700]), (x[700:1400], y[700:1400])]
    coords = np.array([[0.0, 0.0], [0.3, -0.2], [-0.6, 0.8], [1.0, 1.0]])
    expected = _float64_recompute(model, layout, centre, directions, pairs, coords, bn_mode)
    for strategy in ("loop", "vmap"):
        ev = _evaluator(model, layout, centre, directions, pairs, bn_mode=bn_mode,
                        strategy=strategy)  # fmt: skip
        got = ev.evaluate(coords)["loss"]
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)
        if strategy == "loop":
            assert ev.plan["channels_last"] is (bn_mode == "eval")


@pytest.mark.parametrize("kind", ["cnn", "plain"])
def test_recompute_re_estimates_running_statistics_at_every_point(kind):
    """Issue 14 item 14: per point, the BatchNorm running statistics are the cumulative average
    over the given training batches (then eval mode), as a by-hand bn_update gives."""
    model, layout, centre, pairs = _problem(kind)
    directions = _directions(layout, centre)
    torch.manual_seed(3)
    batches = [torch.randn(16, 2, 6, 6) * 1.5 + 0.3 for _ in range(3)]
    expected = np.zeros((len(pairs), len(COORDS)))
    for p, point in enumerate(COORDS):
        flat = centre.clone()
        for c, d in zip(point, directions, strict=True):
            flat = flat + float(c) * d
        net = copy.deepcopy(model)
        load_flat(net, flat, layout)
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        net.train()
        with torch.no_grad():
            for b in batches:
                net(b)
        net.eval()
        for g, (x, y) in enumerate(pairs):
            with torch.no_grad():
                expected[g, p] = F.cross_entropy(net(x), y).item()
    ev = _evaluator(model, layout, centre, directions, pairs, bn_mode="recompute",
                    bn_batches=batches)  # fmt: skip
    assert ev.plan["strategy"] == "loop" and ev.plan["bn_mode"] == "recompute"
    got = ev.evaluate(COORDS)["loss"]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert ev.evaluate(COORDS)["loss"].tobytes() == got.tobytes()  # the centre is left as it was
    stored = _evaluator(model, layout, centre, directions, pairs).evaluate(COORDS)["loss"]
    assert np.abs(stored - got).max() > 1e-3  # the stored statistics give other numbers
    with pytest.raises(SpecError, match="bn_batches"):
        _evaluator(model, layout, centre, directions, pairs, bn_mode="recompute")


@pytest.mark.parametrize(("kind", "bn_mode"), [("mlp", "eval"), ("cnn", "eval"), ("cnn", "train")])
def test_centre_gradient_is_the_slope_of_the_surface_at_the_origin(kind, bn_mode):
    """Issue 14 item 7: the stored arrow is g . d / |d| for each group and direction, the
    surface's slope along d at (0, 0) divided by |d| (float64 central differences)."""
    model, layout, centre, pairs = _problem(kind)
    directions = _directions(layout, centre)
    ev = _evaluator(model, layout, centre, directions, pairs, bn_mode=bn_mode)
    grad = ev.centre_gradient()
    assert grad.shape == (2, 2) and np.isfinite(grad).all()
    h = 1e-6
    coords = np.array([[h, 0.0], [-h, 0.0], [0.0, h], [0.0, -h]])
    values = _float64_recompute(model, layout, centre, directions, pairs, coords, bn_mode)
    slopes = np.stack([(values[:, 0] - values[:, 1]), (values[:, 2] - values[:, 3])], 1) / (2 * h)
    norms = np.array([float(torch.linalg.vector_norm(d.double())) for d in directions])
    np.testing.assert_allclose(grad, slopes / norms, rtol=1e-3, atol=1e-7)
    # the working copy's state is still the centre: values at the origin are unchanged
    fresh = _evaluator(model, layout, centre, directions, pairs, bn_mode=bn_mode)
    assert ev.evaluate(np.zeros((1, 2)))["loss"].tobytes() == fresh.evaluate(np.zeros((1, 2)))["loss"].tobytes()  # fmt: skip
