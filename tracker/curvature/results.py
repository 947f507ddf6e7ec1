"""Hessian spectra read back: rows as frozen values, their arrays, top-k over training, and the
curvature map of a ``--curvature`` surface. Shared by `tracker show/plot hessian`, the
dashboard's Curvature page and tests; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._arrays import read_array
from tracker._exceptions import SpecError
from tracker._schema import Direction, HessianSpectrum, Model, Surface, Task
from tracker._store import ArrayStore

# The columns the meta-analysis reads (one row per checkpoint and measure).
MEASURE_COLUMNS = ("top_eigenvalue", "eigenvalues", "trace", "trace_stderr", "layer_traces")


@dataclass(frozen=True)
class Spectrum:
    """One ``hessian_spectra`` row and its task's state, as plain values."""

    id: int
    model_id: int
    checkpoint_id: int
    epoch: int
    retrain_id: int | None  # a retrained network's measure: the retrain and the save (the
    save_index: int | None  # checkpoint and epoch are then the ones it jumped from)
    measure: str
    status: str
    error: str | None
    settings: dict[str, Any]
    eigenvalues: list[float | None] | None
    residuals: list[float | None] | None
    iterations: int | None
    converged: bool | None
    top_eigenvalue: float | None
    trace: float | None
    trace_stderr: float | None
    trace_probes: int | None
    layer_traces: dict[str, float | None] | None
    loss_value: float | None
    hvp_count: int | None
    seconds: float | None
    completed_at: datetime | None
    config: dict[str, Any]
    eigenvectors_array_id: int | None
    history_array_id: int | None
    density_array_id: int | None
    direction_ids: list[int]


def _spectrum(session: Session, row: HessianSpectrum) -> Spectrum:
    task = session.get(Task, row.task_id) if row.task_id is not None else None
    settings = {
        "split": row.split, "subset": row.subset_size, "subset_seed": row.subset_seed,
        "minibatches": row.n_minibatches, "minibatch_size": row.minibatch_size,
        "bn": row.bn_mode, "dropout": row.dropout, "loss": row.loss, "seed": row.seed,
        "tol": row.tol, "max_iter": row.max_iter, "top_k": row.top_k, "probes": row.probes,
        "per_layer": row.per_layer, "density_runs": row.density_runs,
        "density_steps": row.density_steps,
        "trace_method": (row.config or {}).get("trace_method") if row.measure == "trace" else None,
    }  # fmt: skip
    dirs = session.scalars(
        sa.select(Direction.id).where(Direction.hessian_spectrum_id == row.id)
        .order_by(Direction.eigen_index)
    ).all()  # fmt: skip
    return Spectrum(
        id=row.id, model_id=row.model_id, checkpoint_id=row.checkpoint_id, epoch=row.epoch,
        retrain_id=row.retrain_id, save_index=row.save_index, measure=row.measure, status=task.status if task else "done",
        error=task.error if task else None, settings=settings,
        eigenvalues=row.eigenvalues, residuals=row.residuals, iterations=row.iterations,
        converged=row.converged, top_eigenvalue=row.top_eigenvalue, trace=row.trace,
        trace_stderr=row.trace_stderr, trace_probes=row.trace_probes,
        layer_traces=row.layer_traces, loss_value=row.loss_value, hvp_count=row.hvp_count,
        seconds=row.seconds, completed_at=row.completed_at, config=dict(row.config or {}),
        eigenvectors_array_id=row.eigenvectors_array_id, history_array_id=row.history_array_id,
        density_array_id=row.density_array_id, direction_ids=list(dirs),
    )  # fmt: skip


def load_spectrum(session: Session, spectrum_id: int) -> Spectrum:
    return _spectrum(session, HessianSpectrum.find_or_raise_by_id(session, spectrum_id))


def model_spectra(session: Session, model_id: int) -> list[Spectrum]:
    """Every spectrum of a model: its checkpoints' by epoch, measure and id, then its retrained
    networks' by retrain, save, measure and id."""
    Model.find_or_raise_by_id(session, model_id)
    h = HessianSpectrum
    rows = session.scalars(
        sa.select(h).where(h.model_id == model_id)
        .order_by(h.retrain_id.is_not(None), h.retrain_id, h.save_index, h.epoch, h.measure, h.id)
    ).all()  # fmt: skip
    return [_spectrum(session, r) for r in rows]


def study_counts(session: Session, study_id: int) -> list[dict[str, Any]]:
    """A study's Hessian spectra counted per measure: how many, of how many models,
    checkpoints and retrained networks' saves, and how many are done, queued (waiting,
    pending, running) and failed."""
    rows = session.execute(
        sa.select(HessianSpectrum.measure, HessianSpectrum.model_id, HessianSpectrum.checkpoint_id,
                  Task.status, HessianSpectrum.retrain_id, HessianSpectrum.save_index)
        .outerjoin(Task, Task.id == HessianSpectrum.task_id)
        .where(HessianSpectrum.study_id == study_id)
    ).all()  # fmt: skip
    out = []
    for measure in ("eigen", "trace", "density"):
        mine = [r for r in rows if r[0] == measure]
        if not mine:
            continue
        status = [r[3] or "done" for r in mine]
        out.append({
            "measure": measure, "spectra": len(mine), "models": len({r[1] for r in mine}),
            "checkpoints": len({r[2] for r in mine if r[4] is None}),
            "retrain saves": len({(r[4], r[5]) for r in mine if r[4] is not None}),
            "done": status.count("done"),
            "queued": sum(s in ("waiting", "pending", "running") for s in status),
            "failed": status.count("failed"),
        })  # fmt: skip
    return out


def _done(spec: Spectrum, array_id: int | None, what: str) -> int:
    if spec.status != "done" or array_id is None:
        raise SpecError(
            f"Hessian spectrum {spec.id} has no {what} yet (its task is {spec.status}): "
            "run `tracker work`"
        )
    return array_id


def history(session: Session, store: ArrayStore, spec: Spectrum) -> np.ndarray:
    """[iterations, k] Ritz values after each Lanczos step (eigen measures)."""
    return read_array(session, store, _done(spec, spec.history_array_id, "convergence history"))


def density(session: Session, store: ArrayStore, spec: Spectrum) -> tuple[np.ndarray, np.ndarray]:
    """(grid, density) of a density measure."""
    data = read_array(session, store, _done(spec, spec.density_array_id, "density"))
    return data[0], data[1]


def eigenvectors(session: Session, store: ArrayStore, spec: Spectrum) -> np.ndarray:
    """[k, layout length] unit eigenvectors in the checkpoint's flat layout."""
    return read_array(session, store, _done(spec, spec.eigenvectors_array_id, "eigenvectors"))


def top_k_over_training(spectra: Sequence[Spectrum]) -> tuple[np.ndarray, np.ndarray]:
    """(epochs [E], eigenvalues [E, k]) from the finished eigen measures of checkpoints (not
    of retrained networks), the newest per epoch; NaN where an epoch has fewer eigenvalues
    (or a NULL)."""
    newest: dict[int, Spectrum] = {}
    for s in spectra:
        if s.measure == "eigen" and s.status == "done" and s.eigenvalues and s.retrain_id is None:
            newest[s.epoch] = s
    epochs = sorted(newest)
    k = max((len(newest[e].eigenvalues or []) for e in epochs), default=0)
    values = np.full((len(epochs), k), np.nan)
    for i, e in enumerate(epochs):
        ev = [np.nan if v is None else v for v in newest[e].eigenvalues or []]
        values[i, : len(ev)] = ev
    return np.asarray(epochs, dtype=int), values


@dataclass(frozen=True)
class CurvatureMap:
    """Goldstein's map of a ``--curvature`` surface: coordinates and [groups, ny, nx] grids."""

    surface_id: int
    xs: np.ndarray
    ys: np.ndarray | None
    lambda_min: np.ndarray
    lambda_max: np.ndarray
    ratio: np.ndarray
    settings: dict[str, Any]


def curvature_map(session: Session, store: ArrayStore, surface_id: int) -> CurvatureMap:
    surface = Surface.find_or_raise_by_id(session, surface_id)
    if not surface.curvature:
        raise SpecError(
            f"surface {surface_id} has no curvature map: enqueue the surface with --curvature"
        )
    if surface.lambda_max_array_id is None:
        raise SpecError(f"surface {surface_id} is not complete yet: run `tracker work`")
    xs = np.linspace(surface.x_min, surface.x_max, surface.nx)
    ys = None
    if surface.ny is not None:
        ys = np.linspace(float(surface.y_min or 0.0), float(surface.y_max or 0.0), surface.ny)
    what = f"surface {surface_id}"
    return CurvatureMap(
        surface_id=surface_id, xs=xs, ys=ys,
        lambda_min=read_array(session, store, surface.lambda_min_array_id, what=what),
        lambda_max=read_array(session, store, surface.lambda_max_array_id, what=what),
        ratio=read_array(session, store, surface.lambda_ratio_array_id, what=what),
        settings=dict((surface.eval_config or {}).get("curvature") or {}),
    )  # fmt: skip


__all__: Sequence[str] = (
    "MEASURE_COLUMNS",
    "CurvatureMap",
    "Spectrum",
    "curvature_map",
    "density",
    "eigenvectors",
    "history",
    "load_spectrum",
    "model_spectra",
    "study_counts",
    "top_k_over_training",
)  # fmt: skip
