"""Morse graphs (seed 003), the maths: known maps give known graphs, the retraction fixes Morse
sets, DOODL3's stacked models train reproducibly. (An ensemble and its graph through the queue,
the CLI and the plots: tests/morse/.)"""

from __future__ import annotations

import numpy as np
import pytest

from compute import doodl3
from compute.morse import NONE, MorseResult, compute_morse_graph, pick_weights


def _leslie(p: np.ndarray) -> np.ndarray:
    x, y = p[:, 0], p[:, 1]
    return np.column_stack([(19.6 * x + 23.68 * y) * np.exp(-0.1 * (x + y)), 0.7 * x])


def _fixed_on_morse_sets(morse_sets: np.ndarray, retraction: np.ndarray) -> bool:
    inside = morse_sets >= 0
    return bool(inside.any()) and bool((retraction[inside] == morse_sets[inside]).all())


def test_a_contraction_has_one_attractor_holding_its_fixed_point() -> None:
    fixed = np.array([0.6, -0.4])
    result = compute_morse_graph(lambda p: 0.5 * p + 0.5 * fixed, [-1, -1], [1, 1], 10)
    assert len(result.attractors) == 1
    x0, y0, x1, y1 = result.nodes[result.attractors[0]]["bbox"]
    assert x0 <= fixed[0] <= x1 and y0 <= fixed[1] <= y1
    assert result.shape == (32, 32)
    # Every box flows into the attractor's neighbourhood: no box reaches nothing.
    assert (result.retraction >= 0).all()
    assert _fixed_on_morse_sets(result.morse_sets, result.retraction)


@pytest.fixture(scope="module")
def leslie() -> MorseResult:
    return compute_morse_graph(_leslie, [-0.001, -0.001], [90.0, 70.0], 16)


def test_the_leslie_map_gives_a_chain_of_three_morse_sets_with_conley_indices(
    leslie: MorseResult,
) -> None:
    result = leslie
    assert result.edges == [(1, 0), (2, 1)]
    assert result.attractors == [0]
    assert [n["conley_index"] for n in result.nodes] == [
        ["x^3-1", "0", "0"], ["0", "x^2+x+1", "0"], ["0", "0", "0"],
    ]  # fmt: skip
    assert result.nodes[2]["n_boxes"] == 1  # the fixed point at the origin


def test_the_retraction_is_the_identity_on_morse_sets_and_sends_boxes_down_the_order(
    leslie: MorseResult,
) -> None:
    result = leslie
    assert _fixed_on_morse_sets(result.morse_sets, result.retraction)
    # The top node (the origin) is reached only from its own box; every other box retracts to
    # a node, which is the greatest it reaches (1 above 0: boxes reaching 1 retract to 1).
    values, counts = np.unique(result.retraction, return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist(), strict=True))[2] == 1
    assert set(values.tolist()) <= {0, 1, 2}


def test_pick_weights_takes_the_most_or_least_varying_candidates_in_the_notebooks_order() -> None:
    """DOODL3 sorts the standard deviations ascending and takes ``[-k:]`` (``[:k]`` for the
    smallest): the first axis of a max-variance pair is the second largest (issue 14 item 8)."""
    rng = np.random.default_rng(0)
    final = rng.normal(size=(50, 5)) * np.array([1.0, 5.0, 0.1, 3.0, 0.01])
    assert pick_weights(final, [0, 1, 2, 3, 4], "max-variance") == [3, 1]
    assert pick_weights(final, [0, 1, 2, 3, 4], "min-variance") == [4, 2]
    assert pick_weights(final, [0, 2, 3], "max-variance") == [0, 3]
    assert pick_weights(final, [0, 1, 2, 3, 4], "max-variance", 3) == [0, 3, 1]
    assert pick_weights(final, [0, 1, 2, 3, 4], "min-variance", 4) == [4, 2, 0, 3]


def test_a_bad_pick_subdivision_or_setup_is_a_spec_error_that_names_the_fix() -> None:
    from compute.doodl3_params import param_names
    from tracker import SpecError

    with pytest.raises(SpecError, match="use one of max-variance, min-variance"):
        pick_weights(np.zeros((3, 2)), [0, 1], "median")
    with pytest.raises(SpecError, match="on 2 weights needs 2 candidate weights, got 1"):
        pick_weights(np.zeros((3, 2)), [0], "max-variance")
    with pytest.raises(SpecError, match="choose --subdiv in that range"):
        compute_morse_graph(lambda p: p, [0, 0], [1, 1], 0)
    with pytest.raises(SpecError, match="use one of doodl3-iris, doodl3-iris-layers-2, doodl3-mnist"):
        param_names("doodl3-cifar")


def test_same_spec_trains_the_same_numbers_and_the_setups_have_their_sizes() -> None:
    a = doodl3.train_chunk("doodl3-iris", [0, 1], seed=3, epochs=3, early_epoch=1, batch_size=5)
    b = doodl3.train_chunk("doodl3-iris", [0, 1], seed=3, epochs=3, early_epoch=1, batch_size=5)
    assert np.array_equal(a.final, b.final) and np.array_equal(a.early, b.early)
    assert a.final.shape == (2, 9) and not np.array_equal(a.early, a.final)
    # Kernels start in U(-2, 2), biases at zero (Keras's defaults kept by DOODL3).
    m = doodl3.train_chunk("doodl3-mnist", [0, 1], seed=0, epochs=1, early_epoch=0, batch_size=128)
    assert m.final.shape == (2, 58) and len(doodl3.kernel_columns("doodl3-mnist")) == 54
    bias = [i for i, n in enumerate(doodl3.param_names("doodl3-mnist")) if "bias" in n]
    assert np.all(m.early[:, bias] == 0) and np.abs(m.early).max() <= 2.0
    assert np.all((m.accuracy >= 0) & (m.accuracy <= 1)) and np.all(m.entropy >= 0)


def test_an_unknown_retraction_point_is_none() -> None:
    from compute.morse import retract_points

    result = compute_morse_graph(lambda p: 0.5 * p, [-1, -1], [1, 1], 6)
    assert retract_points(result, np.array([[5.0, 5.0]]))[0] == NONE
    assert retract_points(result, np.array([[0.01, 0.01]]))[0] >= 0


def test_the_grid_corner_map_equals_cmgdbs_corner_box_map() -> None:
    import CMGDB

    from compute.morse import GridCornerMap

    rng = np.random.default_rng(1)
    lo, hi = [-1.0, -2.0], [3.0, 1.0]
    grid = GridCornerMap(_leslie, lo, hi, 7)  # 16 x 8 boxes
    w = (np.array(hi) - np.array(lo)) / np.array([16, 8])
    cells = rng.integers(0, [16, 8], size=(50, 2))
    rects = np.hstack([np.array(lo) + cells * w, np.array(lo) + (cells + 1) * w])
    off_grid = np.array([[0.1, 0.2, 0.3, 0.45]])  # not a box of the grid: evaluated directly
    rects = np.vstack([rects, off_grid])
    expected = CMGDB.BoxMapBatch(_leslie, rects, padding=True)
    assert np.allclose(grid(rects), expected, rtol=1e-12, atol=1e-9)


def test_stacked_models_compute_what_each_network_computes_alone() -> None:
    """The stacked forward pass (models as conv groups, Keras's channels-last flatten) equals
    each model run as an ordinary torch network."""
    import torch
    import torch.nn.functional as F

    split = doodl3.load_split("doodl3-mnist", 0)
    x = split.test_x[:5]
    params = [torch.tensor(np.stack(g), dtype=torch.float32)
              for g in zip(*(doodl3._init("doodl3-mnist", 0, i) for i in range(3)), strict=True)]  # fmt: skip
    params[1] += torch.tensor([[0.1, -0.2]])  # non-zero biases, so their use is checked too
    params[3] += torch.tensor([[0.3, 0.05]])
    stacked = doodl3._logits("doodl3-mnist", params, x.unsqueeze(0).expand(3, *x.shape), None)
    for m in range(3):
        ck, cb, dk, db = (p[m] for p in params)
        z = F.relu(F.conv2d(x, ck.permute(3, 2, 0, 1), cb))  # [5, 2, 26, 26]
        z = F.max_pool2d(z, 7).permute(0, 2, 3, 1).reshape(5, 18)  # (h, w, c) flatten
        assert torch.allclose(stacked[m], z @ dk + db, atol=1e-4)
    xi = doodl3.load_split("doodl3-iris", 0).test_x[:7]
    w, b = torch.randn(2, 2, 3), torch.randn(2, 3)
    out = doodl3._logits("doodl3-iris", [w, b], xi.unsqueeze(0).expand(2, *xi.shape), None)
    assert torch.allclose(out[1], xi @ w[1] + b[1], atol=1e-6)
