"""The task kinds of loss surfaces: surface.tile and surface.complete.

Each body reads the rows it needs, computes, writes its arrays to Zarr, and returns a small
result; the ``finalize`` functions write result rows in the transaction that marks the task
done, so a row never points at an array that is not complete. Every body can run twice (a
lease expired, a worker died) and gives the same numbers: all draws are seeded, and the
surface engine's plan does not depend on timing.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import numpy as np
import sqlalchemy as sa
import torch
from sqlalchemy.orm import Session

from compute import data as data_mod
from compute.state import check_length
from compute.summary import summarize
from tracker._arrays import array_id
from tracker._context import TaskContext
from tracker._db import utcnow
from tracker._exceptions import SpecError
from tracker._registry import task_kind
from tracker._schema import Checkpoint, Direction, Model, Surface
from tracker._store import ArraySpec
from tracker.surfaces.rows import surface_dir
from tracker.training.kinds import checkpoint_vector, device, read_vector, setup_torch

# --- surfaces ---------------------------------------------------------------------------------


def coordinates(surface: Surface) -> tuple[np.ndarray, np.ndarray | None]:
    xs = np.linspace(surface.x_min, surface.x_max, surface.nx)
    ys = None
    if surface.ny is not None:
        ys = np.linspace(surface.y_min, surface.y_max, surface.ny)
    return xs, ys


def evaluation_groups(
    surface: Surface, ds: data_mod.Dataset
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The data a surface is evaluated on: a split, a fixed subset, or the first k minibatches."""
    x, y = ds.split(surface.split)
    if surface.subset_size is not None:
        seed = int((surface.eval_config or {}).get("subset_seed", 0))
        return [data_mod.fixed_subset(x, y, min(surface.subset_size, int(x.shape[0])), seed)]
    if surface.n_minibatches is not None:
        b = int(surface.minibatch_size)
        groups = [
            (x[i * b : (i + 1) * b], y[i * b : (i + 1) * b]) for i in range(surface.n_minibatches)
        ]
        groups = [g for g in groups if g[0].shape[0] > 0]
        if len(groups) < surface.n_minibatches:
            raise SpecError(
                f"the {surface.split} split has {x.shape[0]} samples, fewer than "
                f"{surface.n_minibatches} minibatches of {b}: ask for fewer or smaller minibatches"
            )
        return groups
    return [(x, y)]


class _SurfaceCache:
    """Evaluators of recent surfaces, so every tile of a surface reuses data and directions."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self.items: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    def get(self, ctx: TaskContext, surface_id: int) -> tuple[Any, Surface]:
        # Keyed on the database and the surface's spec hash too: one process may serve two
        # databases (tests, a reset database), where the same id is another surface.
        with ctx.session() as session:
            digest = session.scalar(sa.select(Surface.spec_hash).where(Surface.id == surface_id))
        if digest is None:
            raise SpecError(f"surface {surface_id} no longer exists")
        key = (ctx.db.url if ctx.db else "", ctx.store.url, surface_id, digest)
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = _build_evaluator(ctx, surface_id)
        self.items[key] = value
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return value


_CACHE = _SurfaceCache()


def _build_evaluator(ctx: TaskContext, surface_id: int) -> tuple[Any, Surface]:
    from compute.engine import SurfaceEvaluator
    from compute.train import TrainSpec

    with ctx.session() as session:
        surface = session.get(Surface, surface_id)
        if surface is None:
            raise SpecError(f"surface {surface_id} no longer exists")
        ckpt = session.get(Checkpoint, surface.checkpoint_id)
        model_row = session.get(Model, ckpt.model_id)
        spec = TrainSpec.from_row(model_row)
        centre, layout = checkpoint_vector(ctx, session, ckpt.id)
        dir_vecs = []
        for did in (surface.x_direction_id, surface.y_direction_id):
            if did is None:
                continue
            drow = session.get(Direction, did)
            vec = read_vector(ctx, session, drow.array_id, f"direction {did}")
            check_length(vec, layout)
            dir_vecs.append(vec)
        session.expunge(surface)
    ds = spec.load_data()
    model = spec.build(ds)
    dev = device()
    evaluator = SurfaceEvaluator(
        model.to(dev), layout, centre, dir_vecs, evaluation_groups(surface, ds),
        loss=surface_loss(surface, ds), bn_mode=surface.bn_mode, device=dev,
        precision=(surface.eval_config or {}).get("precision", "fp32"),
        bn_batches=bn_batches(surface, ds),
    )  # fmt: skip
    return evaluator, surface


def bn_batches(surface: Surface, ds: data_mod.Dataset) -> list[torch.Tensor] | None:
    """``--bn recompute``: the first K batches of B rows of the train split (K and B on the row)."""
    if surface.bn_mode != "recompute":
        return None
    config = surface.eval_config or {}
    k, b = int(config["bn_batches"]), int(config["bn_batch_size"])
    x, _ = ds.split("train")
    if k * b > x.shape[0]:
        raise SpecError(
            f"--bn recompute asks for {k} batches of {b} training rows, but the train split has "
            f"{x.shape[0]}: ask for at most {x.shape[0] // b} batches"
        )
    return [x[i * b : (i + 1) * b] for i in range(k)]


def surface_loss(surface: Surface, ds: data_mod.Dataset) -> str:
    """The engine's loss: the row's explicit one (``eval_config['loss']``) or the data set's;
    mse on class labels is Goldstein's: the softmax output against the one-hot label."""
    own = data_mod.loss_kind(ds)
    loss = (surface.eval_config or {}).get("loss") or own
    return "softmax_mse" if loss == "mse" and own == "cross_entropy" else str(loss)


def _array_paths(surface: Surface) -> dict[str, str]:
    base = surface_dir(surface)
    return {"loss": f"{base}/loss", "acc": f"{base}/acc"}


def _array_shape(surface: Surface) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    groups = surface.n_minibatches or 1
    shape = (groups, surface.ny or 1, surface.nx)
    chunks = (groups, surface.tile_ny or 1, surface.tile_nx)
    return shape, chunks


@task_kind("surface.tile", batch=False)
def surface_tile(ctx: TaskContext) -> dict[str, Any]:
    setup_torch()
    surface_id = int(ctx.payload["surface_id"])
    ix0, ix1, iy0, iy1 = (int(v) for v in ctx.payload["tile"])
    evaluator, surface = _CACHE.get(ctx, surface_id)
    xs, ys = coordinates(surface)
    if ys is None:
        coords = xs[ix0:ix1, None]
    else:
        gx, gy = np.meshgrid(xs[ix0:ix1], ys[iy0:iy1])  # row-major: y outer, x inner
        coords = np.column_stack([gx.ravel(), gy.ravel()])
    started = time.perf_counter()
    values = evaluator.evaluate(coords)
    seconds = time.perf_counter() - started
    ctx.check_lease()
    shape, chunks = _array_shape(surface)
    groups = shape[0]
    for name, path in _array_paths(surface).items():
        block = np.asarray(values[name], dtype=np.float32).reshape(groups, iy1 - iy0, ix1 - ix0)
        ctx.store.create(path, shape, np.float32, chunks)
        ctx.write_block(path, (slice(0, groups), slice(iy0, iy1), slice(ix0, ix1)), block)
    return {"points": int(coords.shape[0]), "seconds": round(seconds, 4),
            "points_per_s": round(coords.shape[0] / max(seconds, 1e-9), 1),
            "plan": evaluator.plan}  # fmt: skip


def _range_finalize(session: Session, ctx: TaskContext, result: dict[str, Any] | None) -> None:
    assert result is not None
    surface = session.get(Surface, result["surface_id"])
    surface.x_min, surface.x_max, surface.y_min, surface.y_max = result["range"]


@task_kind("surface.range", finalize=_range_finalize)
def surface_range(ctx: TaskContext) -> dict[str, Any]:
    """A PCA grid around the projected path (``rows.path_range``), set before any tile runs."""
    from tracker._arrays import read_array
    from tracker.surfaces.rows import path_range

    surface_id = int(ctx.payload["surface_id"])
    with ctx.session() as session:
        surface = session.get(Surface, surface_id)
        if surface is None:
            raise SpecError(f"surface {surface_id} no longer exists")
        direction = session.get(Direction, surface.x_direction_id)
        if direction is None or direction.projection_array_id is None:
            raise SpecError(f"surface {surface_id}: its PCA direction has no projected path")
        trajectory = read_array(session, ctx.store, direction.projection_array_id)
    return {"surface_id": surface_id, "range": list(path_range(trajectory))}


def _complete_finalize(session: Session, ctx: TaskContext, result: dict[str, Any] | None) -> None:
    assert result is not None
    surface = session.get(Surface, result["surface_id"])
    for name, column in (("loss", "loss_array_id"), ("acc", "acc_array_id")):
        setattr(surface, column, array_id(session, result["paths"][name]))
    for key, value in result["summary"].items():
        setattr(surface, key, value)
    surface.centre_gradient = result.get("centre_gradient")
    surface.completed_at = session.scalar(sa.select(utcnow()))


@task_kind("surface.complete", finalize=_complete_finalize)
def surface_complete(ctx: TaskContext) -> dict[str, Any]:
    surface_id = int(ctx.payload["surface_id"])
    with ctx.session() as session:
        surface = session.get(Surface, surface_id)
        session.expunge(surface)
    shape, chunks = _array_shape(surface)
    paths = _array_paths(surface)
    contents = {}
    for name, path in paths.items():
        spec = ArraySpec(path, shape, "float32", chunks)
        contents[name] = ctx.store.verify(spec)
        ctx.record_array(spec)
    loss = contents["loss"]
    xs, ys = coordinates(surface)
    summary = summarize(xs, ys, loss)
    return {"surface_id": surface_id, "paths": paths, "summary": summary,
            "centre_gradient": _centre_gradient(ctx, surface)}  # fmt: skip


def _centre_gradient(ctx: TaskContext, surface: Surface) -> list[list[float | None]] | None:
    """Seed 001's arrow (``SurfaceEvaluator.centre_gradient``) for a random-direction surface;
    an interpolation or PCA plane has none. Non-finite values are stored as null."""
    with ctx.session() as session:
        kind = session.scalar(sa.select(Direction.kind).where(Direction.id == surface.x_direction_id))
    if kind != "random":
        return None
    setup_torch()
    evaluator, _ = _CACHE.get(ctx, surface.id)
    grad = evaluator.centre_gradient()
    return [[float(v) if np.isfinite(v) else None for v in row] for row in grad]
