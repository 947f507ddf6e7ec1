"""Models, their checkpoints and directions as rows and tasks: specs, checks, get-or-add.

Specs are validated completely before anything is written. Each row has a spec hash:
enqueueing the same spec again finds the existing rows. Task graph::

    train(model) --> direction(s)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._arrays import array_path
from tracker._db import Database
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
    data_mod.check_dataset(spec.dataset, spec.dataset_config)
    arch_config = models_mod.check_architecture(spec.architecture, dict(spec.arch_config))
    ds = data_mod.load_configured(spec.dataset, spec.dataset_config, spec.label_corruption)
    # Building it checks that the architecture fits the data (a conv net on tabular data...).
    model = models_mod.build_model(
        spec.architecture, arch_config, input_shape=ds.input_shape,
        num_classes=ds.num_classes, seed=spec.seed,
    )  # fmt: skip
    if models_mod.is_user_architecture(spec.architecture):
        models_mod.check_fits(model, spec.architecture, ds.train_x, ds.num_classes)
    return replace(spec, arch_config=arch_config)


def user_code(architecture: str, dataset: str, loss: str | None = None) -> dict[str, Any]:
    """What a model row records of the user's code it names (reference, module, version), so
    a result can be traced to the code that made it; empty for the built-ins."""
    from compute import data as data_mod
    from compute import models as models_mod
    from compute import user

    code: dict[str, Any] = {}
    if models_mod.is_user_architecture(architecture):
        code["architecture"] = user.describe(architecture, user.ARCHITECTURES)
    from compute.userdata import BUILTIN_SOURCES

    if dataset not in data_mod.dataset_names() and dataset not in BUILTIN_SOURCES:
        code["dataset"] = user.describe(dataset, user.DATASETS)
    if loss is not None and user.is_reference(loss):
        code["loss"] = user.describe(loss, user.LOSSES)
    return code


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
        config={"checkpoint_epochs": spec.all_checkpoints(),
                **_code_config(spec.architecture, spec.dataset, spec.dataset_config)},
    )  # fmt: skip
    if not new:
        return model, False
    task, _ = enqueue(session, study, "train", {"model_id": model.id}, key=digest)
    model.task_id = task.id
    for epoch in spec.all_checkpoints():
        session.add(Checkpoint(model_id=model.id, epoch=epoch))
    session.flush()
    return model, True


def _code_config(architecture: str, dataset: str, dataset_config: dict[str, Any]) -> dict[str, Any]:
    code = user_code(architecture, dataset, dataset_config.get("loss"))
    return {"code": code} if code else {}


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


def parameter_count(session: Session, model: Model, checkpoint: Checkpoint | None = None) -> int | None:  # fmt: skip
    """How many parameters ``model`` has, a size for planning work (tiles, Lanczos k).

    Read from a stored layout when one exists: ``checkpoint``'s, else that of any trained model
    with the same signature (equal layouts). Only a model nobody has trained yet is built on
    the meta device, which imports torch (2-5 s of an enqueue's CPU). None: it cannot be sized.
    """
    layouts = [checkpoint.layout] if checkpoint is not None else []
    if not any(layouts):
        rows = session.execute(
            sa.select(Model.architecture, Model.arch_config, Model.dataset, Checkpoint.layout)
            .join(Checkpoint, Checkpoint.model_id == Model.id)
            .where(Model.architecture == model.architecture, Model.dataset == model.dataset,
                   Checkpoint.array_id.is_not(None))
            .order_by(Checkpoint.id).limit(64)
        ).all()  # fmt: skip
        wanted = model_signature(model)
        layouts = [r.layout for r in rows if model_signature(r) == wanted and r.layout]  # type: ignore[arg-type]
    if layouts and layouts[0]:
        return sum(int(e["size"]) for e in layouts[0] if e.get("kind") == "param")
    return _built_parameter_count(
        model.architecture, json.dumps(model.arch_config or {}, sort_keys=True), model.dataset
    )


@functools.lru_cache(maxsize=64)
def _built_parameter_count(architecture: str, config_json: str, dataset: str) -> int | None:
    """Cached per (architecture, config, data set): a study adds many surfaces of one model."""
    try:
        from compute.models import parameter_count as built

        return built(architecture, json.loads(config_json), dataset)
    except Exception:  # sizing is a heuristic: callers treat None as unknown
        return None


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


# --- imported models --------------------------------------------------------------------------


IMPORT_KIND = "model.import"


@dataclass(frozen=True)
class ImportSpec:
    """Checkpoint files of a network trained elsewhere, one per epoch, to import as a model."""

    files: tuple[tuple[str, int], ...]  # (path, epoch)
    architecture: str
    dataset: str
    arch_config: dict[str, Any] = field(default_factory=dict)
    dataset_config: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    metrics_from_eval: bool = False


@dataclass(frozen=True)
class ImportedModel:
    model_id: int
    new: bool
    epochs: tuple[int, ...]


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".t7", ".ckpt", ".bin", ".safetensors")


def checkpoint_files(paths: Sequence[str], epochs: Sequence[int] | None) -> tuple[tuple[str, int], ...]:  # fmt: skip
    """(file, epoch) pairs: one folder's checkpoint files (epochs from the last number in each
    name) or the files given, with --epoch per file."""
    import re
    from pathlib import Path

    if len(paths) == 1 and Path(paths[0]).is_dir():
        folder = Path(paths[0])
        found = sorted(f for f in folder.iterdir() if f.suffix in CHECKPOINT_SUFFIXES)
        if not found:
            raise NotFound(f"{folder} holds no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)})")
        files = [str(f.absolute()) for f in found]
        if epochs is None:
            numbers = [re.findall(r"\d+", f.stem) for f in found]
            if not all(numbers):
                raise SpecError(f"the names in {folder} carry no epoch numbers: give --epoch E1,E2,... in name order")  # fmt: skip
            return tuple(sorted(zip(files, (int(n[-1]) for n in numbers), strict=True), key=lambda f: f[1]))  # fmt: skip
    else:
        files = [str(Path(p).absolute()) for p in paths]
    if epochs is None:
        if len(files) > 1:
            raise SpecError(f"{len(files)} files need their epochs: give --epoch E1,E2,... (one per file)")  # fmt: skip
        return ((files[0], 0),)
    if len(epochs) != len(files):
        raise SpecError(f"--epoch gives {len(epochs)} epoch(s) for {len(files)} file(s): give one per file")  # fmt: skip
    return tuple(zip(files, (int(e) for e in epochs), strict=True))


def import_model(db: Database, store_url: str, spec: ImportSpec, *, study: str) -> ImportedModel:
    """Read, check and import checkpoint files as an ordinary model row with its checkpoints in
    Zarr (every analysis of a trained model then works on it). Every file is read and fitted
    to the architecture before anything is written; the arrays go in before the commit that
    makes the rows visible, and are removed again if it fails. Importing the same files into
    the same study again finds the existing model."""
    import torch

    from compute import data as data_mod
    from compute import models as models_mod
    from compute.checkpoints import fit_state, read_state_dict

    if not spec.files:
        raise SpecError("no checkpoint files to import: give a file or a folder of them")
    epochs = [e for _, e in spec.files]
    if len(set(epochs)) != len(epochs) or min(epochs) < 0:
        raise SpecError(f"checkpoint epochs {epochs} must be distinct non-negative integers: give one --epoch per file")  # fmt: skip
    data_mod.check_dataset(spec.dataset, spec.dataset_config)
    arch_config = models_mod.check_architecture(spec.architecture, dict(spec.arch_config))
    ds = data_mod.load_configured(spec.dataset, spec.dataset_config)
    model = models_mod.build_model(spec.architecture, arch_config, input_shape=ds.input_shape,
                                   num_classes=ds.num_classes, seed=0)  # fmt: skip
    models_mod.check_fits(model, spec.architecture, ds.train_x, ds.num_classes)
    vectors: dict[int, Any] = {}
    metrics: dict[int, dict[str, float]] = {}
    layout: Any = None
    for path, epoch in sorted(spec.files, key=lambda f: f[1]):
        flat, layout = fit_state(model, read_state_dict(path), str(path))
        vectors[epoch] = flat.numpy()
        if spec.metrics_from_eval:
            metrics[epoch] = _evaluate(model, ds, torch.device("cpu"))
    digest = hashlib.sha256(json.dumps(
        ["import-model", study, spec.architecture, arch_config, spec.dataset, spec.dataset_config],
        sort_keys=True, default=str).encode())  # fmt: skip
    for epoch, vec in vectors.items():
        digest.update(str(epoch).encode() + vec.tobytes())
    return _write_import(db, store_url, spec, study, arch_config, digest.hexdigest(), vectors,
                         layout, metrics)  # fmt: skip


def _evaluate(model: Any, ds: Any, device: Any) -> dict[str, float]:
    from compute.train import evaluate

    out: dict[str, float] = {}
    for split in ("train", "test"):
        x, y = ds.split(split)
        loss, acc = evaluate(model, x, y, ds.task, device)
        out[f"{split}_loss"], out[f"{split}_acc"] = loss, acc
    return out


def _write_import(
    db: Database, store_url: str, spec: ImportSpec, study_name: str, arch_config: dict[str, Any],
    digest: str, vectors: dict[int, Any], layout: Any, metrics: dict[int, dict[str, float]],
) -> ImportedModel:  # fmt: skip
    from tracker._arrays import add_array
    from tracker._db import utcnow
    from tracker._provenance import provenance
    from tracker._queue import get_or_create_study
    from tracker._store import ArrayStore

    store = ArrayStore(store_url)
    last = max(vectors)
    written: list[str] = []
    try:
        with db.session() as session:
            existing = session.scalar(sa.select(Model).where(Model.spec_hash == digest))
            if existing is not None:
                return ImportedModel(existing.id, False, tuple(sorted(vectors)))
            study = get_or_create_study(session, study_name)
            files = [{"path": str(p), "epoch": e} for p, e in spec.files]
            model = Model(
                study_id=study.id, spec_hash=digest, name=spec.name,
                architecture=spec.architecture, arch_config=arch_config, dataset=spec.dataset,
                dataset_config=spec.dataset_config, optimizer="imported", lr=0.0, batch_size=0,
                epochs=last, seed=0,
                config={"checkpoint_epochs": sorted(vectors), "imported": files,
                        **_code_config(spec.architecture, spec.dataset, spec.dataset_config)},
                **metrics.get(last, {}),
            )  # fmt: skip
            session.add(model)
            session.flush()
            task = Task(study_id=study.id, kind=IMPORT_KIND,
                        spec_hash=spec_hash(IMPORT_KIND, digest), status="done", max_attempts=1,
                        payload={"model_id": model.id, "files": files},
                        result={"model_id": model.id, "epochs": sorted(vectors)},
                        provenance=provenance())  # fmt: skip
            session.add(task)
            session.flush()
            task.finished_at = session.scalar(sa.select(utcnow()))
            model.task_id = task.id
            for epoch, vec in sorted(vectors.items()):
                path = checkpoint_path(model, epoch)
                written.append(path)
                stored = store.write(path, vec, chunks=(max(1, min(vec.shape[0], 1 << 22)),))
                ref = add_array(session, stored, task_id=task.id)
                session.add(Checkpoint(model_id=model.id, epoch=epoch, layout=layout,
                                       array_id=ref.id, **metrics.get(epoch, {})))  # fmt: skip
            session.flush()
            model_id = model.id
    except BaseException:
        for path in written:
            with contextlib.suppress(Exception):
                store.delete(path)
        raise
    return ImportedModel(model_id, True, tuple(sorted(vectors)))


__all__: Sequence[str] = (
    "DirectionSpec", "ImportSpec", "ModelSpec", "add_direction", "add_model", "check_direction",
    "check_model", "checkpoint_files", "find_checkpoint", "find_model", "import_model",
)  # fmt: skip
