"""Level-set traversal (seed 002): the walk stays on the level set, lowers the weight norm,
records angles in [0, 180], is seeded; the L2 baseline reports data losses apart from the
penalty. (The method through the queue, MLflow and `tracker plot levelset`:
tests/levelsets/.)"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from compute import levelset as ls
from tracker._exceptions import SpecError

STEPS = 160
CFG = ls.LevelSetConfig(setup="IRIS_FF", seed=11, max_predictor_steps=STEPS, phase1_epochs=20)
FIELD = {name: i for i, name in enumerate(ls.TRACE_FIELDS)}


@pytest.fixture(scope="module")
def data() -> ls.SetupData:
    return ls.load_setup_data(ls.get_setup("IRIS_FF"))


@pytest.fixture(scope="module")
def walk(data: ls.SetupData) -> tuple[ls.LevelSetResult, dict[int, np.ndarray]]:
    snaps: dict[int, np.ndarray] = {}
    result = ls.traverse(
        CFG, data=data, on_snapshot=lambda i, k, theta: snaps.__setitem__(k, theta)
    )
    return result, snaps


def _train_loss(data: ls.SetupData, theta: np.ndarray) -> float:
    """The training loss of theta, computed apart from the walk's own code path."""
    model = ls.LevelSetNet(ls.get_setup("IRIS_FF"), data.input_shape, data.outputs)
    torch.nn.utils.vector_to_parameters(torch.from_numpy(theta), model.parameters())
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(data.train_x), data.train_y))


def test_every_recorded_predictor_step_is_on_the_level_set(walk, data) -> None:
    result, snaps = walk
    tol = math.sqrt(CFG.level_tol)
    assert result.trace.shape == (STEPS, len(ls.TRACE_FIELDS))
    assert np.all(np.abs(result.trace[:, FIELD["train_loss"]] - result.l0) <= tol + 1e-7)
    assert np.all(np.abs(result.trace[:, FIELD["level_gap"]]) <= tol)
    # Independently: the snapshots taken before predictor steps lie on the level set too.
    for k in (0, 50, 100, 150):
        assert abs(_train_loss(data, snaps[k]) - result.l0) <= tol + 1e-6, k


def test_the_weight_norm_decreases_overall(walk) -> None:
    r = walk[0].trace[:, FIELD["weight_norm_sq"]]
    assert r[-1] < r[0] - 1.0
    assert np.mean(np.diff(r) < 0) > 0.9
    assert math.isclose(r[0], float(np.sum(walk[1][0].astype(np.float64) ** 2)), rel_tol=1e-5)


def test_angles_lie_in_0_180_and_open_towards_the_kkt_point(walk) -> None:
    angle = walk[0].trace[:, FIELD["angle_deg"]]
    assert np.all((angle >= 0) & (angle <= 180))
    assert angle[-1] > angle[0]
    assert walk[0].stop_reason == "step_cap"


def test_step_sizes_follow_the_adaptive_rules(walk) -> None:
    trace = walk[0].trace
    eta = trace[:, FIELD["eta_p"]]
    assert eta[0] == pytest.approx(1e-5)  # IRIS: eta_min = 1e-5
    assert np.all((eta >= 1e-5 - 1e-12) & (eta <= 0.1))
    grew = eta[1:] > eta[:-1]
    assert np.allclose(eta[1:][grew], np.minimum(1.1 * eta[:-1][grew], 0.1))
    after_corrector = trace[1:, FIELD["correctors"]] > 0
    assert np.allclose(eta[1:][after_corrector], 1e-5)


def test_the_same_seed_gives_the_same_numbers(walk, data) -> None:
    short = ls.traverse(replace(CFG, max_predictor_steps=40), data=data)
    assert np.array_equal(short.trace, walk[0].trace[:40])
    other = ls.traverse(replace(CFG, seed=12, max_predictor_steps=2), data=data)
    assert other.l0 != walk[0].l0


def test_the_corrector_cap_and_the_kkt_angle_stop_the_walk(data) -> None:
    capped = ls.traverse(
        replace(CFG, phase1_epochs=1, level_tol=1e-30, max_corrector_steps=3), data=data
    )
    assert capped.stop_reason == "corrector_cap"
    assert capped.n_correctors == 3
    kkt = ls.traverse(replace(CFG, phase1_epochs=1, kkt_tol_deg=180.0), data=data)
    assert kkt.stop_reason == "kkt"
    assert kkt.trace.shape[0] == 1


def test_the_setups_have_the_published_parameter_counts() -> None:
    shapes = {"MNIST_FF": ((1, 28, 28), 10, 99_710), "MNIST_CONV": ((1, 28, 28), 10, 54_930),
              "CIFAR10_CONV": ((3, 32, 32), 10, 685_450), "IRIS_FF": ((4,), 3, 31_103)}  # fmt: skip
    for name, (shape, outputs, expected) in shapes.items():
        net = ls.build_model(ls.get_setup(name), shape, outputs, seed=0)
        assert sum(p.numel() for p in net.parameters()) == expected, name
    net = ls.build_model(ls.get_setup("IRIS_FF"), (4,), 3, seed=0)
    first = net.body[1].weight.detach()  # Glorot normal, truncated at 2 sd; zero biases
    std = math.sqrt(2 / (4 + 100)) / 0.87962566103423978
    assert float(first.abs().max()) <= 2 * std + 1e-6
    assert float(net.body[1].bias.detach().abs().sum()) == 0.0


def test_lambdas_parse_with_decades_and_refuse_garbage() -> None:
    assert ls.parse_lambdas("0,1e-6,...,1e6") == list(ls.DEFAULT_LAMBDAS)
    assert len(ls.DEFAULT_LAMBDAS) == 14
    assert ls.parse_lambdas("1e-3, 0") == [0.0, 1e-3]
    for bad in ("0,abc", "", "-1", "0,...,1", "1e-3,...,5", "inf"):
        with pytest.raises(SpecError, match="lambdas"):
            ls.parse_lambdas(bad)


def test_the_l2_baseline_reports_the_data_loss_apart_from_the_penalty(data) -> None:
    weak, theta_weak = ls.train_l2(ls.L2Config("IRIS_FF", seed=3, l2=0.0, epochs=4), data=data)
    strong, _ = ls.train_l2(ls.L2Config("IRIS_FF", seed=3, l2=1e-2, epochs=4), data=data)
    assert weak["penalty"] == 0.0
    assert strong["penalty"] == pytest.approx(1e-2 * strong["kernel_sq_norm"])
    assert strong["kernel_sq_norm"] < weak["kernel_sq_norm"]
    assert weak["train_loss"] == pytest.approx(_train_loss(data, theta_weak), rel=1e-5)
