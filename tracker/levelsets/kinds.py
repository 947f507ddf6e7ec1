"""Task kinds of level-set work (seed 002): ``levelset.run`` and ``levelset.l2``.

``levelset.run`` trains phase 1 and walks the level set, logging every predictor step to
MLflow (in batches) and writing each snapshot of theta into its own chunk as it is taken;
the trace is written at the end, and the run row is filled in the transaction that marks
the task done. ``levelset.l2`` trains one baseline run and stores its final parameters (the
PCA figure places the lambda = 1e-3 endpoint among the traversal's snapshots).

Both are long (batch=False) and idempotent: every draw is seeded from the row, so a second
attempt rewrites the same chunks with the same numbers.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker import _mlflow as mlflow_log
from tracker._arrays import array_id
from tracker._context import TaskContext
from tracker._exceptions import SpecError
from tracker._registry import task_kind
from tracker._schema import L2BaselineRun, LevelSetRun, Study
from tracker._store import ArraySpec

# Every predictor step is in the trace array; MLflow gets every 10th (and the last), since a
# logged metric costs ~1 ms in MLflow's SQLite store: all ten fields of every step made a
# 1,000-step IRIS_FF run ~40% slower, every 10th costs a few percent.
MLFLOW_EVERY = 10


def run_dir(row: LevelSetRun | L2BaselineRun) -> str:
    """Array folder of a row; the spec hash keeps a reset database off an old run's arrays."""
    base = "levelset" if isinstance(row, LevelSetRun) else "levelset-l2"
    return f"{base}/{row.id}-{row.spec_hash[:10]}"


def mlflow_client(uri: str | None) -> Any:
    """The process's MLflow client for ``uri`` (client_for keeps one per URI)."""
    return mlflow_log.client_for(uri or "sqlite:///mlflow.db")


class _MlflowRun:
    """One MLflow run per row: created up front, recorded on the row at once (so a retry can
    close a run its killed predecessor left RUNNING), and closed FINISHED or FAILED."""

    def __init__(self, ctx: TaskContext, row_cls: type, row_id: int, previous: str | None,
                 study: str, name: str, params: dict[str, Any]) -> None:  # fmt: skip
        self.client = mlflow_client(ctx.mlflow_uri)
        mlflow_log.mark_failed_if_running(
            self.client, previous, f"task {ctx.id} was interrupted (worker killed or lease lost)"
        )
        tags = {"tracker.study": study, "tracker.task_id": str(ctx.id),
                "tracker.attempt": str(ctx.attempt),
                f"tracker.{row_cls.__tablename__}_id": str(row_id)}  # fmt: skip
        self.run_id = mlflow_log.start_run(self.client, study, name, params, tags)
        with ctx.db.session() as session:  # type: ignore[union-attr]
            session.execute(
                sa.update(row_cls).where(row_cls.id == row_id).values(mlflow_run_id=self.run_id)
            )
        self.logger = mlflow_log.RunLogger(self.client, self.run_id)

    def fail(self, err: BaseException) -> None:
        try:
            self.logger.flush()
            mlflow_log.tag(self.client, self.run_id,
                           {"tracker.failure": f"{type(err).__name__}: {err}"[:5000]})  # fmt: skip
            mlflow_log.finish(self.client, self.run_id, "FAILED")
        except Exception:  # the task's own error is the one to report
            pass

    def finish(self, summary: dict[str, float]) -> None:
        self.logger.metrics(summary, step=0)
        self.logger.flush()
        mlflow_log.finish(self.client, self.run_id, "FINISHED")


# --- levelset.run -----------------------------------------------------------------------------


def _run_finalize(session: Session, ctx: TaskContext, result: dict[str, Any] | None) -> None:
    assert result is not None
    row = session.get(LevelSetRun, result["id"])
    for key, value in result["columns"].items():
        setattr(row, key, value)
    row.trace_array_id = array_id(session, result["trace"])
    row.snapshots_array_id = array_id(session, result["snapshots"])


@task_kind("levelset.run", finalize=_run_finalize, batch=False)
def levelset_run(ctx: TaskContext) -> dict[str, Any]:
    from compute import levelset as ls

    row_id = int(ctx.payload["levelset_run_id"])
    with ctx.session() as session:
        row = session.get(LevelSetRun, row_id)
        if row is None:
            raise SpecError(f"level-set run {row_id} no longer exists")
        cfg = ls.LevelSetConfig(**row.config)
        study = session.get(Study, row.study_id).name
        base, previous = run_dir(row), row.mlflow_run_id
        name = f"levelset-{row.setup}-run{row.run_index}"
    cfg = cfg.resolved()
    data = ls.load_setup_data(ls.get_setup(cfg.setup), cfg.data_seed, cfg.data_root)
    n_params = ls.count_parameters(ls.get_setup(cfg.setup), data)
    rows = int(cfg.max_predictor_steps) // cfg.snapshot_every + 2  # type: ignore[operator]
    snap_path, trace_path = f"{base}/snapshots", f"{base}/trace"
    ctx.store.create(snap_path, (rows, n_params), np.float32, (1, n_params))
    run = _MlflowRun(ctx, LevelSetRun, row_id, previous, study, name, asdict(cfg))

    last = int(cfg.max_predictor_steps) - 1  # type: ignore[arg-type]

    def on_step(k: int, values: np.ndarray) -> None:
        if k % MLFLOW_EVERY == 0 or k == last:
            metrics = dict(zip(ls.TRACE_FIELDS[1:], values[1:].tolist(), strict=True))
            run.logger.metrics(metrics, step=k)

    def on_snapshot(i: int, k: int, theta: np.ndarray) -> None:
        ctx.check_lease()
        ctx.store.write_block(snap_path, (slice(i, i + 1), slice(None)), theta[None, :])

    try:
        result = ls.traverse(cfg, data=data, on_step=on_step, on_snapshot=on_snapshot,
                             should_stop=ctx.check_lease)  # fmt: skip
    except BaseException as err:
        run.fail(err)
        raise
    ctx.write_array(trace_path, result.trace, chunks=result.trace.shape or None)
    # Keep only the rows taken: the array ends at the last snapshot.
    used = len(result.snapshot_steps)
    ctx.store.root[snap_path].resize((used, n_params))
    ctx.record_array(ArraySpec(snap_path, (used, n_params), "float32", (1, n_params)))
    final = result.final()
    columns = {
        "l0": result.l0, "n_predictor_steps": int(result.trace.shape[0]),
        "n_corrector_steps": result.n_correctors, "final_angle": final["angle_deg"],
        "final_weight_norm_sq": final["weight_norm_sq"],
        "final_train_loss": final["train_loss"], "final_train_acc": final["train_acc"],
        "final_test_loss": final["test_loss"], "final_test_acc": final["test_acc"],
        "stop_reason": result.stop_reason, "trace_fields": list(ls.TRACE_FIELDS),
        "snapshot_steps": result.snapshot_steps,
    }  # fmt: skip
    run.finish({f"final_{k}": v for k, v in columns.items() if isinstance(v, float)})
    return {"id": row_id, "columns": _json_safe(columns), "trace": trace_path,
            "snapshots": snap_path}  # fmt: skip


def _json_safe(values: dict[str, Any]) -> dict[str, Any]:
    """NaN (regression accuracy) becomes None: the task result is JSON."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in values.items()}


# --- levelset.l2 ------------------------------------------------------------------------------


def _l2_finalize(session: Session, ctx: TaskContext, result: dict[str, Any] | None) -> None:
    assert result is not None
    row = session.get(L2BaselineRun, result["id"])
    for key, value in result["columns"].items():
        setattr(row, key, value)
    row.params_array_id = array_id(session, result["params"])


@task_kind("levelset.l2", finalize=_l2_finalize, batch=False)
def levelset_l2(ctx: TaskContext) -> dict[str, Any]:
    from compute import levelset as ls

    row_id = int(ctx.payload["l2_run_id"])
    with ctx.session() as session:
        row = session.get(L2BaselineRun, row_id)
        if row is None:
            raise SpecError(f"L2 baseline run {row_id} no longer exists")
        cfg = ls.L2Config(**row.config)
        study = session.get(Study, row.study_id).name
        base, previous = run_dir(row), row.mlflow_run_id
        name = f"l2-{row.setup}-lambda{row.l2_lambda:g}-run{row.run_index}"
    cfg = cfg.resolved()
    run = _MlflowRun(ctx, L2BaselineRun, row_id, previous, study, name, asdict(cfg))
    try:
        final, theta = ls.train_l2(
            cfg, on_epoch=lambda e, m: run.logger.metrics(m, step=e), should_stop=ctx.check_lease
        )
    except BaseException as err:
        run.fail(err)
        raise
    params_path = f"{base}/params"
    ctx.write_array(params_path, theta, chunks=theta.shape)
    run.finish({f"final_{k}": v for k, v in final.items()})
    columns = {f"final_{k}": v for k, v in final.items()}
    return {"id": row_id, "columns": _json_safe(columns), "params": params_path}
