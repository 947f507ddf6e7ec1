"""The task kinds of loss-surface work: train, direction, surface.tile, surface.complete.

Each body reads the rows it needs, computes, writes its arrays to Zarr, and returns a small
result; the ``finalize`` functions write result rows in the transaction that marks the task
done, so a row never points at an array that is not complete. Every body can run twice (a
lease expired, a worker died) and gives the same numbers: all draws are seeded, and the
surface engine's plan does not depend on timing.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import sqlalchemy as sa
import torch
from sqlalchemy.orm import Session

from compute import data as data_mod
from compute.state import Layout, check_length
from compute.summary import summarize
from tracker._arrays import array_id, read_array
from tracker._context import TaskContext
from tracker._db import utcnow
from tracker._exceptions import SpecError
from tracker._landscape import checkpoint_path, direction_path, surface_dir
from tracker._mlflow import tracked_run
from tracker._registry import task_kind
from tracker._schema import Checkpoint, Direction, Model, Study, Surface
from tracker._store import ArraySpec

_THREADS_SET = False


def _setup_torch() -> None:
    """Share the machine's cores between the worker processes of this machine."""
    global _THREADS_SET
    if _THREADS_SET:
        return
    threads = os.environ.get("TRACKER_TORCH_THREADS")
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    _THREADS_SET = True


def device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def read_vector(ctx: TaskContext, session: Session, array_id: int | None, what: str) -> torch.Tensor:
    """A stored flat vector (weights, a direction) as a float32 tensor."""
    data = read_array(session, ctx.store, array_id, verify=False, what=what)
    return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))


def _chunks(n: int) -> tuple[int]:
    return (max(1, min(n, 1 << 22)),)


# --- train ------------------------------------------------------------------------------------


def _train_finalize(session: Session, ctx: TaskContext, result: dict[str, Any] | None) -> None:
    assert result is not None
    model = session.get(Model, result["model_id"])
    model.mlflow_run_id = result["run_id"]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        setattr(model, key, result["final"].get(key))
    for epoch_text, info in result["checkpoints"].items():
        epoch = int(epoch_text)
        ckpt = session.scalar(
            sa.select(Checkpoint).where(Checkpoint.model_id == model.id, Checkpoint.epoch == epoch)
        )
        if ckpt is None:
            ckpt = Checkpoint(model_id=model.id, epoch=epoch)
            session.add(ckpt)
        ckpt.array_id = array_id(session, info["path"])
        ckpt.layout = result["layout"]
        for key, value in info["metrics"].items():
            setattr(ckpt, key, value)


@task_kind("train", finalize=_train_finalize, batch=False)
def train_task(ctx: TaskContext) -> dict[str, Any]:
    from compute.train import TrainSpec, train

    _setup_torch()
    model_id = int(ctx.payload["model_id"])
    with ctx.session() as session:
        model = session.get(Model, model_id)
        if model is None:
            raise SpecError(f"model {model_id} no longer exists")
        spec = TrainSpec.from_row(model)
        study = session.get(Study, model.study_id).name
        previous_run = model.mlflow_run_id
        paths = {e: checkpoint_path(model, e) for e in spec.checkpoint_epochs}
        name = model.name or f"model-{model.id}"
        paths.setdefault(spec.epochs, checkpoint_path(model, spec.epochs))
    params = {
        "architecture": spec.architecture, "arch_config": spec.arch_config,
        "dataset": spec.dataset, "dataset_config": spec.dataset_config,
        "optimizer": spec.optimizer, "lr": spec.lr, "momentum": spec.momentum,
        "weight_decay": spec.weight_decay, "batch_size": spec.batch_size, "epochs": spec.epochs,
        "seed": spec.seed, "label_corruption": spec.label_corruption,
        "lr_schedule": spec.lr_schedule, "checkpoint_epochs": list(spec.checkpoint_epochs),
    }  # fmt: skip
    tags = {"tracker.model_id": str(model_id), "tracker.study": study,
            "tracker.task_id": str(ctx.id), "tracker.attempt": str(ctx.attempt)}  # fmt: skip
    saved: dict[str, Any] = {}
    layout_seen: list[Layout] = []

    def on_checkpoint(
        epoch: int, flat: np.ndarray, layout: Layout, metrics: dict[str, float]
    ) -> None:
        spec_ = ctx.write_array(paths[epoch], flat, chunks=_chunks(flat.shape[0]))
        saved[str(epoch)] = {"path": spec_.path, "metrics": metrics}
        layout_seen[:] = [layout]

    with tracked_run(
        ctx.mlflow_uri, study=study, name=name, params=params, tags=tags,
        previous_run_id=previous_run,
        interrupted=f"task {ctx.id} was interrupted (worker killed or lease lost)",
    ) as run:  # fmt: skip
        run_id = run.run_id
        # Record the run at once: if this worker dies, the next attempt finds and closes it.
        with ctx.db.session() as session:  # type: ignore[union-attr]
            session.execute(
                sa.update(Model).where(Model.id == model_id).values(mlflow_run_id=run_id)
            )

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            run.logger.metrics(metrics, step=epoch)

        final = train(spec, device=device(), on_epoch=on_epoch, on_checkpoint=on_checkpoint,
                      should_stop=ctx.check_lease)  # fmt: skip
    return {"model_id": model_id, "run_id": run_id, "final": final, "checkpoints": saved,
            "layout": layout_seen[0]}  # fmt: skip


# --- directions -------------------------------------------------------------------------------


def _checkpoint_vector(
    ctx: TaskContext, session: Session, ckpt_id: int
) -> tuple[torch.Tensor, Layout]:
    ckpt = session.get(Checkpoint, ckpt_id)
    vec = read_vector(ctx, session, ckpt.array_id, f"checkpoint {ckpt_id} (model {ckpt.model_id}, epoch {ckpt.epoch})")  # fmt: skip
    check_length(vec, ckpt.layout)
    return vec, ckpt.layout


def _direction_finalize(session: Session, ctx: TaskContext, result: dict[str, Any] | None) -> None:
    assert result is not None
    for item in result["directions"]:
        row = session.get(Direction, item["id"])
        row.array_id = array_id(session, item["path"])
        if item.get("explained_variance") is not None:
            row.explained_variance = item["explained_variance"]
        if item.get("projection"):
            row.projection_array_id = array_id(session, item["projection"])


@task_kind("direction", finalize=_direction_finalize, batch=False)
def direction_task(ctx: TaskContext) -> dict[str, Any]:
    from compute import directions as dirs

    _setup_torch()
    ids = [int(i) for i in ctx.payload["direction_ids"]]
    out: list[dict[str, Any]] = []
    with ctx.session() as session:
        rows = [session.get(Direction, i) for i in ids]
        first = rows[0]
        if first.kind == "random":
            centre, layout = _checkpoint_vector(ctx, session, first.checkpoint_a_id)
            vec = dirs.random_direction(
                layout, centre, seed=int(first.seed), normalization=first.normalization,
                ignore=first.ignore, target=first.target,
            )  # fmt: skip
            path = ctx.write_array(direction_path(first), vec.numpy(), _chunks(vec.numel())).path
            out.append({"id": first.id, "path": path})
        elif first.kind == "interpolation":
            a, layout = _checkpoint_vector(ctx, session, first.checkpoint_a_id)
            b, layout_b = _checkpoint_vector(ctx, session, first.checkpoint_b_id)
            from compute.state import same_layout

            if not same_layout(layout, layout_b):
                raise SpecError("the two ends of the interpolation have different layouts")
            vec = dirs.interpolation_direction(layout, a, b, target=first.target)
            path = ctx.write_array(direction_path(first), vec.numpy(), _chunks(vec.numel())).path
            out.append({"id": first.id, "path": path})
        else:  # pca: both components and the projected trajectory
            final_ckpt = session.get(Checkpoint, first.checkpoint_b_id)
            final, layout = _checkpoint_vector(ctx, session, final_ckpt.id)
            ckpts = session.scalars(
                sa.select(Checkpoint)
                .where(Checkpoint.model_id == final_ckpt.model_id, Checkpoint.epoch <= final_ckpt.epoch)
                .order_by(Checkpoint.epoch)
            ).all()  # fmt: skip
            if len(ckpts) < 3:
                raise SpecError(
                    f"PCA directions need at least 3 checkpoints of model {final_ckpt.model_id}, "
                    f"it keeps {len(ckpts)}: enqueue the model with more checkpoint epochs"
                )
            traj = torch.stack([_checkpoint_vector(ctx, session, c.id)[0] for c in ckpts])
            d1, d2, ratio, coords = dirs.pca_directions(
                layout, traj, final, ignore=first.ignore, target=first.target
            )
            proj = np.column_stack([np.array([c.epoch for c in ckpts], dtype=np.float64),
                                    np.asarray(coords, dtype=np.float64)])  # fmt: skip
            proj_path = direction_path(first) + "-projection"
            ctx.write_array(proj_path, proj)
            for row, vec, r in zip(rows, (d1, d2), np.asarray(ratio).tolist(), strict=True):
                path = ctx.write_array(direction_path(row), vec.numpy(), _chunks(vec.numel())).path
                out.append({"id": row.id, "path": path, "explained_variance": float(r),
                            "projection": proj_path if row.pca_component == 0 else None})  # fmt: skip
    return {"directions": out}


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
        centre, layout = _checkpoint_vector(ctx, session, ckpt.id)
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
        loss=data_mod.loss_kind(ds), bn_mode=surface.bn_mode, device=dev,
        precision=(surface.eval_config or {}).get("precision", "fp32"),
    )  # fmt: skip
    return evaluator, surface


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
    _setup_torch()
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
        ctx.store.write_block(path, (slice(None), slice(iy0, iy1), slice(ix0, ix1)), block)
    return {"points": int(coords.shape[0]), "seconds": round(seconds, 4),
            "points_per_s": round(coords.shape[0] / max(seconds, 1e-9), 1),
            "plan": evaluator.plan}  # fmt: skip


def _complete_finalize(session: Session, ctx: TaskContext, result: dict[str, Any] | None) -> None:
    assert result is not None
    surface = session.get(Surface, result["surface_id"])
    for name, column in (("loss", "loss_array_id"), ("acc", "acc_array_id")):
        setattr(surface, column, array_id(session, result["paths"][name]))
    for key, value in result["summary"].items():
        setattr(surface, key, value)
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
    return {"surface_id": surface_id, "paths": paths, "summary": summary}
