"""Task kinds of DOODL3 ensembles and Morse graphs: ensemble.train, ensemble.complete, morse.

An ensemble of a study's models (setup 'models') has one task instead, ``ensemble.collect``,
which waits on the models' training and copies their early and final parameters.

Task graph of one ensemble and a Morse graph computed from it later::

    ensemble.train (models [0, c)) ... ensemble.train (models [k c, n)) --> ensemble.complete
    (enqueued once the ensemble is complete)                                 morse

A chunk task owns its rows of the arrays [models, params] (chunk shape = chunk rows), so
chunks never write the same Zarr chunk; ``ensemble.complete`` verifies the arrays, records
them and logs the ensemble as one MLflow run. Every body reads its rows into plain values in
one short session, calls ``compute.doodl3`` or ``compute.morse``, and leaves the rows to its
finalize function. Every body can run twice with the same result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._arrays import array_id, array_path
from tracker._context import TaskContext
from tracker._db import utcnow
from tracker._exceptions import SpecError
from tracker._mlflow import tracked_run
from tracker._registry import task_kind
from tracker._schema import Ensemble, EnsembleMember, Model, MorseGraph, Study
from tracker._store import ArraySpec
from tracker.morse.results import ensemble_weights
from tracker.morse.rows import NO_ENSEMBLE_FIX

MEMBER_METRICS = ("accuracy", "balanced_accuracy", "entropy", "final_loss")


@dataclass(frozen=True)
class _Ensemble:
    """An ensemble row as plain values: its spec, its study and its array folder."""

    id: int
    study: str
    setup: str
    n_models: int
    epochs: int
    early_epoch: int
    batch_size: int
    seed: int
    data_seed: int
    chunk_size: int
    n_params: int
    folder: str
    previous_run_id: str | None

    def arrays(self) -> dict[str, ArraySpec]:
        """Its arrays: early and final weights, train loss per epoch (chunk = a task's rows)."""
        n, chunk, params = self.n_models, self.chunk_size, self.n_params
        return {
            "early": ArraySpec(f"{self.folder}/early", (n, params), "float32", (chunk, params)),
            "final": ArraySpec(f"{self.folder}/final", (n, params), "float32", (chunk, params)),
            "loss": ArraySpec(
                f"{self.folder}/loss", (n, self.epochs), "float32", (chunk, self.epochs)
            ),
        }

    def params(self) -> dict[str, Any]:
        """The spec, as the MLflow run's parameters."""
        return {"setup": self.setup, "n_models": self.n_models, "epochs": self.epochs,
                "early_epoch": self.early_epoch, "batch_size": self.batch_size,
                "seed": self.seed, "data_seed": self.data_seed, "chunk_size": self.chunk_size}  # fmt: skip


def _read_ensemble(ctx: TaskContext, ensemble_id: int) -> _Ensemble:
    with ctx.session() as session:
        row = session.get(Ensemble, ensemble_id)
        if row is None:  # a SpecError: the queue does not retry it
            raise SpecError(f"ensemble {ensemble_id} no longer exists")
        return _Ensemble(
            id=row.id, study=Study.find_or_raise_by_id(session, row.study_id).name, setup=row.setup,
            n_models=row.n_models, epochs=row.epochs, early_epoch=row.early_epoch,
            batch_size=row.batch_size, seed=row.seed, data_seed=row.data_seed,
            chunk_size=row.chunk_size, n_params=len(row.param_names),
            folder=array_path("ensembles", row), previous_run_id=row.mlflow_run_id,
        )  # fmt: skip


# --- ensemble.train ---------------------------------------------------------------------------


def _train_finalize(session: Session, ctx: TaskContext, result: dict[str, Any] | None) -> None:
    assert result is not None
    ensemble_id = int(result["ensemble_id"])
    for item in result["members"]:
        row = session.scalar(
            sa.select(EnsembleMember).where(
                EnsembleMember.ensemble_id == ensemble_id,
                EnsembleMember.model_index == item["model_index"],
            )
        )
        if row is None:
            row = EnsembleMember(ensemble_id=ensemble_id, model_index=item["model_index"])
            session.add(row)
        for key in MEMBER_METRICS:
            setattr(row, key, item[key])


@task_kind("ensemble.train", finalize=_train_finalize, batch=False)
def ensemble_train(ctx: TaskContext) -> dict[str, Any]:
    from compute.doodl3 import train_chunk

    ensemble = _read_ensemble(ctx, int(ctx.payload["ensemble_id"]))
    start, stop = int(ctx.payload["start"]), int(ctx.payload["stop"])
    out = train_chunk(
        ensemble.setup, list(range(start, stop)), seed=ensemble.seed, epochs=ensemble.epochs,
        early_epoch=ensemble.early_epoch, batch_size=ensemble.batch_size,
        data_seed=ensemble.data_seed, should_stop=ctx.check_lease,
    )  # fmt: skip
    ctx.check_lease()
    blocks = {"early": out.early, "final": out.final, "loss": out.loss_history}
    for name, spec in ensemble.arrays().items():
        ctx.store.create(spec.path, spec.shape, np.float32, spec.chunks)
        ctx.store.write_block(spec.path, (slice(start, stop), slice(None)), blocks[name])
    members = [
        {"model_index": start + i, "accuracy": float(out.accuracy[i]),
         "balanced_accuracy": float(out.balanced_accuracy[i]), "entropy": float(out.entropy[i]),
         "final_loss": float(out.loss_history[i, -1])}
        for i in range(stop - start)
    ]  # fmt: skip
    return {"ensemble_id": ensemble.id, "members": members}


# --- ensemble.complete ------------------------------------------------------------------------


def _complete_finalize(session: Session, ctx: TaskContext, result: dict[str, Any] | None) -> None:
    assert result is not None
    ensemble = Ensemble.find_or_raise_by_id(session, result["ensemble_id"])
    for name, path in result["paths"].items():
        setattr(ensemble, f"{name}_array_id", array_id(session, path))
    ensemble.mlflow_run_id = result["run_id"]
    ensemble.completed_at = session.scalar(sa.select(utcnow()))


def _log_ensemble(ctx: TaskContext, ensemble: _Ensemble, loss: np.ndarray) -> str:
    """One MLflow run per ensemble: the spec, the ensemble's loss per epoch and each model's
    test metrics (step = model index), sent in batches."""
    with ctx.session() as session:
        members = session.scalars(
            sa.select(EnsembleMember)
            .where(EnsembleMember.ensemble_id == ensemble.id)
            .order_by(EnsembleMember.model_index)
        ).all()
        rows = [(m.model_index, {k: getattr(m, k) for k in MEMBER_METRICS}) for m in members]
    tags = {"tracker.ensemble_id": str(ensemble.id), "tracker.study": ensemble.study,
            "tracker.task_id": str(ctx.id), "tracker.attempt": str(ctx.attempt)}  # fmt: skip
    with tracked_run(
        ctx.mlflow_uri, study=ensemble.study, name=f"ensemble-{ensemble.id}",
        params=ensemble.params(), tags=tags, previous_run_id=ensemble.previous_run_id,
        interrupted=f"task {ctx.id} was interrupted", flush_seconds=1e9,
    ) as run:  # fmt: skip
        for epoch in range(loss.shape[1]):
            column = loss[:, epoch]
            run.logger.metrics({"train_loss_mean": float(np.mean(column)),
                                "train_loss_median": float(np.median(column))}, step=epoch + 1)  # fmt: skip
        for index, values in rows:
            run.logger.metrics({f"model_{k}": v for k, v in values.items()}, step=index)
    return run.run_id


@task_kind("ensemble.complete", finalize=_complete_finalize)
def ensemble_complete(ctx: TaskContext) -> dict[str, Any]:
    ensemble = _read_ensemble(ctx, int(ctx.payload["ensemble_id"]))
    contents = {}
    for name, spec in ensemble.arrays().items():
        contents[name] = ctx.store.verify(spec)
        ctx.record_array(spec)
    run_id = _log_ensemble(ctx, ensemble, contents["loss"])
    paths = {name: spec.path for name, spec in ensemble.arrays().items()}
    return {"ensemble_id": ensemble.id, "paths": paths, "run_id": run_id}


# --- ensemble.collect -------------------------------------------------------------------------


def _collect_finalize(session: Session, ctx: TaskContext, result: dict[str, Any] | None) -> None:
    assert result is not None
    ensemble = Ensemble.find_or_raise_by_id(session, result["ensemble_id"])
    for name, path in result["paths"].items():
        setattr(ensemble, f"{name}_array_id", array_id(session, path))
    for item in result["members"]:
        member = session.scalar(
            sa.select(EnsembleMember).where(EnsembleMember.ensemble_id == ensemble.id,
                                            EnsembleMember.model_index == item["model_index"])
        )  # fmt: skip
        if member is not None:
            member.accuracy, member.final_loss = item["accuracy"], item["final_loss"]
    ensemble.completed_at = session.scalar(sa.select(utcnow()))


@task_kind("ensemble.collect", finalize=_collect_finalize, batch=False)
def ensemble_collect(ctx: TaskContext) -> dict[str, Any]:
    """An ensemble of a study's models: each member's parameters (buffers left out) at the early
    and the final checkpoint, as the [models, params] arrays a DOODL3 ensemble has."""
    from tracker.training.kinds import checkpoint_vector

    ensemble_id = int(ctx.payload["ensemble_id"])
    with ctx.session() as session:
        ensemble = Ensemble.find_or_raise_by_id(session, ensemble_id)
        folder = array_path("ensembles", ensemble)
        n_params = len(ensemble.param_names)
        pairs = (ensemble.config or {}).get("checkpoints", {})
        members = session.scalars(
            sa.select(EnsembleMember).where(EnsembleMember.ensemble_id == ensemble_id)
            .order_by(EnsembleMember.model_index)
        ).all()  # fmt: skip
        early = np.zeros((len(members), n_params), np.float32)
        final = np.zeros_like(early)
        metrics = []
        for i, member in enumerate(members):
            model = session.get(Model, member.model_id) if member.model_id is not None else None
            if model is None:  # a SpecError: the queue does not retry it
                raise SpecError(f"ensemble {ensemble_id}: member {member.model_index}'s model was deleted: {NO_ENSEMBLE_FIX}")  # fmt: skip
            for out, ckpt_id in zip((early, final), pairs[str(model.id)], strict=True):
                vec, layout = checkpoint_vector(ctx, session, int(ckpt_id))
                flat = vec.numpy()
                out[i] = np.concatenate([flat[e["offset"] : e["offset"] + e["size"]]
                                         for e in layout if e["kind"] == "param"])  # fmt: skip
            metrics.append({"model_index": member.model_index, "accuracy": model.test_acc,
                            "final_loss": model.train_loss})  # fmt: skip
    ctx.check_lease()
    paths = {
        "early": ctx.write_array(f"{folder}/early", early, early.shape).path,
        "final": ctx.write_array(f"{folder}/final", final, final.shape).path,
    }
    return {"ensemble_id": ensemble_id, "paths": paths, "members": metrics}


# --- morse ------------------------------------------------------------------------------------


def _morse_finalize(session: Session, ctx: TaskContext, result: dict[str, Any] | None) -> None:
    assert result is not None
    row = MorseGraph.find_or_raise_by_id(session, result["morse_id"])
    for key in ("weight_names", "gp_params", "n_nodes", "n_edges", "n_attractors",
                "n_nontrivial", "graph", "seconds"):  # fmt: skip
        setattr(row, key, result[key])
    row.source = {**(row.source or {}), "weight_columns": result["weight_columns"]}
    for name, column in (
        ("morse_sets", "morse_sets_array_id"),
        ("retraction", "retraction_array_id"),
    ):
        setattr(row, column, array_id(session, result["paths"][name]))
    row.completed_at = session.scalar(sa.select(utcnow()))


@task_kind("morse", finalize=_morse_finalize, batch=False, measures=True)
def morse_task(ctx: TaskContext) -> dict[str, Any]:
    from compute import morse

    morse_id = int(ctx.payload["morse_id"])
    with ctx.session() as session:
        row = session.get(MorseGraph, morse_id)
        if row is None:  # a SpecError: the queue does not retry it
            raise SpecError(f"Morse graph {morse_id} no longer exists")
        if row.ensemble_id is None:
            raise SpecError(f"Morse graph {morse_id} lost its ensemble: {NO_ENSEMBLE_FIX}")
        ensemble = Ensemble.find_or_raise_by_id(session, row.ensemble_id)
        early, final = ensemble_weights(session, ctx.store, ensemble)
        candidates, param_names = list(ensemble.kernel_columns), list(ensemble.param_names)
        pick, subdiv, seed, conley = row.pick, int(row.subdiv), int(row.seed or 0), bool(row.conley)
        requested = (row.source or {}).get("requested_columns")
        k = int((row.source or {}).get("weights", 2))
        folder = array_path("morse", row)
    columns = (
        [int(c) for c in requested] if requested else morse.pick_weights(final, candidates, pick, k)
    )
    result, gp_params = morse.morse_from_pairs(
        early[:, columns], final[:, columns], subdiv, seed, conley=conley
    )
    ctx.check_lease()
    chunks = tuple(min(n, 1024 if result.morse_sets.ndim <= 2 else 64) for n in result.shape)
    paths = {
        "morse_sets": ctx.write_array(f"{folder}/morse_sets", result.morse_sets, chunks).path,
        "retraction": ctx.write_array(f"{folder}/retraction", result.retraction, chunks).path,
    }
    return {
        "morse_id": morse_id, "paths": paths, "weight_columns": columns,
        "weight_names": [param_names[c] for c in columns], "gp_params": gp_params,
        "n_nodes": len(result.nodes), "n_edges": len(result.edges),
        "n_attractors": len(result.attractors), "n_nontrivial": result.n_nontrivial,
        "graph": result.graph_json(),
        "seconds": round(result.seconds, 4),
    }  # fmt: skip
