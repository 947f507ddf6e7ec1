"""Models, their checkpoints and directions as rows and tasks: specs, checks, get-or-add.

Specs are validated completely before anything is written. Each row has a spec hash:
enqueueing the same spec again finds the existing rows. Task graph::

    train(model) --> direction(s)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._arrays import array_path
from tracker._exceptions import NotFound, SpecError
from tracker._queue import enqueue, spec_hash
from tracker._rows import get_or_add
from tracker._schema import Checkpoint, Direction, Model, Study, Task

OPTIMIZERS = ("sgd", "adam")
NORMALIZATIONS = ("filter", "layer", "model", "none", "filter-std")
IGNORES = ("biasbn", "none")
TARGETS = ("weights", "states")


# --- specs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A network to train. The fields are the models table's columns."""

    architecture: str
    dataset: str
    arch_config: dict[str, Any] = field(default_factory=dict)
    dataset_config: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 10
    seed: int = 0
    label_corruption: float = 0.0
    lr_schedule: dict[str, Any] = field(default_factory=dict)
    checkpoint_epochs: tuple[int, ...] = ()
    name: str | None = None

    def identity(self) -> dict[str, Any]:
        """What decides the trained weights (the name is a label, not part of the identity)."""
        out = asdict(self)
        out.pop("name")
        out["checkpoint_epochs"] = sorted(set(self.all_checkpoints()))
        return out

    def all_checkpoints(self) -> list[int]:
        return sorted(set(self.checkpoint_epochs) | {self.epochs})


@dataclass(frozen=True)
class DirectionSpec:
    kind: str = "random"  # random | interpolation | pca
    seed: int | None = 0
    normalization: str = "filter"
    ignore: str = "biasbn"
    target: str = "weights"


def check_model(spec: ModelSpec) -> ModelSpec:
    """Validate a model spec (architecture, dataset, optimiser, numbers); return it normalised."""
    from compute import data as data_mod
    from compute import models as models_mod

    if spec.optimizer not in OPTIMIZERS:
        raise SpecError(f"unknown optimizer {spec.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
    for name, value, low in (("lr", spec.lr, 0.0), ("momentum", spec.momentum, None),
                             ("weight_decay", spec.weight_decay, None)):  # fmt: skip
        if not math.isfinite(value) or value < 0 or (low is not None and value <= low):
            raise SpecError(f"{name} must be a {'positive' if low is not None else 'non-negative'} number, got {value}")  # fmt: skip
    if spec.batch_size < 1:
        raise SpecError(f"batch_size must be at least 1, got {spec.batch_size}")
    if spec.epochs < 0:
        raise SpecError(f"epochs must not be negative, got {spec.epochs}")
    if not 0.0 <= spec.label_corruption <= 1.0:
        raise SpecError(f"label_corruption must be in [0, 1], got {spec.label_corruption}")
    bad = [e for e in spec.checkpoint_epochs if not 0 <= e <= spec.epochs]
    if bad:
        raise SpecError(
            f"checkpoint epochs {bad} are outside 0..{spec.epochs} (the model's epochs)"
        )
    known = data_mod.dataset_names()
    if spec.dataset not in known:
        raise SpecError(f"unknown dataset {spec.dataset!r}: choose one of {', '.join(known)}")
    if spec.architecture not in models_mod.architecture_names():
        raise SpecError(
            f"unknown architecture {spec.architecture!r}: choose one of "
            f"{', '.join(models_mod.architecture_names())}"
        )
    arch_config = models_mod.check_architecture(spec.architecture, dict(spec.arch_config))
    ds = data_mod.load_configured(spec.dataset, spec.dataset_config, spec.label_corruption)
    # Building it checks that the architecture fits the data (a conv net on tabular data...).
    models_mod.build_model(
        spec.architecture, arch_config, input_shape=ds.input_shape,
        num_classes=ds.num_classes, seed=spec.seed,
    )  # fmt: skip
    return replace(spec, arch_config=arch_config)


def check_direction(spec: DirectionSpec) -> None:
    if spec.normalization not in NORMALIZATIONS:
        raise SpecError(f"unknown normalisation {spec.normalization!r}: use one of {', '.join(NORMALIZATIONS)}")  # fmt: skip
    if spec.ignore not in IGNORES:
        raise SpecError(f"unknown ignore {spec.ignore!r}: use one of {', '.join(IGNORES)}")
    if spec.target not in TARGETS:
        raise SpecError(f"unknown direction target {spec.target!r}: use one of {', '.join(TARGETS)}")  # fmt: skip
    if spec.kind not in ("random", "interpolation", "pca"):
        raise SpecError(f"unknown direction kind {spec.kind!r}: use random, interpolation or pca")


# --- array paths ------------------------------------------------------------------------------


def model_dir(model: Model) -> str:
    """The store folder of a model's checkpoints."""
    return array_path("models", model)


def checkpoint_path(model: Model, epoch: int) -> str:
    return array_path("models", model, f"epoch-{epoch:04d}")


def direction_path(direction: Direction) -> str:
    return array_path("directions", direction)


# --- writing rows -----------------------------------------------------------------------------


def add_model(session: Session, study: Study, spec: ModelSpec) -> tuple[Model, bool]:
    """The model row, its train task and its planned checkpoint rows."""
    ident = spec.identity()
    digest = spec_hash("model", study.name, ident)
    model, new = get_or_add(
        session, Model, digest,
        study_id=study.id, name=spec.name, architecture=spec.architecture,
        arch_config=spec.arch_config, dataset=spec.dataset, dataset_config=spec.dataset_config,
        optimizer=spec.optimizer, lr=spec.lr, momentum=spec.momentum,
        weight_decay=spec.weight_decay, batch_size=spec.batch_size, epochs=spec.epochs,
        seed=spec.seed, label_corruption=spec.label_corruption, lr_schedule=spec.lr_schedule,
        config={"checkpoint_epochs": spec.all_checkpoints()},
    )  # fmt: skip
    if not new:
        return model, False
    task, _ = enqueue(session, study, "train", {"model_id": model.id}, key=digest)
    model.task_id = task.id
    for epoch in spec.all_checkpoints():
        session.add(Checkpoint(model_id=model.id, epoch=epoch))
    session.flush()
    return model, True


def find_model(session: Session, ref: int | str, names: dict[str, Model] | None = None) -> Model:
    """A model by id, by a name the same request defined (``names``), or by its unique name."""
    if isinstance(ref, str) and names is not None and ref in names:
        return names[ref]
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        if not 0 < int(ref) < 2**63:
            raise NotFound(f"unknown model id {ref}: model ids are positive 64-bit integers")
        return Model.find_or_raise_by_id(session, int(ref))
    found = session.scalars(sa.select(Model).where(Model.name == ref)).all()
    if len(found) == 1:
        return found[0]
    if not found:
        raise NotFound(f"unknown model {ref!r}: give a model id or the name of a model in the study file")  # fmt: skip
    raise SpecError(f"model name {ref!r} names {len(found)} models: use its id")


def find_checkpoint(session: Session, model: Model, epoch: int | None) -> Checkpoint:
    epoch = model.epochs if epoch is None else epoch
    ckpt = session.scalar(
        sa.select(Checkpoint).where(Checkpoint.model_id == model.id, Checkpoint.epoch == epoch)
    )
    if ckpt is None:
        have = session.scalars(
            sa.select(Checkpoint.epoch).where(Checkpoint.model_id == model.id).order_by(Checkpoint.epoch)
        ).all()  # fmt: skip
        raise NotFound(
            f"model {model.id} keeps no checkpoint at epoch {epoch} (it keeps {list(have)}): "
            "pick one of those or enqueue the model with that checkpoint epoch"
        )
    return ckpt


def model_signature(model: Model) -> tuple[Any, ...]:
    """Models with equal signatures have the same parameter layout."""
    arch = repr(sorted((model.arch_config or {}).items()))
    return (model.architecture, arch, model.dataset)


def model_train_task(session: Session, model: Model) -> Task:
    task = session.get(Task, model.task_id) if model.task_id is not None else None
    if task is None:
        raise NotFound(f"model {model.id} has no train task: enqueue it again")
    return task


def add_direction(
    session: Session,
    study: Study,
    spec: DirectionSpec,
    model: Model,
    reference: Checkpoint,
    other: Checkpoint | None = None,
    other_model: Model | None = None,
) -> list[Direction]:
    """The direction row(s) and the task computing them; PCA gives two rows, one task."""
    check_direction(spec)
    base = {"model_id": model.id, "kind": spec.kind, "normalization": spec.normalization,
            "ignore": spec.ignore, "target": spec.target}  # fmt: skip
    parents = [model_train_task(session, model)]
    if other_model is not None and other_model.id != model.id:
        parents.append(model_train_task(session, other_model))
    rows: list[Direction] = []
    if spec.kind == "pca":
        for comp in (0, 1):
            digest = spec_hash("direction", study.name, asdict(spec), reference.id, comp)
            row, _ = get_or_add(
                session, Direction, digest, study_id=study.id, seed=None,
                checkpoint_a_id=None, checkpoint_b_id=reference.id, pca_component=comp, **base,
            )  # fmt: skip
            rows.append(row)
    else:
        seed = spec.seed if spec.kind == "random" else None
        digest = spec_hash(
            "direction", study.name, asdict(spec), reference.id, other.id if other else None
        )
        row, _ = get_or_add(
            session, Direction, digest, study_id=study.id, seed=seed,
            checkpoint_a_id=reference.id, checkpoint_b_id=other.id if other else None, **base,
        )  # fmt: skip
        rows.append(row)
    if rows[0].task_id is None:
        task, _ = enqueue(
            session, study, "direction", {"direction_ids": [r.id for r in rows]},
            depends_on=parents, key=[r.spec_hash for r in rows],
        )  # fmt: skip
        for r in rows:
            r.task_id = task.id
        session.flush()
    return rows


__all__: Sequence[str] = (
    "DirectionSpec", "ModelSpec", "add_direction", "add_model", "check_direction",
    "check_model", "find_checkpoint", "find_model",
)  # fmt: skip
