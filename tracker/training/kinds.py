"""The task kinds of training: train (a model, its checkpoints) and direction.

Each body reads the rows it needs into plain values, calls ``compute``, writes its arrays to
Zarr and returns a small result; the ``finalize`` functions write result rows in the
transaction that marks the task done, so a row never points at an array that is not
complete. Every body can run twice (a lease expired, a worker died) and gives the same
numbers: all draws are seeded. The helpers at the top are shared by the kinds of the methods
built on trained models (surfaces, topology).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import sqlalchemy as sa
import torch
from sqlalchemy.orm import Session

from compute.state import Layout, check_length
from tracker._arrays import array_id, array_ref, read_array
from tracker._context import TaskContext
from tracker._device import cpu_only
from tracker._exceptions import SpecError
from tracker._mlflow import tracked_run
from tracker._registry import task_kind
from tracker._schema import Checkpoint, Direction, Model, Retrain, Study
from tracker._store import ArrayStore
from tracker.training.rows import IMPORT_KIND, checkpoint_path, direction_path

_THREADS_SET = False


def setup_torch() -> None:
    """Share the machine's cores between the worker processes of this machine."""
    global _THREADS_SET
    if _THREADS_SET:
        return
    threads = os.environ.get("TRACKER_TORCH_THREADS")
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    _THREADS_SET = True


def device() -> torch.device:
    """The device this worker computes on: its GPU if it has one (a loop of the CPU pool
    beside `tracker work --cuda` never uses it)."""
    if cpu_only():
        return torch.device("cpu")
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def read_vector(ctx: TaskContext, session: Session, array_id: int | None, what: str) -> torch.Tensor:
    """A stored flat vector (weights, a direction) as a float32 tensor."""
    data = read_array(session, ctx.store, array_id, verify=False, what=what)
    return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))


def vector_chunks(n: int) -> tuple[int]:
    """Chunks of a flat vector: whole, up to 4M values a chunk."""
    return (max(1, min(n, 1 << 22)),)


# --- train ------------------------------------------------------------------------------------


def _train_finalize(session: Session, ctx: TaskContext, result: dict[str, Any] | None) -> None:
    assert result is not None
    model = session.get(Model, result["model_id"])
    model.mlflow_run_id = result["run_id"]
    model.record_final(result["final"])
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


@task_kind("train", finalize=_train_finalize, batch=False, measures=True)
def train_task(ctx: TaskContext) -> dict[str, Any]:
    from compute.train import TrainSpec, train

    setup_torch()
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
        spec_ = ctx.write_array(paths[epoch], flat, chunks=vector_chunks(flat.shape[0]))
        saved[str(epoch)] = {"path": spec_.path, "metrics": metrics}
        layout_seen[:] = [layout]

    with tracked_run(
        ctx.mlflow_uri, study=study, name=name, params=params, tags=tags,
        previous_run_id=previous_run,
        interrupted=f"task {ctx.id} was interrupted (worker killed or lease lost)",
        use_prestarted=True,
    ) as run:  # fmt: skip
        run_id = run.run_id
        # Record the run at once: if this worker dies, the next attempt finds and closes it.
        with ctx.db.session() as session:  # type: ignore[union-attr]
            session.execute(
                sa.update(Model).where(Model.id == model_id).values(mlflow_run_id=run_id)
            )

        history: list[tuple[int, dict[str, float]]] = []

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            run.logger.metrics(metrics, step=epoch)
            history.append((epoch, metrics))

        final = train(spec, device=device(), on_epoch=on_epoch, on_checkpoint=on_checkpoint,
                      should_stop=ctx.check_lease)  # fmt: skip
        if run.side is not None:  # `tracker train`: the side process draws and logs them
            run.side.call("training_files", history=history, params=params, tags=tags, name=name)
        else:
            from tracker.training.plots import log_training_files

            log_training_files(run.client, run_id, history, params, tags, name)
    return {"model_id": model_id, "run_id": run_id, "final": final, "checkpoints": saved,
            "layout": layout_seen[0]}  # fmt: skip


# --- imported models -------------------------------------------------------------------------


@task_kind(IMPORT_KIND, batch=False)
def import_task(ctx: TaskContext) -> dict[str, Any]:
    """An imported model's task is done when it is written; requeued, it cannot redo the import
    (the files are on the importing machine), so it says how to."""
    files = ", ".join(str(f["path"]) for f in ctx.payload.get("files", []))
    raise SpecError(
        f"model {ctx.payload.get('model_id')} was imported from {files}: its checkpoints are "
        "written by `tracker import model`, run it again to import them"
    )


# --- directions -------------------------------------------------------------------------------


def checkpoint_vector(
    ctx: TaskContext, session: Session, ckpt_id: int
) -> tuple[torch.Tensor, Layout]:
    """A checkpoint's flat weights and their layout, checked against each other."""
    ckpt = session.get(Checkpoint, ckpt_id)
    vec = read_vector(ctx, session, ckpt.array_id, f"checkpoint {ckpt_id} (model {ckpt.model_id}, epoch {ckpt.epoch})")  # fmt: skip
    check_length(vec, ckpt.layout)
    return vec, ckpt.layout


def retrain_weights(session: Session, store: ArrayStore, retrain: Retrain, save: int) -> torch.Tensor:  # fmt: skip
    """Save ``save`` of a retrain's trajectory: the retrained network's flat weights, in the
    layout of the checkpoint it jumped from."""
    what = f"the trajectory of retrain {retrain.id}"
    ref = array_ref(session, retrain.trajectory_array_id, what)
    if not 0 <= save < int(ref.shape[0]):
        raise SpecError(f"{what} has saves 0..{int(ref.shape[0]) - 1}, not {save}: ask for "
                        "one of those")  # fmt: skip
    data = store.read(ref.path, (slice(save, save + 1), slice(None)))[0]
    return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))


def weights_at(
    session: Session, store: ArrayStore, ckpt: Checkpoint, retrain_id: int | None,
    save: int | None,
) -> tuple[torch.Tensor, str]:  # fmt: skip
    """The flat weights of a checkpoint, or of save ``save`` of retrain ``retrain_id`` (which
    jumped from ``ckpt``, in its layout), checked against the layout, and how to name them in
    a message: what a Hessian measure or a surface is centred on."""
    if retrain_id is None:
        what = f"checkpoint {ckpt.id} (model {ckpt.model_id}, epoch {ckpt.epoch})"
        data = read_array(session, store, ckpt.array_id, verify=False, what=what)
        weights = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        label = f"epoch {ckpt.epoch}"
    else:
        retrain = Retrain.find_or_raise_by_id(session, retrain_id)
        weights = retrain_weights(session, store, retrain, int(save or 0))
        label = f"retrain {retrain.id}, save {int(save or 0)}"
    check_length(weights, ckpt.layout)
    return weights, label


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

    setup_torch()
    ids = [int(i) for i in ctx.payload["direction_ids"]]
    out: list[dict[str, Any]] = []
    with ctx.session() as session:
        rows = [session.get(Direction, i) for i in ids]
        first = rows[0]
        if first.kind == "random":
            centre, layout = checkpoint_vector(ctx, session, first.checkpoint_a_id)
            vec = dirs.random_direction(
                layout, centre, seed=int(first.seed), normalization=first.normalization,
                ignore=first.ignore, target=first.target,
            )  # fmt: skip
            path = ctx.write_array(direction_path(first), vec.numpy(), vector_chunks(vec.numel())).path
            out.append({"id": first.id, "path": path})
        elif first.kind == "interpolation":
            a, layout = checkpoint_vector(ctx, session, first.checkpoint_a_id)
            b, layout_b = checkpoint_vector(ctx, session, first.checkpoint_b_id)
            from compute.state import same_layout

            if not same_layout(layout, layout_b):
                raise SpecError("the two ends of the interpolation have different layouts")
            vec = dirs.interpolation_direction(layout, a, b, target=first.target)
            path = ctx.write_array(direction_path(first), vec.numpy(), vector_chunks(vec.numel())).path
            out.append({"id": first.id, "path": path})
        else:  # pca: both components and the projected trajectory
            final_ckpt = session.get(Checkpoint, first.checkpoint_b_id)
            final, layout = checkpoint_vector(ctx, session, final_ckpt.id)
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
            traj = torch.stack([checkpoint_vector(ctx, session, c.id)[0] for c in ckpts])
            d1, d2, ratio, coords = dirs.pca_directions(
                layout, traj, final, ignore=first.ignore, target=first.target
            )
            proj = np.column_stack([np.array([c.epoch for c in ckpts], dtype=np.float64),
                                    np.asarray(coords, dtype=np.float64)])  # fmt: skip
            proj_path = direction_path(first) + "-projection"
            ctx.write_array(proj_path, proj)
            for row, vec, r in zip(rows, (d1, d2), np.asarray(ratio).tolist(), strict=True):
                path = ctx.write_array(direction_path(row), vec.numpy(), vector_chunks(vec.numel())).path
                out.append({"id": row.id, "path": path, "explained_variance": float(r),
                            "projection": proj_path if row.pca_component == 0 else None})  # fmt: skip
    return {"directions": out}
