"""The task kinds of loss surfaces: surface.tile and surface.complete.

Each body reads the rows it needs, computes, writes its arrays to Zarr, and returns a small
result; the ``finalize`` functions write result rows in the transaction that marks the task
done, so a row never points at an array that is not complete. Every body can run twice (a
lease expired, a worker died) and gives the same numbers: all draws are seeded, and the
surface engine's plan does not depend on timing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
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
from tracker._schema import Checkpoint, Direction, Model, Surface, Task, Tile
from tracker._store import ArraySpec
from tracker.surfaces.rows import surface_dir
from tracker.training.kinds import (
    device,
    read_vector,
    setup_torch,
    weights_at,
)

log = logging.getLogger("tracker.surfaces")

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
    """Evaluators of recent surfaces, so every tile of a surface reuses data and directions.

    One cache per thread: an evaluator's working copy (its flat weight vector, its buffers) is
    overwritten point by point, so the worker loops that `tracker work` runs as threads of one
    process must never share one. Two loops on tiles of one surface each build their own.
    """

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._local = threading.local()

    @property
    def items(self) -> OrderedDict[tuple[Any, ...], Any]:
        """This thread's evaluators, most recently used last."""
        items = getattr(self._local, "items", None)
        if items is None:
            items = self._local.items = OrderedDict()
        return items

    def get(self, ctx: TaskContext, surface_id: int) -> tuple[Any, Surface, CurvatureMap | None]:
        # Keyed on the database and the surface's spec hash too: one process may serve two
        # databases (tests, a reset database), where the same id is another surface.
        with ctx.session() as session:
            digest = session.scalar(sa.select(Surface.spec_hash).where(Surface.id == surface_id))
        if digest is None:
            raise SpecError(f"surface {surface_id} no longer exists")
        key = (ctx.db.url if ctx.db else "", ctx.store.url, surface_id, digest)
        items = self.items
        if key in items:
            items.move_to_end(key)
            return items[key]
        value = _build_evaluator(ctx, surface_id)
        items[key] = value
        while len(items) > self.size:
            items.popitem(last=False)
        return value


_CACHE = _SurfaceCache()


def _build_evaluator(
    ctx: TaskContext, surface_id: int
) -> tuple[Any, Surface, CurvatureMap | None]:
    from compute.engine import SurfaceEvaluator
    from compute.train import TrainSpec

    with ctx.session() as session:
        surface = session.get(Surface, surface_id)
        if surface is None:
            raise SpecError(f"surface {surface_id} no longer exists")
        ckpt = session.get(Checkpoint, surface.checkpoint_id)
        model_row = session.get(Model, ckpt.model_id)
        spec = TrainSpec.from_row(model_row)
        # The checkpoint, or a retrained network: its trajectory's save, in the same layout.
        centre, _ = weights_at(session, ctx.store, ckpt, surface.retrain_id, surface.save_index)
        layout = ckpt.layout
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
    groups = evaluation_groups(surface, ds)
    evaluator = SurfaceEvaluator(
        model.to(dev), layout, centre, dir_vecs, groups,
        loss=surface_loss(surface, ds), bn_mode=surface.bn_mode, device=dev,
        precision=(surface.eval_config or {}).get("precision", "fp32"),
        compile_mode=(surface.eval_config or {}).get("compile", "none"),
        bn_batches=bn_batches(surface, ds),
    )  # fmt: skip
    curvature = None
    if surface.curvature:
        settings = dict((surface.eval_config or {}).get("curvature") or {})
        curvature = CurvatureMap(
            model=model, layout=layout, centre=centre.to(dev),
            directions=[d.to(dev) for d in dir_vecs],
            groups=[(gx.to(dev), gy.to(dev)) for gx, gy in groups],
            loss=data_mod.loss_kind(ds), bn=surface.bn_mode,
            tol=float(settings.get("tol", 1e-3)), max_iter=int(settings.get("max_iter", 100)),
            seed=int(settings.get("seed", 0)),
        )  # fmt: skip
    return evaluator, surface, curvature


CURVATURE_ARRAYS = ("lambda_min", "lambda_max", "lambda_ratio")


@dataclass
class CurvatureMap:
    """Goldstein's min/max Hessian eigenvalue map: at each grid point the weights
    centre + x d1 (+ y d2) are loaded into the network, and per evaluation group the
    algebraically largest and smallest Hessian eigenvalues are found by Lanczos
    (``compute.curvature.extreme_eigenvalues``: both ends of one seeded run, each equal to
    ``top_eigenvalues`` with which='largest' / 'smallest');
    the ratio is |lambda_min / lambda_max| (NaN where lambda_max is 0)."""

    model: torch.nn.Module
    layout: Any
    centre: torch.Tensor
    directions: list[torch.Tensor]
    groups: list[tuple[torch.Tensor, torch.Tensor]]
    loss: str
    bn: str
    tol: float
    max_iter: int
    seed: int

    def at(self, coords: np.ndarray, check: Any = None) -> dict[str, np.ndarray]:
        """[groups, points] arrays of lambda_min, lambda_max and their ratio."""
        from compute import curvature as cv
        from compute.state import load_flat

        shape = (len(self.groups), coords.shape[0])
        out = {name: np.full(shape, np.nan) for name in CURVATURE_ARRAYS}
        for p, point in enumerate(np.asarray(coords, dtype=np.float64)):
            theta = self.centre.clone()
            for c, d in zip(point.tolist(), self.directions, strict=True):
                theta.add_(d, alpha=c)
            load_flat(self.model, theta, self.layout)
            for g, (gx, gy) in enumerate(self.groups):
                op = cv.HessianOperator(self.model, gx, gy, loss=self.loss, bn=self.bn)
                ends = cv.extreme_eigenvalues(op, tol=self.tol, max_iter=self.max_iter,
                                              seed=self.seed)  # fmt: skip
                if check is not None:
                    check()
                hi, lo = ends.largest, ends.smallest
                out["lambda_max"][g, p], out["lambda_min"][g, p] = hi, lo
                out["lambda_ratio"][g, p] = abs(lo / hi) if hi != 0 else np.nan
        return out


def _out_of_memory(err: BaseException) -> bool:
    """A device allocation failure (torch raises OutOfMemoryError, or a RuntimeError from
    older code paths that says so)."""
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower()
    )


def evaluate_shrinking(evaluator: Any, coords: np.ndarray) -> dict[str, np.ndarray]:
    """``evaluator.evaluate`` that halves K (or the sample batch) after each out-of-memory
    error and tries again; at the smallest size the tile fails with one line."""
    while True:
        try:
            return evaluator.evaluate(coords)
        except Exception as err:
            if not _out_of_memory(err):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            plan = evaluator.plan
            if not evaluator.shrink():
                raise SpecError(
                    f"out of device memory even at {plan['points_per_call']} point(s) per call "
                    f"and {plan['sample_batch']} sample(s) per batch on {plan['device']}: use "
                    "--subset or smaller --minibatch-size, or a GPU with more memory"
                ) from None
            log.warning("tile out of memory on %s: retrying with K=%s, sample batch %s",
                        plan["device"], evaluator.plan["points_per_call"],
                        evaluator.plan["sample_batch"])  # fmt: skip


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
    names = ("loss", "acc") + (CURVATURE_ARRAYS if surface.curvature else ())
    return {name: f"{base}/{name}" for name in names}


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
    evaluator, surface, curvature = _CACHE.get(ctx, surface_id)
    xs, ys = coordinates(surface)
    if ys is None:
        coords = xs[ix0:ix1, None]
    else:
        gx, gy = np.meshgrid(xs[ix0:ix1], ys[iy0:iy1])  # row-major: y outer, x inner
        coords = np.column_stack([gx.ravel(), gy.ravel()])
    started = time.perf_counter()
    values = dict(evaluate_shrinking(evaluator, coords))
    if curvature is not None:
        values.update(curvature.at(coords, ctx.check_lease))
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
    for name, path in result["paths"].items():
        setattr(surface, f"{name}_array_id", array_id(session, path))
    for key, value in result["summary"].items():
        setattr(surface, key, value)
    if result.get("engine"):  # the evaluator's choices, for comparing surfaces fairly
        surface.eval_config = {**(surface.eval_config or {}), "engine": result["engine"]}
    surface.centre_gradient = result.get("centre_gradient")
    surface.completed_at = session.scalar(sa.select(utcnow()))


@task_kind("surface.complete", finalize=_complete_finalize, measures=True)
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
            "engine": _engine_choice(ctx, surface_id),
            "centre_gradient": _centre_gradient(ctx, surface)}  # fmt: skip


_ENGINE_KEYS = ("first_affine", "first_affine_source", "first_affine_note", "strategy",
                "precision", "loss", "device")  # fmt: skip


def _engine_choice(ctx: TaskContext, surface_id: int) -> dict[str, Any]:
    """What the evaluator chose for this surface (from a tile's result): the first-affine
    shortcut or the plain path, strategy, precision, loss."""
    with ctx.session() as session:
        result = session.scalar(
            sa.select(Task.result).join(Tile, Tile.task_id == Task.id)
            .where(Tile.surface_id == surface_id).order_by(Tile.id).limit(1)
        )  # fmt: skip
    plan = (result or {}).get("plan") or {}
    return {k: plan[k] for k in _ENGINE_KEYS if k in plan}


def _centre_gradient(ctx: TaskContext, surface: Surface) -> list[list[float | None]] | None:
    """Seed 001's arrow (``SurfaceEvaluator.centre_gradient``) for a random-direction surface;
    an interpolation or PCA plane has none. Non-finite values are stored as null."""
    with ctx.session() as session:
        kind = session.scalar(sa.select(Direction.kind).where(Direction.id == surface.x_direction_id))
    if kind != "random":
        return None
    setup_torch()
    evaluator = _CACHE.get(ctx, surface.id)[0]
    grad = evaluator.centre_gradient()
    return [[float(v) if np.isfinite(v) else None for v in row] for row in grad]
