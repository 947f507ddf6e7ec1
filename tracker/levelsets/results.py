"""Level-set results shared by `tracker plot levelset` and the dashboard: the finished runs,
Table 1, Figure 2's series and Figure 7's PCA, computed the same way for both."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._arrays import read_array
from tracker._schema import L2BaselineRun, LevelSetRun, Study
from tracker._store import ArrayStore

TABLE1_FIELDS = ("method", "l2_lambda", "n_runs", "test_loss_mean", "test_loss_std",
                 "test_acc_mean", "test_acc_std")  # fmt: skip
PCA_LAMBDA = 1e-3  # the baseline endpoint drawn in Figure 7


def done_levelset_runs(session: Session, setup: str, study: str | None) -> list[LevelSetRun]:
    """The finished traversals of ``setup`` (in ``study`` if given), by run index."""
    q = sa.select(LevelSetRun).where(LevelSetRun.setup == setup,
                                     LevelSetRun.trace_array_id.is_not(None))  # fmt: skip
    if study:
        q = q.join(Study, Study.id == LevelSetRun.study_id).where(Study.name == study)
    return list(session.scalars(q.order_by(LevelSetRun.run_index, LevelSetRun.id)))


def done_l2_runs(session: Session, setup: str, study: str | None) -> list[L2BaselineRun]:
    """The finished L2 baseline runs of ``setup`` (in ``study`` if given), by lambda and index."""
    q = sa.select(L2BaselineRun).where(L2BaselineRun.setup == setup,
                                       L2BaselineRun.params_array_id.is_not(None))  # fmt: skip
    if study:
        q = q.join(Study, Study.id == L2BaselineRun.study_id).where(Study.name == study)
    return list(session.scalars(q.order_by(L2BaselineRun.l2_lambda, L2BaselineRun.run_index)))


@dataclass(frozen=True)
class SetupResults:
    """What the figures of one setup need, read from the rows and the store."""

    traces: list[np.ndarray]
    fields: list[str]
    snapshots: list[np.ndarray]
    steps: list[list[int]]
    l2_ends: list[np.ndarray]
    table: list[dict[str, Any]]


def read_setup(session: Session, store: ArrayStore, setup: str, study: str | None) -> SetupResults:
    """The traces, snapshots, L2 endpoints (lambda = PCA_LAMBDA) and Table 1 of ``setup``."""
    runs = done_levelset_runs(session, setup, study)
    l2 = done_l2_runs(session, setup, study)
    return SetupResults(
        traces=[read_array(session, store, r.trace_array_id) for r in runs],
        fields=list(runs[0].trace_fields or []) if runs else [],
        snapshots=[read_array(session, store, r.snapshots_array_id) for r in runs],
        steps=[list(r.snapshot_steps or []) for r in runs],
        l2_ends=[read_array(session, store, r.params_array_id) for r in l2
                 if math.isclose(r.l2_lambda, PCA_LAMBDA, rel_tol=1e-12)],
        table=table1(runs, l2),
    )  # fmt: skip


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v if v is not None else np.nan for v in values], dtype=np.float64)
    if arr.size == 0 or np.all(np.isnan(arr)):
        return float("nan"), float("nan")
    return float(np.nanmean(arr)), float(np.nanstd(arr))


def table1(levelset_rows: list[Any], l2_rows: list[Any]) -> list[dict[str, Any]]:
    """Table 1: the traversal's final test loss/accuracy, then the baseline's per lambda.

    Baseline runs are grouped by their exact lambda value (the published notebook matched
    file names by substring, which merges 1e-1 with 1e-10)."""
    rows = []

    def add(method: str, lam: float | None, runs: list[Any]) -> None:
        loss = _mean_std([r.final_test_loss for r in runs])
        acc = _mean_std([r.final_test_acc for r in runs])
        rows.append({"method": method, "l2_lambda": lam, "n_runs": len(runs),
                     "test_loss_mean": loss[0], "test_loss_std": loss[1],
                     "test_acc_mean": acc[0], "test_acc_std": acc[1]})  # fmt: skip

    if levelset_rows:
        add("levelset", None, levelset_rows)
    groups: dict[float, list[Any]] = {}
    for r in l2_rows:
        groups.setdefault(float(r.l2_lambda), []).append(r)
    for lam in sorted(groups):
        add("l2", lam, groups[lam])
    return rows


def figure2_series(traces: list[np.ndarray], fields: list[str]) -> dict[str, np.ndarray]:
    """Mean and std over runs, per predictor step, of each field (runs that stopped early
    drop out of the later steps)."""
    length = max(t.shape[0] for t in traces)
    stacked = np.full((len(traces), length, len(fields)), np.nan)
    for i, t in enumerate(traces):
        stacked[i, : t.shape[0]] = t
    with warnings.catch_warnings():  # all-NaN columns past the longest early stop
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, std = np.nanmean(stacked, axis=0), np.nanstd(stacked, axis=0)
    out = {"step": np.arange(length)}
    for j, name in enumerate(fields):
        out[f"{name}_mean"], out[f"{name}_std"] = mean[:, j], std[:, j]
    return out


def snapshot_pca(
    snapshots: list[np.ndarray],
    steps: list[list[int]],
    l2_endpoints: list[np.ndarray],
    n_components: int = 6,
) -> dict[str, np.ndarray]:
    """Figure 7's projection: z-score every parameter over all snapshots, PCA (seed 0), and
    place the mean traversal endpoint and the mean L2 endpoint in the same coordinates."""
    from sklearn.decomposition import PCA

    # float32: 5 CIFAR10_CONV runs of 20k steps are 2,000 x 685,450 values (5.5 GB as float32).
    x = np.concatenate(snapshots, axis=0).astype(np.float32, copy=False)
    mean, sd = x.mean(axis=0), x.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0).astype(np.float32)
    x -= mean  # in place: x is concatenate's own copy, and the largest array here
    x /= sd
    k = max(1, min(n_components, x.shape[0], x.shape[1]))
    pca = PCA(n_components=k, random_state=0, svd_solver="randomized")
    coords = pca.fit_transform(x)
    end = np.mean([s[-1] for s in snapshots], axis=0)
    out = {"coords": coords, "steps": np.concatenate([np.asarray(s) for s in steps]),
           "explained": pca.explained_variance_ratio_,
           "levelset_end": pca.transform(((end - mean) / sd)[None])[0]}  # fmt: skip
    if l2_endpoints:
        l2_end = np.mean(l2_endpoints, axis=0)
        out["l2_end"] = pca.transform(((l2_end - mean) / sd)[None])[0]
    return out
