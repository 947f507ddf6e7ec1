"""The maths of jump-and-retrain topology on CPU: jump and retrain, streamed PCA, PHATE,
kNN graphs and lower-star persistence, checked against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compute import directions
from compute.retrain import RetrainSpec, check_retrain, jump_and_retrain
from compute.state import flatten_state, layout_of
from compute.topology import (
    knn_edges,
    persistence_diagram,
    phate_embedding,
    streamed_pca,
    summarize_diagram,
)
from compute.train import TrainSpec
from tracker import SpecError

BASE = TrainSpec(architecture="mlp", arch_config={"widths": [8]}, dataset="digits",
                 dataset_config={}, optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0,
                 batch_size=128, epochs=0, seed=3)  # fmt: skip


def _retrain(seed: int, step: float, saves_per_epoch: int = 1) -> tuple[list, torch.Tensor]:
    ds = BASE.load_data()
    model = BASE.build(ds)
    layout = layout_of(model)
    theta = flatten_state(model, layout)
    d = directions.random_direction(layout, theta, seed=seed, normalization="filter",
                                    ignore="biasbn", target="weights")  # fmt: skip
    saves: list = []
    spec = RetrainSpec(seed=seed, step_size=step, epochs=2, lr=0.05, batch_size=256,
                       saves_per_epoch=saves_per_epoch)  # fmt: skip
    jump_and_retrain(BASE, spec, theta, d, layout,
                     on_save=lambda i, e, flat, m: saves.append((i, e, flat.copy(), m)))  # fmt: skip
    return saves, theta + step * d


def test_the_same_seed_gives_the_same_direction_and_trajectory() -> None:
    a, theta0 = _retrain(seed=1, step=0.5)
    b, _ = _retrain(seed=1, step=0.5)
    c, _ = _retrain(seed=2, step=0.5)
    assert [s[0] for s in a] == [0, 1, 2] and [s[1] for s in a] == [0.0, 1.0, 2.0]
    for x, y in zip(a, b, strict=True):
        assert x[2].tobytes() == y[2].tobytes() and x[3] == y[3]
    assert not np.array_equal(a[-1][2], c[-1][2])
    # Save 0 is the jump itself: theta* + s d, before any step.
    np.testing.assert_allclose(a[0][2], theta0.numpy(), rtol=0, atol=1e-6)
    assert a[-1][3]["train_loss"] < a[0][3]["train_loss"]


def test_saves_per_epoch_split_each_epoch() -> None:
    saves, _ = _retrain(seed=0, step=0.25, saves_per_epoch=2)
    assert [s[1] for s in saves] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert len({s[2].tobytes() for s in saves}) == 5


@pytest.mark.parametrize("step", [0.0, -0.5, float("nan")])
def test_a_step_size_that_is_not_positive_is_refused(step: float) -> None:
    with pytest.raises(SpecError, match="step size"):
        check_retrain(RetrainSpec(seed=0, step_size=step, epochs=1, lr=0.1))


def test_streamed_pca_equals_a_full_svd_for_any_block_size() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 700)).cumsum(axis=0)
    centred = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    expected = u * s
    for block in (64, 700, 10_000):
        got = streamed_pca(lambda cols: x[:, cols], 30, 700, n_components=5, block=block)
        assert got.scores.shape == (30, 5)
        np.testing.assert_allclose(
            np.abs(got.scores), np.abs(expected[:, :5]), rtol=1e-7, atol=1e-7
        )
        assert got.explained_variance_ratio == pytest.approx(s[:5] ** 2 / np.sum(s**2))


def test_the_same_phate_seed_gives_the_same_embedding() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(40, 6)).cumsum(axis=0)
    a = phate_embedding(scores, seed=0)
    b = phate_embedding(scores, seed=0)
    assert a.coords.tobytes() == b.coords.tobytes() and a.t == b.t
    assert a.potential.tobytes() == b.potential.tobytes()
    assert a.coords.shape == (40, 2) and a.potential.shape == (40, 40)
    assert not np.array_equal(phate_embedding(scores, seed=1).coords, a.coords)


def test_knn_links_the_nearest_and_legacy_the_farthest() -> None:
    u = np.array([[0.0, 1.0, 5.0, 3.0],
                  [2.0, 0.0, 4.0, 9.0],
                  [7.0, 1.0, 0.0, 2.0],
                  [1.0, 8.0, 6.0, 0.0]])  # fmt: skip
    assert knn_edges(u, 1).tolist() == [[0, 1], [0, 3], [1, 2]]
    assert knn_edges(u, 1, legacy=True).tolist() == [[0, 2], [1, 3]]
    with pytest.raises(SpecError, match="knn"):
        knn_edges(u, 4)


def test_a_square_has_one_loop_and_its_lower_star_pairs() -> None:
    # 0-1-2-3-0, no triangles: H1 is the square, born when its last edge (value 3) enters.
    edges = np.array([[0, 1], [1, 2], [2, 3], [0, 3]])
    diagram = persistence_diagram(np.array([0.0, 1.0, 2.0, 3.0]), edges)
    h0 = diagram[diagram[:, 2] == 0][:, :2].tolist()
    h1 = diagram[diagram[:, 2] == 1][:, :2].tolist()
    assert h0 == [[0.0, np.inf], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]
    assert h1 == [[3.0, np.inf]]
    # The diagonal closes it: the triangle fills the loop and H1 is empty.
    diagram = persistence_diagram(np.array([0.0, 1.0, 2.0, 3.0]), np.vstack([edges, [[0, 2]]]))
    assert not (diagram[:, 2] == 1).any()


def test_diagram_structure_and_summaries_on_a_random_potential() -> None:
    rng = np.random.default_rng(2)
    n = 60
    potential = rng.random((n, n))
    loss = rng.random(n)
    diagram = persistence_diagram(loss, knn_edges(potential, 3))
    h0 = diagram[diagram[:, 2] == 0]
    assert len(h0) == n  # one pair per sample
    assert (diagram[:, 0] <= diagram[:, 1]).all()
    assert sorted(h0[:, 0].tolist()) == sorted(loss.tolist())  # every vertex is born at its loss
    assert np.isinf(h0[:, 1]).sum() >= 1 and h0[np.isinf(h0[:, 1]), 0].min() == loss.min()
    summary = summarize_diagram(diagram)
    for dim in (0, 1):
        rows = diagram[diagram[:, 2] == dim]
        life = (rows[:, 1] - rows[:, 0])[np.isfinite(rows[:, 1])]
        assert summary[f"h{dim}_count"] == len(rows)
        assert summary[f"h{dim}_total_p1"] == pytest.approx(life.sum())
        assert summary[f"h{dim}_total_p2"] == pytest.approx((life**2).sum())
        assert summary[f"h{dim}_max"] == (pytest.approx(life.max()) if len(life) else None)
