"""Rank correlation of a generalisation measure with a target (Jiang et al. 2020, "Fantastic
generalization measures and where to find them", section 4).

Takes plain arrays (one value per model, hyperparameters as tuples), returns numbers; knows
nothing of SQL. Every bootstrap draw comes from the seed it is given.

- ``kendall_tau``: tau = sum over ordered pairs i != j of sign(m_i - m_j) sign(g_i - g_j),
  divided by the number of pairs (ties count 0, as in the paper: no tie correction).
- ``granulated_tau``: for each hyperparameter axis, the models that agree on every other axis
  form a cell; psi_axis is the mean tau over cells with at least two models, and Psi the mean
  of psi over the axes that have such a cell.
- ``bootstrap_ci``: percentile intervals. Kendall tau resamples models with replacement (a
  model drawn twice forms a tied pair, which counts 0); the granulated tau resamples the cells
  of each axis, since psi is a mean over cells.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np


def kendall_tau(measure: Sequence[float] | np.ndarray, target: Sequence[float] | np.ndarray) -> float:
    """Kendall's tau (Jiang et al.'s form: all ordered pairs, ties count 0); NaN for < 2 models."""
    m = np.asarray(measure, dtype=np.float64)
    g = np.asarray(target, dtype=np.float64)
    n = m.shape[0]
    if n < 2:
        return float("nan")
    sm = np.sign(m[:, None] - m[None, :])
    sg = np.sign(g[:, None] - g[None, :])
    return float((sm * sg).sum() / (n * (n - 1)))


def cells(hparams: Sequence[Sequence[Hashable]], axis: int) -> list[list[int]]:
    """Indices of models that agree on every hyperparameter but ``axis``, cells of >= 2 models
    whose ``axis`` values are not all equal, in order of first appearance."""
    groups: dict[tuple[Hashable, ...], list[int]] = {}
    for i, row in enumerate(hparams):
        key = tuple(v for k, v in enumerate(row) if k != axis)
        groups.setdefault(key, []).append(i)
    return [g for g in groups.values() if len(g) >= 2 and len({hparams[i][axis] for i in g}) > 1]


@dataclass(frozen=True)
class Granulated:
    """Psi, and psi per axis (NaN where the axis has no cell)."""

    psi: float
    per_axis: tuple[float, ...]
    cells_per_axis: tuple[int, ...]


def granulated_tau(
    measure: Sequence[float] | np.ndarray,
    target: Sequence[float] | np.ndarray,
    hparams: Sequence[Sequence[Hashable]],
    axes: Sequence[int],
) -> Granulated:
    """Jiang et al.'s granulated Kendall coefficient over the hyperparameter ``axes``.

    ``hparams[i]`` holds model i's values of every hyperparameter (swept axes and the others,
    e.g. the training seed), so a cell only holds models that differ in the one axis.
    """
    m = np.asarray(measure, dtype=np.float64)
    g = np.asarray(target, dtype=np.float64)
    per_axis, counts = [], []
    for axis in axes:
        found = cells(hparams, axis)
        taus = [kendall_tau(m[c], g[c]) for c in found]
        per_axis.append(float(np.mean(taus)) if taus else float("nan"))
        counts.append(len(found))
    valid = [p for p in per_axis if not np.isnan(p)]
    psi = float(np.mean(valid)) if valid else float("nan")
    return Granulated(psi, tuple(per_axis), tuple(counts))


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval."""

    low: float
    high: float
    level: float
    draws: int
    seed: int


def _interval(samples: np.ndarray, level: float, draws: int, seed: int) -> Interval:
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return Interval(float("nan"), float("nan"), level, draws, seed)
    alpha = (1.0 - level) / 2
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return Interval(float(low), float(high), level, draws, seed)


def bootstrap_tau(
    measure: Sequence[float] | np.ndarray,
    target: Sequence[float] | np.ndarray,
    *,
    draws: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Percentile interval of Kendall's tau, models resampled with replacement."""
    m = np.asarray(measure, dtype=np.float64)
    g = np.asarray(target, dtype=np.float64)
    rng = np.random.default_rng(seed)
    n = m.shape[0]
    if n < 2:
        return _interval(np.array([]), level, draws, seed)
    samples = np.array([kendall_tau(m[idx], g[idx]) for idx in rng.integers(0, n, size=(draws, n))])
    return _interval(samples, level, draws, seed)


def bootstrap_granulated(
    measure: Sequence[float] | np.ndarray,
    target: Sequence[float] | np.ndarray,
    hparams: Sequence[Sequence[Hashable]],
    axes: Sequence[int],
    *,
    draws: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Percentile interval of Psi: each draw resamples every axis's cells with replacement."""
    m = np.asarray(measure, dtype=np.float64)
    g = np.asarray(target, dtype=np.float64)
    rng = np.random.default_rng(seed)
    cell_taus = []
    for axis in axes:
        found = cells(hparams, axis)
        if found:
            cell_taus.append(np.array([kendall_tau(m[c], g[c]) for c in found]))
    if not cell_taus:
        return _interval(np.array([]), level, draws, seed)
    samples = np.empty(draws)
    for b in range(draws):
        samples[b] = np.mean([taus[rng.integers(0, taus.size, size=taus.size)].mean() for taus in cell_taus])
    return _interval(samples, level, draws, seed)
