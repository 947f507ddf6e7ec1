"""Reading finished surfaces back: grid, arrays, directions; shared by the CLI, plots and
dashboard. Every array goes through the one reader (``tracker._arrays.read_array``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._arrays import read_array
from tracker._exceptions import QueueError
from tracker._schema import Checkpoint, Direction, Model, Surface, Task
from tracker._store import ArrayStore


@dataclass
class SurfaceData:
    """A finished surface: its row, model, coordinates and grids."""

    surface: Surface
    model: Model | None  # None for a surface imported from a file
    epoch: int | None
    xs: np.ndarray
    ys: np.ndarray | None
    loss: np.ndarray  # [G, ny, nx]
    acc: np.ndarray
    x_direction: Direction | None
    y_direction: Direction | None
    trajectory: np.ndarray | None = None  # PCA: [n, 3] of (epoch, x, y)

    @property
    def is_2d(self) -> bool:
        return self.ys is not None

    @property
    def label(self) -> str:
        if self.model is None:
            return f"surface {self.surface.id}: imported from {self.surface.source}"
        name = self.model.name or f"model {self.model.id}"
        kind = self.x_direction.kind if self.x_direction else "?"
        return f"surface {self.surface.id}: {name}, {centre_text(self.surface, self.epoch)}, {kind}"


def centre_text(surface: Surface, epoch: int | None) -> str:
    """Where a surface is centred: ``epoch E``, or a save of a retrain (the retrained network)."""
    if surface.retrain_id is not None:
        return f"retrain {surface.retrain_id} save {surface.save_index} (jumped from epoch {epoch})"
    return f"epoch {epoch}"


def get_surface(session: Session, surface_id: int) -> Surface:
    """The surface row; an unknown id is a NotFound naming `tracker show study`."""
    return Surface.find_or_raise_by_id(session, surface_id)


def _read(store: ArrayStore, session: Session, array_id: int | None) -> np.ndarray:
    return read_array(session, store, array_id)


def load_surface(session: Session, store: ArrayStore, surface_id: int) -> SurfaceData:
    """A complete surface with its arrays; an unfinished one is a clear error."""
    surface = get_surface(session, surface_id)
    if surface.loss_array_id is None:
        task = session.get(Task, surface.task_id) if surface.task_id else None
        state = task.status if task else "unknown"
        raise QueueError(
            f"surface {surface_id} is not complete yet (its completion task is {state}): "
            "run `tracker work`, then `tracker status` shows what is left"
        )
    ckpt = session.get(Checkpoint, surface.checkpoint_id) if surface.checkpoint_id else None
    model = session.get(Model, ckpt.model_id) if ckpt else None
    xs = np.linspace(surface.x_min, surface.x_max, surface.nx)
    ys = None
    if surface.ny is not None:
        ys = np.linspace(cast(float, surface.y_min), cast(float, surface.y_max), surface.ny)
    xd = session.get(Direction, surface.x_direction_id) if surface.x_direction_id else None
    yd = session.get(Direction, surface.y_direction_id) if surface.y_direction_id else None
    traj = None
    if xd is not None and xd.kind == "pca" and xd.projection_array_id is not None:
        traj = _read(store, session, xd.projection_array_id)
    return SurfaceData(
        surface=surface, model=model, epoch=ckpt.epoch if ckpt else None, xs=xs, ys=ys,
        loss=_read(store, session, surface.loss_array_id),
        acc=_read(store, session, surface.acc_array_id), x_direction=xd, y_direction=yd,
        trajectory=traj,
    )  # fmt: skip


def direction_tensors(
    session: Session, store: ArrayStore, direction: Direction, layout: list[dict[str, Any]]
) -> list[np.ndarray]:
    """A direction as one array per state tensor (Goldstein's direction-file layout)."""
    flat = _read(store, session, direction.array_id)
    return [flat[e["offset"] : e["offset"] + e["size"]].reshape(e["shape"]) for e in layout]


# Data sets whose loss is MSE unless a surface asks for another (tracker.surfaces.rows').
_REGRESSION = frozenset({"autompg"})


def _direction_text(direction: Direction | None) -> str | None:
    if direction is None:
        return None
    if direction.kind == "hessian":
        return (f"hessian:{direction.eigen_index} (direction {direction.id}, Hessian spectrum "
                f"{direction.hessian_spectrum_id})")  # fmt: skip
    if direction.kind == "random":
        return (f"random, seed {direction.seed}, {direction.normalization} normalisation, "
                f"ignore {direction.ignore}, {direction.target} (direction {direction.id})")  # fmt: skip
    return f"{direction.kind} (direction {direction.id})"


def describe_surface(session: Session, surface_id: int) -> dict[str, Any]:
    """Everything `tracker show surface` says about one surface, as plain values: centre,
    directions, grid, evaluation (loss, BatchNorm with its recompute batches, precision), the
    curvature map's settings, the centre gradient, state and summaries."""
    s = get_surface(session, surface_id)
    ckpt = session.get(Checkpoint, s.checkpoint_id) if s.checkpoint_id else None
    model = session.get(Model, ckpt.model_id) if ckpt else None
    task = session.get(Task, s.task_id) if s.task_id else None
    xd = session.get(Direction, s.x_direction_id) if s.x_direction_id else None
    yd = session.get(Direction, s.y_direction_id) if s.y_direction_id else None
    config = dict(s.eval_config or {})
    engine = config.get("engine") or {}
    if "loss" in config:
        loss, loss_from = config["loss"], "asked for"
    elif "loss" in engine:
        loss, loss_from = engine["loss"], "the data set's own"
    elif model is not None:
        default = "mse" if model.dataset in _REGRESSION else "cross_entropy"
        loss, loss_from = default, "the data set's own"
    else:
        loss, loss_from = None, "imported"
    bn: dict[str, Any] = {"mode": s.bn_mode}
    if s.bn_mode == "recompute":
        bn.update(batches=config.get("bn_batches"), batch_size=config.get("bn_batch_size"))
    curvature = config.get("curvature") if s.curvature else None
    if s.centre_gradient is not None:
        gradient: dict[str, Any] = {"stored": True, "values": s.centre_gradient}
    elif s.completed_at is None:
        gradient = {"stored": False, "why": "the surface is not complete"}
    elif xd is None or xd.kind != "random":
        gradient = {"stored": False, "why": "computed for random-direction surfaces only"}
    else:
        gradient = {"stored": False, "why": "not stored (completed before centre gradients were)"}
    grid = {"x": f"{s.x_min:g}:{s.x_max:g}:{s.nx}",
            "y": f"{s.y_min:g}:{s.y_max:g}:{s.ny}" if s.ny is not None else None,
            "tile": [s.tile_nx, s.tile_ny]}  # fmt: skip
    return {
        "id": s.id, "study_id": s.study_id,
        "status": "complete" if s.completed_at else (task.status if task else "unknown"),
        "model_id": model.id if model else None, "model_name": model.name if model else None,
        "epoch": ckpt.epoch if ckpt else None, "retrain_id": s.retrain_id,
        "save_index": s.save_index, "centre": centre_text(s, ckpt.epoch) if ckpt else None,
        "source": s.source,
        "x_direction": _direction_text(xd), "y_direction": _direction_text(yd), "grid": grid,
        "split": s.split, "subset": s.subset_size, "subset_seed": config.get("subset_seed"),
        "minibatches": s.n_minibatches, "minibatch_size": s.minibatch_size,
        "metrics": list(s.metrics or []), "loss": loss, "loss_from": loss_from, "bn": bn,
        "precision": config.get("precision"), "compile": config.get("compile"),
        "gpu": config.get("gpu"), "engine": engine or None,
        "curvature": curvature is not None, "curvature_settings": curvature,
        "centre_gradient": gradient,
        "summary": {k: getattr(s, k) for k in (
            "centre_loss", "min_loss", "min_x", "min_y", "rise_r025", "rise_r050", "rise_r100",
            "flatness_width")},
        "completed_at": s.completed_at, "provenance": surface_provenance(session, s),
    }  # fmt: skip


def study_surfaces(session: Session, study_id: int) -> list[Surface]:
    """A study's surfaces in id order."""
    return list(
        session.scalars(sa.select(Surface).where(Surface.study_id == study_id).order_by(Surface.id))
    )


def surface_provenance(session: Session, surface: Surface) -> str | None:
    """Where a surface was computed: the distinct provenance of its tile tasks (one line each,
    joined with '; '), so tiles from a GPU and a CPU worker are never mistaken for one run."""
    from tracker._provenance import describe
    from tracker._schema import Tile

    found = session.scalars(
        sa.select(Task.provenance).join(Tile, Tile.task_id == Task.id)
        .where(Tile.surface_id == surface.id, Task.provenance.is_not(None))
    ).all()  # fmt: skip
    lines = sorted({describe(p) for p in found})
    return "; ".join(lines) if lines else None
