"""Rows of the level-set method: traversal runs and L2 baseline runs, each with its task.

A run's spec hash covers its study, its index and its whole config, so enqueueing the same
request twice finds the rows it made the first time.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from tracker._queue import enqueue, spec_hash
from tracker._rows import get_or_add
from tracker._schema import Checkpoint, L2BaselineRun, LevelSetRun, Model, Study

if TYPE_CHECKING:
    from compute.levelset import L2Config, LevelSetConfig


def _spec(cfg: LevelSetConfig) -> dict[str, Any]:
    # A field added later joins the spec (and its hash) only when set: older runs keep theirs.
    spec = asdict(cfg)
    if spec.get("train_subset") is None:
        spec.pop("train_subset", None)
    return spec


def add_levelset_run(
    session: Session, study: Study, index: int, cfg: LevelSetConfig
) -> tuple[LevelSetRun, bool]:
    """Run ``index`` of a traversal request and its ``levelset.run`` task; (row, new)."""
    spec = _spec(cfg)
    digest = spec_hash("levelset", study.name, index, spec)
    row, new = get_or_add(
        session, LevelSetRun, digest, study_id=study.id, setup=cfg.setup, run_index=index,
        seed=cfg.seed, data_seed=cfg.data_seed, phase1_epochs=cfg.phase1_epochs,
        max_predictor_steps=cfg.max_predictor_steps,
        max_corrector_steps=cfg.max_corrector_steps, eta_min=cfg.eta_min, eta_c=cfg.eta_c,
        config=spec,
    )  # fmt: skip
    if new:
        task, _ = enqueue(session, study, "levelset.run", {"levelset_run_id": row.id}, key=digest)
        row.task_id = task.id
    return row, new


def add_checkpoint_levelset(
    session: Session, study: Study, model: Model, checkpoint: Checkpoint, cfg: LevelSetConfig
) -> tuple[LevelSetRun, bool]:
    """A traversal from ``checkpoint`` of ``model`` (config setup 'checkpoint', no phase 1) and
    its ``levelset.run`` task, which waits on the model's training; (row, new).

    Its endpoint metrics are measures of that checkpoint in the meta-analysis.
    """
    from tracker.training.rows import model_train_task

    spec = _spec(cfg)
    digest = spec_hash("levelset", study.name, "checkpoint", checkpoint.id, spec)
    row, new = get_or_add(
        session, LevelSetRun, digest, study_id=study.id, setup=cfg.setup, run_index=0,
        seed=cfg.seed, data_seed=cfg.data_seed, phase1_epochs=0,
        max_predictor_steps=cfg.max_predictor_steps,
        max_corrector_steps=cfg.max_corrector_steps, eta_min=cfg.eta_min, eta_c=cfg.eta_c,
        config=spec, model_id=model.id, checkpoint_id=checkpoint.id,
    )  # fmt: skip
    if new:
        task, _ = enqueue(session, study, "levelset.run", {"levelset_run_id": row.id},
                          depends_on=[model_train_task(session, model)], key=digest)  # fmt: skip
        row.task_id = task.id
    return row, new


def add_l2_run(
    session: Session, study: Study, index: int, cfg: L2Config
) -> tuple[L2BaselineRun, bool]:
    """Run ``index`` of one lambda of the L2 baseline and its ``levelset.l2`` task."""
    spec = asdict(cfg)
    digest = spec_hash("levelset.l2", study.name, index, spec)
    row, new = get_or_add(
        session, L2BaselineRun, digest, study_id=study.id, setup=cfg.setup, l2_lambda=cfg.l2,
        run_index=index, seed=cfg.seed, data_seed=cfg.data_seed, epochs=cfg.epochs, lr=cfg.lr,
        batch_size=cfg.batch_size, config=spec,
    )  # fmt: skip
    if new:
        task, _ = enqueue(session, study, "levelset.l2", {"l2_run_id": row.id}, key=digest)
        row.task_id = task.id
    return row, new
