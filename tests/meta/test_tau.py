"""Kendall's tau and the granulated tau against sums worked out by hand; seeded bootstraps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from compute.meta import (
    bootstrap_granulated,
    bootstrap_tau,
    cells,
    granulated_tau,
    kendall_tau,
)

# (batch size, lr, seed), measure, gap
TABLE = [
    ((32, 0.1, 0), 1.0, 0.10),  # A
    ((256, 0.1, 0), 2.0, 0.30),  # B
    ((32, 0.01, 0), 3.0, 0.20),  # C
    ((256, 0.01, 0), 4.0, 0.25),  # D
    ((32, 0.1, 1), 5.0, 0.05),  # E: differs from A in the seed only
]
HP = [row[0] for row in TABLE]
M = [row[1] for row in TABLE]
G = [row[2] for row in TABLE]


def test_kendall_tau_is_the_mean_sign_agreement_over_pairs():
    # A..D: pairs AB +, AC +, AD +, BC -, BD -, CD +  ->  (4 - 2) / 6
    assert kendall_tau(M[:4], G[:4]) == pytest.approx(2 / 6)
    # With E (largest measure, smallest gap): its 4 pairs are all discordant -> (4 - 6) / 10
    assert kendall_tau(M, G) == pytest.approx(-2 / 10)


def test_ties_count_zero_as_in_jiang_et_al():
    # pairs: (1,1) tie -> 0, two concordant -> 2 / 3
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / 3)
    assert np.isnan(kendall_tau([1.0], [2.0]))


def test_without_ties_it_equals_scipys_kendall_tau():
    rng = np.random.default_rng(3)
    m, g = rng.normal(size=30), rng.normal(size=30)
    assert kendall_tau(m, g) == pytest.approx(stats.kendalltau(m, g).statistic)


def test_cells_hold_models_that_differ_only_in_one_axis():
    # batch-size axis: cells by (lr, seed); E is alone (seed 1) and left out
    assert cells(HP, 0) == [[0, 1], [2, 3]]
    assert cells(HP, 1) == [[0, 2], [1, 3]]


def test_granulated_tau_by_hand():
    gran = granulated_tau(M, G, HP, axes=[0, 1])
    # batch size: {A,B} m up gap up +1, {C,D} m up gap up +1 -> psi = 1
    # lr: {A,C} m up gap up +1, {B,D} m up gap down -1 -> psi = 0
    assert gran.per_axis == pytest.approx((1.0, 0.0))
    assert gran.cells_per_axis == (2, 2)
    assert gran.psi == pytest.approx(0.5)


def test_bootstraps_are_seeded_and_bracket_the_estimate():
    rng = np.random.default_rng(0)
    m = rng.normal(size=40)
    g = m + rng.normal(scale=0.5, size=40)
    a = bootstrap_tau(m, g, draws=300, seed=7)
    assert a == bootstrap_tau(m, g, draws=300, seed=7)
    assert a != bootstrap_tau(m, g, draws=300, seed=8)
    assert a.low < kendall_tau(m, g) < a.high
    assert (a.level, a.draws, a.seed) == (0.95, 300, 7)


def test_granulated_bootstrap_resamples_cells():
    ci = bootstrap_granulated(M, G, HP, axes=[0, 1], draws=500, seed=1)
    assert ci == bootstrap_granulated(M, G, HP, axes=[0, 1], draws=500, seed=1)
    # Batch size's two cells are both +1, so its psi is 1 in every draw; lr's cells (+1, -1)
    # resampled give psi_lr -1, 0 or 1 with chances 1/4, 1/2, 1/4, so Psi = (1 + psi_lr) / 2
    # is 0, 0.5 or 1 and the 95% interval spans all of it.
    assert (ci.low, ci.high) == (0.0, 1.0)
