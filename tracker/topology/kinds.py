"""Task kinds of jump-and-retrain topology: retrain, embedding, persistence.

``retrain`` writes its trajectory row by row into a Zarr array [saves, D] whose chunks are
(1, up to 65,536 columns): each save owns its chunks, and no step holds more than one save.
A retrain killed mid-run restarts from the jump when its lease expires: the run is a function
of its spec, so the second attempt rewrites the same values over the same chunks, and the
trajectory rows are written once, in the transaction that marks the task done (unique on
retrain and save index), so there are never duplicate points. The dead attempt's MLflow run
is closed as FAILED and the new attempt logs a fresh one.

``embedding`` streams the trajectories of all of a model's retrains into an exact PCA (see
``compute.topology``), embeds the scores with cosine PHATE and stores the coordinates, the
diffusion potential and the sample order. ``persistence`` filters the potential's kNN graph
by a per-sample loss and stores the diagram and its summaries.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from compute.state import check_length
from compute.topology import trajectory_chunks
from tracker._arrays import array_id, array_ref
from tracker._context import TaskContext
from tracker._exceptions import SpecError
from tracker._mlflow import tracked_run
from tracker._registry import task_kind
from tracker._schema import (
    Checkpoint,
    Direction,
    Embedding,
    Model,
    PersistenceDiagram,
    Retrain,
    Study,
    TrajectoryPoint,
)
from tracker.topology.results import sample_loss
from tracker.topology.rows import diagram_path, embedding_dir, retrain_dir
from tracker.training.kinds import checkpoint_vector, device, read_vector, setup_torch

METRIC_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
# Order array columns, one row per sample.
ORDER_COLUMNS = ("retrain_id", "task_id", "save_index", "epoch", "seed", "step_size")


# --- retrain ----------------------------------------------------------------------------------


def _float(value: float | str | None) -> float | None:
    return None if value is None else float(value)


def _retrain_finalize(session: Session, ctx: TaskContext, result: dict[str, Any] | None) -> None:
    assert result is not None
    retrain = session.get(Retrain, result["retrain_id"])
    retrain.trajectory_array_id = array_id(session, result["path"])
    retrain.mlflow_run_id = result["run_id"]
    session.execute(sa.delete(TrajectoryPoint).where(TrajectoryPoint.retrain_id == retrain.id))
    for point in result["points"]:
        session.add(TrajectoryPoint(retrain_id=retrain.id, save_index=point["save_index"],
                                    epoch=point["epoch"],
                                    **{k: _float(point["metrics"].get(k)) for k in METRIC_KEYS}))  # fmt: skip


@task_kind("retrain", finalize=_retrain_finalize, batch=False)
def retrain_task(ctx: TaskContext) -> dict[str, Any]:
    from compute.retrain import RetrainSpec, jump_and_retrain
    from compute.train import TrainSpec

    setup_torch()
    retrain_id = int(ctx.payload["retrain_id"])
    with ctx.session() as session:
        row = session.get(Retrain, retrain_id)
        if row is None:
            raise SpecError(f"retrain {retrain_id} no longer exists")
        model = session.get(Model, row.model_id)
        base = TrainSpec.from_row(model)
        spec = RetrainSpec(seed=row.seed, step_size=row.step_size, epochs=row.epochs, lr=row.lr,
                           momentum=row.momentum, weight_decay=row.weight_decay,
                           batch_size=row.batch_size, saves_per_epoch=row.saves_per_epoch,
                           augment=row.augment)  # fmt: skip
        theta_star, layout = checkpoint_vector(ctx, session, row.checkpoint_id)
        direction_row = session.get(Direction, row.direction_id)
        direction = read_vector(ctx, session, direction_row.array_id, f"direction {row.direction_id}")  # fmt: skip
        check_length(direction, layout)
        path = retrain_dir(row) + "/trajectory"
        study = session.get(Study, row.study_id).name
        parent_run, previous_run = model.mlflow_run_id, row.mlflow_run_id
        name = f"{model.name or f'model-{model.id}'}-retrain-r{row.seed}-s{row.step_size:g}"
        epoch = session.get(Checkpoint, row.checkpoint_id).epoch
    n_columns = int(theta_star.numel())
    array = ctx.store.create(path, (spec.n_saves, n_columns), np.float32,
                             trajectory_chunks(n_columns))  # fmt: skip
    params = {"seed": spec.seed, "step_size": spec.step_size, "epochs": spec.epochs,
              "lr": spec.lr, "momentum": spec.momentum, "weight_decay": spec.weight_decay,
              "batch_size": spec.batch_size, "saves_per_epoch": spec.saves_per_epoch,
              "augment": spec.augment, "base_epoch": epoch, "direction_id": direction_row.id,
              "direction": "filter-normalised, biases and BatchNorm zeroed"}  # fmt: skip
    tags = {"tracker.retrain_id": str(retrain_id), "tracker.model_id": str(model.id),
            "tracker.study": study, "tracker.task_id": str(ctx.id),
            "tracker.attempt": str(ctx.attempt)}  # fmt: skip
    points: list[dict[str, Any]] = []
    with tracked_run(
        ctx.mlflow_uri, study=study, name=name, params=params, tags=tags,
        parent_run_id=parent_run, previous_run_id=previous_run,
        interrupted=f"task {ctx.id} was interrupted (worker killed or lease lost)",
    ) as run:  # fmt: skip
        run_id = run.run_id
        with ctx.db.session() as session:  # type: ignore[union-attr]
            session.execute(sa.update(Retrain).where(Retrain.id == retrain_id).values(mlflow_run_id=run_id))  # fmt: skip

        def on_save(index: int, epoch: float, flat: np.ndarray, metrics: dict[str, float]) -> None:
            ctx.check_lease()
            ctx.store.write_block(path, (slice(index, index + 1), slice(None)), flat[None, :])
            points.append({"save_index": index, "epoch": epoch, "metrics": dict(metrics)})
            run.logger.metrics({**metrics, "epoch": epoch}, step=index)

        jump_and_retrain(base, spec, theta_star, direction, layout, on_save=on_save,
                         device=device(), should_stop=ctx.check_lease)  # fmt: skip
        ctx.check_lease()
        ctx.record_array(array)
    return {"retrain_id": retrain_id, "run_id": run_id, "path": path, "points": points}


# --- embedding --------------------------------------------------------------------------------


def _param_columns(layout: list[dict[str, Any]]) -> np.ndarray:
    """Indices of trainable parameters in the flat state (running statistics left out)."""
    parts = [np.arange(e["offset"], e["offset"] + e["size"]) for e in layout if e["kind"] == "param"]  # fmt: skip
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _embedding_finalize(session: Session, ctx: TaskContext, result: dict[str, Any] | None) -> None:
    assert result is not None
    row = session.get(Embedding, result["embedding_id"])
    for key in ("coords", "potential", "order"):
        setattr(row, f"{key}_array_id", array_id(session, result["paths"][key]))
    row.t, row.n_samples = result["t"], result["n_samples"]
    row.config = {**(row.config or {}), **result["config"]}


@task_kind("embedding", finalize=_embedding_finalize, batch=False)
def embedding_task(ctx: TaskContext) -> dict[str, Any]:
    from compute.topology import (
        NonFiniteSamples,
        TrajectoryColumns,
        phate_embedding,
        streamed_pca,
    )

    setup_torch()
    embedding_id = int(ctx.payload["embedding_id"])
    with ctx.session() as session:
        emb = session.get(Embedding, embedding_id)
        if emb is None:
            raise SpecError(f"embedding {embedding_id} no longer exists")
        ids = [int(i) for i in (emb.config or {})["retrain_ids"]]
        paths: list[str] = []
        order: list[list[float]] = []
        layout = None
        for rid in ids:
            r = session.get(Retrain, rid)
            ref = array_ref(session, r.trajectory_array_id, f"retrain {rid}")
            paths.append(ref.path)
            layout = layout or session.get(Checkpoint, r.checkpoint_id).layout
            pts = session.execute(
                sa.select(TrajectoryPoint.save_index, TrajectoryPoint.epoch)
                .where(TrajectoryPoint.retrain_id == rid).order_by(TrajectoryPoint.save_index)
            ).all()  # fmt: skip
            if len(pts) != int(ref.shape[0]):
                raise SpecError(f"retrain {rid} has {len(pts)} trajectory rows for {ref.shape[0]} saves: requeue it")  # fmt: skip
            order += [[rid, r.task_id or -1, s, e, r.seed, r.step_size] for s, e in pts]
        seed, n_pca, base = emb.seed, emb.n_pca or 100, embedding_dir(emb)
    columns = _param_columns(layout)
    reader = TrajectoryColumns(ctx.store, paths, columns)
    try:
        pca = streamed_pca(reader, len(order), len(columns), n_pca)
    except NonFiniteSamples as err:
        diverged = sorted({int(order[i][0]) for i in err.rows})
        raise SpecError(
            f"retrain(s) {', '.join(map(str, diverged))} diverged (NaN or infinite parameters): "
            "PHATE cannot embed them; enqueue the topology after retraining with a smaller "
            "step size or learning rate"
        ) from None
    ctx.check_lease()
    result = phate_embedding(pca.scores, seed)
    out = {"coords": f"{base}/coords", "potential": f"{base}/potential", "order": f"{base}/order"}
    ctx.write_array(out["coords"], result.coords)
    ctx.write_array(out["potential"], result.potential)
    ctx.write_array(out["order"], np.asarray(order, dtype=np.float64))
    config = {
        "order_columns": list(ORDER_COLUMNS), "columns": "trainable parameters",
        "n_columns": len(columns), "pca": "exact, streamed Gram matrix (compute.topology)",
        "pca_components": int(pca.scores.shape[1]),
        "pca_explained": float(pca.explained_variance_ratio.sum()),
        "phate_warnings": result.notes,
        "phate": {"knn": 5, "decay": 40, "knn_dist": "cosine", "mds_dist": "cosine",
                  "n_pca": None, "mds_solver": "sgd", "random_state": seed},
    }  # fmt: skip
    return {"embedding_id": embedding_id, "paths": out, "t": result.t,
            "n_samples": len(order), "config": config}  # fmt: skip


# --- persistence ------------------------------------------------------------------------------


def _persistence_finalize(session: Session, ctx: TaskContext, result: dict[str, Any] | None) -> None:  # fmt: skip
    assert result is not None
    row = session.get(PersistenceDiagram, result["diagram_id"])
    row.diagram_array_id = array_id(session, result["path"])
    for key, value in result["summary"].items():
        setattr(row, key, value)


@task_kind("persistence", finalize=_persistence_finalize, batch=False, measures=True)
def persistence_task(ctx: TaskContext) -> dict[str, Any]:
    from compute.topology import knn_edges, persistence_diagram, summarize_diagram

    diagram_id = int(ctx.payload["diagram_id"])
    with ctx.session() as session:
        row = session.get(PersistenceDiagram, diagram_id)
        if row is None:
            raise SpecError(f"persistence diagram {diagram_id} no longer exists")
        emb = session.get(Embedding, row.embedding_id)
        potential = ctx.store.read(
            array_ref(session, emb.potential_array_id, f"embedding {emb.id}").path
        )
        order = ctx.store.read(array_ref(session, emb.order_array_id, f"embedding {emb.id}").path)
        values = sample_loss(session, order, row.loss_name)
        if np.isnan(values).all():  # a diverged sample is NaN; no value at all is no split
            raise SpecError(f"the samples have no {row.loss_name} loss (no such split): use --loss test or train")  # fmt: skip
        knn, legacy, max_dim, path = row.knn, row.legacy, row.max_dimension, diagram_path(row)
    edges = knn_edges(potential, knn, legacy=legacy)
    diagram = persistence_diagram(values, edges, max_dimension=max_dim)
    ctx.write_array(path, diagram)
    summary = summarize_diagram(diagram)
    return {"diagram_id": diagram_id, "path": path, "summary": summary,
            "edges": len(edges)}  # fmt: skip


__all__ = ["ORDER_COLUMNS"]
