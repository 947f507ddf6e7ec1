"""Task kinds of level-set work (seed 002): ``levelset.run`` and ``levelset.l2``.

``levelset.run`` trains phase 1 and walks the level set, logging every predictor step to
MLflow (in batches) and writing each snapshot of theta into its own chunk as it is taken;
the trace is written at the end, and the run row is filled in the transaction that marks
the task done. A run with a ``checkpoint_id`` skips phase 1: it walks from that tracker
model's checkpoint, on the model's own network and data (its endpoint metrics become measures
of the checkpoint in the meta-analysis). ``levelset.l2`` trains one baseline run and stores its final parameters (the
PCA figure places the lambda = 1e-3 endpoint among the traversal's snapshots).

Each body reads its row into plain values (``_Run``) in one short session, calls
``compute.levelset`` and hands the results to its finalize function, which writes the row.
Both are long (batch=False) and idempotent: every draw is seeded from the row, so a second
attempt rewrites the same chunks with the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._arrays import array_id, array_path
from tracker._context import TaskContext
from tracker._exceptions import SpecError
from tracker._mlflow import TrackedRun, tracked_run
from tracker._registry import task_kind
from tracker._schema import Checkpoint, L2BaselineRun, LevelSetRun, Model, Study
from tracker._store import ArraySpec
from tracker.training.kinds import device

# Every predictor step is in the trace array; MLflow gets every 10th (and the last), since a
# logged metric costs ~1 ms in MLflow's SQLite store: all ten fields of every step made a
# 1,000-step IRIS_FF run ~40% slower, every 10th costs a few percent.
MLFLOW_EVERY = 10


@dataclass(frozen=True)
class _Run:
    """A run's row as plain values: its config, study, MLflow name and array folder."""

    id: int
    config: dict[str, Any]
    study: str
    name: str
    folder: str
    previous_run_id: str | None
    checkpoint_id: int | None = None  # a traversal from a tracker model's checkpoint


RunRow = TypeVar("RunRow", LevelSetRun, L2BaselineRun)


def _read_run(ctx: TaskContext, cls: type[RunRow], row_id: int) -> _Run:
    with ctx.session() as session:
        row = session.get(cls, row_id)
        if row is None:  # a SpecError: the queue does not retry it
            raise SpecError(f"{cls.noun} {row_id} no longer exists")
        study = Study.find_or_raise_by_id(session, row.study_id).name
        checkpoint_id = None
        if isinstance(row, LevelSetRun):
            name, folder = f"levelset-{row.setup}-run{row.run_index}", "levelset"
            checkpoint_id = row.checkpoint_id
            if checkpoint_id is not None:
                ckpt = Checkpoint.find_or_raise_by_id(session, checkpoint_id)
                name = f"levelset-model{ckpt.model_id}-epoch{ckpt.epoch}"
        else:
            name = f"l2-{row.setup}-lambda{row.l2_lambda:g}-run{row.run_index}"
            folder = "levelset-l2"
        return _Run(id=row_id, config=dict(row.config), study=study, name=name,
                    folder=array_path(folder, row), previous_run_id=row.mlflow_run_id,
                    checkpoint_id=checkpoint_id)  # fmt: skip


def _checkpoint_network(ctx: TaskContext, checkpoint_id: int, cfg: Any) -> tuple[Any, Any]:
    """The tracker model's network at the checkpoint, and its data as a level set's data."""
    from compute import levelset as ls
    from compute.state import load_flat
    from compute.train import TrainSpec
    from tracker.training.kinds import checkpoint_vector

    with ctx.session() as session:
        ckpt = Checkpoint.find_or_raise_by_id(session, checkpoint_id)
        model = Model.find_or_raise_by_id(session, ckpt.model_id)
        if ckpt.array_id is None:  # a SpecError: the queue does not retry it
            raise SpecError(f"model {model.id} has no weights at epoch {ckpt.epoch}: train it first")  # fmt: skip
        spec = TrainSpec.from_row(model)
        vec, layout = checkpoint_vector(ctx, session, checkpoint_id)
    ds = spec.load_data()
    net = spec.build(ds)
    load_flat(net, vec, layout)
    return net, ls.dataset_data(ds, cfg.train_subset, cfg.data_seed)


@contextmanager
def _mlflow_run(
    ctx: TaskContext, cls: type[RunRow], run: _Run, params: dict[str, Any]
) -> Iterator[TrackedRun]:
    """The row's MLflow run, recorded on the row at once: a retry closes a run its killed
    predecessor left RUNNING."""
    tags = {"tracker.study": run.study, "tracker.task_id": str(ctx.id),
            "tracker.attempt": str(ctx.attempt),
            f"tracker.{cls.__tablename__}_id": str(run.id)}  # fmt: skip
    with tracked_run(
        ctx.mlflow_uri, study=run.study, name=run.name, params=params, tags=tags,
        previous_run_id=run.previous_run_id,
        interrupted=f"task {ctx.id} was interrupted (worker killed or lease lost)",
    ) as tracked:  # fmt: skip
        with ctx.db.session() as session:  # type: ignore[union-attr]
            session.execute(
                sa.update(cls).where(cls.id == run.id).values(mlflow_run_id=tracked.run_id)
            )
        yield tracked


def _json_safe(values: dict[str, Any]) -> dict[str, Any]:
    """NaN (regression accuracy) becomes None: the task result is JSON."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in values.items()}


# --- levelset.run -----------------------------------------------------------------------------


def _run_finalize(session: Session, ctx: TaskContext, result: dict[str, Any] | None) -> None:
    assert result is not None
    row = LevelSetRun.find_or_raise_by_id(session, result["id"])
    for key, value in result["columns"].items():
        setattr(row, key, value)
    row.trace_array_id = array_id(session, result["trace"])
    row.snapshots_array_id = array_id(session, result["snapshots"])


@task_kind("levelset.run", finalize=_run_finalize, batch=False, measures=True)
def levelset_run(ctx: TaskContext) -> dict[str, Any]:
    from compute import levelset as ls

    run = _read_run(ctx, LevelSetRun, int(ctx.payload["levelset_run_id"]))
    cfg = ls.LevelSetConfig(**run.config).resolved()
    net: Any = None
    if run.checkpoint_id is not None:
        net, data = _checkpoint_network(ctx, run.checkpoint_id, cfg)
        n_params = ls.count_model_parameters(net)
    else:
        data = ls.load_setup_data(ls.get_setup(cfg.setup), cfg.data_seed, cfg.data_root)
        n_params = ls.count_parameters(ls.get_setup(cfg.setup), data)
    steps = cfg.max_predictor_steps
    assert steps is not None  # resolved() puts in the setup's cap
    rows = steps // cfg.snapshot_every + 2
    snap_path, trace_path = f"{run.folder}/snapshots", f"{run.folder}/trace"
    ctx.store.create(snap_path, (rows, n_params), np.float32, (1, n_params))
    last = steps - 1

    with _mlflow_run(ctx, LevelSetRun, run, asdict(cfg)) as tracked:

        def on_step(k: int, values: np.ndarray) -> None:
            if k % MLFLOW_EVERY == 0 or k == last:
                metrics = dict(zip(ls.TRACE_FIELDS[1:], values[1:].tolist(), strict=True))
                tracked.logger.metrics(metrics, step=k)

        def on_snapshot(i: int, k: int, theta: np.ndarray) -> None:
            ctx.check_lease()
            ctx.store.write_block(snap_path, (slice(i, i + 1), slice(None)), theta[None, :])

        if net is not None:
            result = ls.traverse_from(net, cfg, data, on_step=on_step, on_snapshot=on_snapshot,
                                      device=device(), should_stop=ctx.check_lease)  # fmt: skip
        else:
            result = ls.traverse(cfg, data=data, on_step=on_step, on_snapshot=on_snapshot,
                                 device=device(),
                                 should_stop=ctx.check_lease)  # fmt: skip
        ctx.write_array(trace_path, result.trace, chunks=result.trace.shape or None)
        # Keep only the rows taken: the array ends at the last snapshot.
        used = len(result.snapshot_steps)
        snapshots = ctx.store.root[snap_path]  # the array created above, not a group
        snapshots.resize((used, n_params))  # type: ignore[union-attr]
        ctx.record_array(ArraySpec(snap_path, (used, n_params), "float32", (1, n_params)))
        final = result.final()
        columns = {
            "l0": result.l0, "n_predictor_steps": int(result.trace.shape[0]),
            "n_corrector_steps": result.n_correctors, "final_angle": final["angle_deg"],
            "final_weight_norm_sq": final["weight_norm_sq"],
            "final_train_loss": final["train_loss"], "final_train_acc": final["train_acc"],
            "final_test_loss": final["test_loss"], "final_test_acc": final["test_acc"],
            "final_distance": result.distance, "stop_reason": result.stop_reason, "trace_fields": list(ls.TRACE_FIELDS),
            "snapshot_steps": result.snapshot_steps,
        }  # fmt: skip
        # The columns already carry their names (final_angle, ..., and l0, the loss after
        # phase 1): log them as they are, so the run shows final_* once, not final_final_*.
        summary = {k: v for k, v in columns.items() if isinstance(v, float)}
        tracked.logger.metrics(summary, step=0)
    return {"id": run.id, "columns": _json_safe(columns), "trace": trace_path,
            "snapshots": snap_path}  # fmt: skip


# --- levelset.l2 ------------------------------------------------------------------------------


def _l2_finalize(session: Session, ctx: TaskContext, result: dict[str, Any] | None) -> None:
    assert result is not None
    row = L2BaselineRun.find_or_raise_by_id(session, result["id"])
    for key, value in result["columns"].items():
        setattr(row, key, value)
    row.params_array_id = array_id(session, result["params"])


@task_kind("levelset.l2", finalize=_l2_finalize, batch=False)
def levelset_l2(ctx: TaskContext) -> dict[str, Any]:
    from compute import levelset as ls

    run = _read_run(ctx, L2BaselineRun, int(ctx.payload["l2_run_id"]))
    cfg = ls.L2Config(**run.config).resolved()
    params_path = f"{run.folder}/params"
    with _mlflow_run(ctx, L2BaselineRun, run, asdict(cfg)) as tracked:
        final, theta = ls.train_l2(
            cfg, on_epoch=lambda e, m: tracked.logger.metrics(m, step=e),
            should_stop=ctx.check_lease, device=device(),
        )  # fmt: skip
        ctx.write_array(params_path, theta, chunks=theta.shape)
        columns = {f"final_{k}": v for k, v in final.items()}
        tracked.logger.metrics(columns, step=0)
    return {"id": run.id, "columns": _json_safe(columns), "params": params_path}
