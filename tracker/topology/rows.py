"""Jump-and-retrain samples, their PHATE embedding and persistence diagrams as rows and tasks.

Task graph of one model's topology study::

    train(model) --> direction(seed r) --> retrain(r, s) x (seeds x steps) --> embedding
                                                                            --> persistence

Each (seed, step size) is one ``retrain`` task; the direction of a seed is the same row (and
task) that a surface with that seed would use. An embedding covers all retrains of the model
that exist when it is enqueued (their ids are part of its spec); a persistence diagram is a
filtration of one loss over one embedding. Specs are checked before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from compute.retrain_settings import check_retrain_settings
from tracker._arrays import array_path
from tracker._cliutil import parse_seeds
from tracker._exceptions import NotFound, SpecError
from tracker._queue import enqueue, spec_hash
from tracker._rows import get_or_add
from tracker._schema import Embedding, Model, PersistenceDiagram, Retrain, Study, Task
from tracker.training.rows import (
    DirectionSpec,
    add_direction,
    find_checkpoint,
    find_model,
    model_train_task,
)

LOSSES = ("test", "train", "val")
JUMP_DIRECTION = {"normalization": "filter", "ignore": "biasbn", "target": "weights"}
MAX_RETRAINS = 10_000


@dataclass(frozen=True)
class RetrainRequest:
    """A grid of retrains around one model: every seed with every step size."""

    model: int | str
    seeds: tuple[int, ...]
    steps: tuple[float, ...]
    epochs: int = 40
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 128
    saves_per_epoch: int = 1
    augment: bool = False
    epoch: int | None = None  # the base checkpoint; None: the model's final epoch


@dataclass(frozen=True)
class TopologyRequest:
    model: int | str
    loss: str = "test"
    knn: int = 20
    phate_seed: int = 0
    n_pca: int = 100
    legacy: bool = False


def parse_steps(text: str) -> tuple[float, ...]:
    try:
        steps = tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise SpecError(f"step sizes {text!r} are not a comma-separated list of numbers") from None
    if not steps:
        raise SpecError(f"step sizes {text!r} name no step: write e.g. 0.25,0.5")
    return steps


def check_retrain_request(req: RetrainRequest, dataset: str) -> None:
    if not req.seeds or not req.steps:
        raise SpecError("give at least one seed and one step size")
    if len(req.seeds) * len(req.steps) > MAX_RETRAINS:
        raise SpecError(f"{len(req.seeds) * len(req.steps)} retrains is more than {MAX_RETRAINS}: use fewer seeds or steps")  # fmt: skip
    for seed in req.seeds:
        for step in req.steps:
            check_retrain_settings(seed=seed, step_size=step, epochs=req.epochs, lr=req.lr,
                                   momentum=req.momentum, weight_decay=req.weight_decay,
                                   batch_size=req.batch_size, saves_per_epoch=req.saves_per_epoch)  # fmt: skip
    if req.augment and dataset != "cifar10":
        raise SpecError(f"--augment (crop + flip) is defined for cifar10 only, not {dataset!r}")


def retrain_dir(retrain: Retrain) -> str:
    return array_path("retrains", retrain)


def embedding_dir(embedding: Embedding) -> str:
    return array_path("embeddings", embedding)


def diagram_path(diagram: PersistenceDiagram) -> str:
    return array_path("persistence", diagram, "diagram")


def add_retrains(
    session: Session, study: Study, req: RetrainRequest, names: dict[str, Model] | None = None
) -> tuple[list[Retrain], int]:
    """One retrain row and task per (seed, step size); return them and how many are new."""
    model = find_model(session, req.model, names)
    check_retrain_request(req, model.dataset)
    base = find_checkpoint(session, model, req.epoch)
    train_task = model_train_task(session, model)
    rows: list[Retrain] = []
    created = 0
    for seed in req.seeds:
        (direction,) = add_direction(
            session, study, DirectionSpec(kind="random", seed=seed, **JUMP_DIRECTION), model, base
        )
        dir_task = Task.find_or_raise_by_id(session, direction.task_id)
        for step in req.steps:
            values = {"seed": seed, "step_size": float(step), "epochs": req.epochs,
                      "lr": req.lr, "momentum": req.momentum, "weight_decay": req.weight_decay,
                      "batch_size": req.batch_size, "saves_per_epoch": req.saves_per_epoch,
                      "augment": req.augment}  # fmt: skip
            digest = spec_hash("retrain", study.name, base.id, direction.id, values)
            row, new = get_or_add(session, Retrain, digest, study_id=study.id,
                                   model_id=model.id, checkpoint_id=base.id,
                                   direction_id=direction.id, **values)  # fmt: skip
            if new:
                task, _ = enqueue(session, study, "retrain", {"retrain_id": row.id},
                                  depends_on=[train_task, dir_task], key=digest)  # fmt: skip
                row.task_id = task.id
                created += 1
            rows.append(row)
    session.flush()
    return rows, created


def model_retrains(session: Session, model: Model) -> list[Retrain]:
    """A model's retrains in sample order: seed, then step size, then id."""
    return list(session.scalars(
        sa.select(Retrain).where(Retrain.model_id == model.id)
        .order_by(Retrain.seed, Retrain.step_size, Retrain.id)
    ))  # fmt: skip


def _failed_text(session: Session, retrains: Sequence[Retrain]) -> str | None:
    """The retrains whose task failed (or is gone), or None: an embedding waiting on them would
    be born failed."""
    states = dict(session.execute(
        sa.select(Task.id, Task.status).where(Task.id.in_([r.task_id for r in retrains if r.task_id]))
    ).all())  # fmt: skip
    failed = [(r, states.get(r.task_id, "missing") if r.task_id else "missing") for r in retrains]
    failed = [(r, st) for r, st in failed if st in ("failed", "missing")]
    if not failed:
        return None
    shown = ", ".join(f"retrain {r.id} (task {r.task_id}: {st})" for r, st in failed[:8])
    more = f" and {len(failed) - 8} more" if len(failed) > 8 else ""
    return f"{len(failed)} of {len(retrains)} retrains failed: {shown}{more}"


def add_topology(
    session: Session,
    study: Study,
    req: TopologyRequest,
    names: dict[str, Model] | None = None,
) -> tuple[Embedding, PersistenceDiagram, bool]:
    """The embedding of all of a model's retrains and the diagram of one loss over it.

    Unfinished retrains are waited on (the embedding's task depends on theirs), so retrains and
    their topology can be enqueued together and drained by one `tracker work`. A new embedding
    over a failed retrain is refused, naming it: its task could never run.
    """
    if req.loss not in LOSSES:
        raise SpecError(f"unknown loss {req.loss!r}: use one of {', '.join(LOSSES)}")
    if req.n_pca < 2:
        raise SpecError(f"n_pca must be at least 2, got {req.n_pca}")
    if req.phate_seed < 0:
        raise SpecError(f"the PHATE seed must not be negative, got {req.phate_seed}")
    model = find_model(session, req.model, names)
    if req.loss == "val" and not float((model.dataset_config or {}).get("val_fraction", 0) or 0):
        raise SpecError(f"model {model.id}'s data set has no validation split: use --loss test or train, or train the model with data.val_fraction > 0")  # fmt: skip
    retrains = model_retrains(session, model)
    if not retrains:
        raise NotFound(f"model {model.id} has no retrains: `tracker enqueue retrain --model {model.id} ...` first")  # fmt: skip
    n_samples = sum(r.epochs * r.saves_per_epoch + 1 for r in retrains)
    if not 1 <= req.knn < n_samples:
        raise SpecError(f"knn {req.knn} must be between 1 and {n_samples - 1} (the {n_samples} samples minus one)")  # fmt: skip
    ids = [r.id for r in retrains]
    emb_digest = spec_hash("embedding", study.name, model.id, ids, req.phate_seed, req.n_pca)
    if session.scalar(sa.select(Embedding.id).where(Embedding.spec_hash == emb_digest)) is None:
        failed = _failed_text(session, retrains)
        if failed:
            raise SpecError(f"{failed}: `tracker requeue --failed`, then enqueue the topology again")  # fmt: skip
    embedding, new_emb = get_or_add(
        session, Embedding, emb_digest, study_id=study.id, model_id=model.id, method="phate",
        n_samples=n_samples, seed=req.phate_seed, knn_dist="cosine", mds_dist="cosine",
        n_pca=req.n_pca, config={"retrain_ids": ids},
    )  # fmt: skip
    if new_emb:
        parents = [Task.find_or_raise_by_id(session, r.task_id) for r in retrains if r.task_id is not None]
        task, _ = enqueue(session, study, "embedding", {"embedding_id": embedding.id},
                          depends_on=parents, key=emb_digest)  # fmt: skip
        embedding.task_id = task.id
    pd_digest = spec_hash("persistence", study.name, embedding.id, req.loss, req.knn, req.legacy)
    diagram, new = get_or_add(
        session, PersistenceDiagram, pd_digest, study_id=study.id, embedding_id=embedding.id,
        loss_name=req.loss, knn=req.knn, legacy=req.legacy, max_dimension=2,
    )  # fmt: skip
    if new:
        task, _ = enqueue(session, study, "persistence", {"diagram_id": diagram.id},
                          depends_on=[Task.find_or_raise_by_id(session, embedding.task_id)], key=pd_digest)  # fmt: skip
        diagram.task_id = task.id
    session.flush()
    return embedding, diagram, new or new_emb




def add_study_topology(
    session: Session,
    study: Study,
    retrains: Sequence[RetrainRequest],
    topologies: Sequence[TopologyRequest],
    names: dict[str, Model],
) -> dict[str, int]:
    """A study file's retrains, then its topologies (waiting on those retrains)."""
    counts = {"retrains": 0, "retrains_new": 0, "topologies": 0, "topologies_new": 0}
    for req in retrains:
        rows, created = add_retrains(session, study, req, names)
        counts["retrains"] += len(rows)
        counts["retrains_new"] += created
    for topo in topologies:
        _, _, new = add_topology(session, study, topo, names)
        counts["topologies"] += 1
        counts["topologies_new"] += new
    return counts


__all__: Sequence[str] = (
    "RetrainRequest", "TopologyRequest", "add_retrains", "add_study_topology", "add_topology", "parse_seeds",
    "parse_steps",
)  # fmt: skip
