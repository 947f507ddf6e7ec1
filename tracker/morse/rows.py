"""Rows of the Morse-graph method: DOODL3 ensembles (with their members) and Morse graphs.

Specs are validated completely before anything is written, and one request is one
transaction: a bad request leaves the database unchanged. Enqueueing the same spec again
finds the existing rows (spec hash).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from compute.doodl3_params import SETUPS
from tracker._exceptions import NotFound, SpecError
from tracker._queue import enqueue, spec_hash
from tracker._rows import get_or_add
from tracker._schema import Ensemble, EnsembleMember, Model, MorseGraph, Study, Task

PICKS = ("max-variance", "min-variance")
SANE_SUBDIV = 18  # 262,144 boxes; more needs --force
NO_ENSEMBLE_FIX = "enqueue a new one with `tracker enqueue morse --ensemble ID`"
MAX_MODELS = 100_000


@dataclass(frozen=True)
class EnsembleSpec:
    """An ensemble to train; the fields are the ensembles table's columns."""

    setup: str
    n_models: int = 100
    epochs: int = 450
    early_epoch: int = 2
    batch_size: int = 5
    seed: int = 0
    data_seed: int = 0
    chunk_size: int = 50


@dataclass(frozen=True)
class MorseSpec:
    """A Morse graph to compute from an ensemble (its task waits while the ensemble trains): on
    ``weights`` kernel weights chosen by ``pick``, or on the parameters named in ``columns``
    (names or flat indices) when given."""

    ensemble_id: int
    pick: str = "max-variance"
    subdiv: int = 15
    seed: int = 0
    conley: bool = True
    weights: int = 2
    columns: tuple[str, ...] = ()


def parse_weights(text: str) -> tuple[int, tuple[str, ...]]:
    """``--weights``: a count K (the K kernel weights ``--pick`` chooses) or two or more
    parameters by name or flat index, comma-separated (``dense_kernel_0_1,dense_kernel_1_2``)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if len(parts) == 1 and parts[0].isdigit():
        return int(parts[0]), ()
    if len(parts) < 2:
        raise SpecError(
            f"--weights {text!r} is neither a count nor a list: write e.g. 3 or "
            "dense_kernel_0_1,dense_kernel_1_2"
        )
    return len(parts), tuple(parts)


def check_setup(setup: str) -> None:
    """Reject an unknown DOODL3 setup with the names that exist."""
    if setup not in SETUPS:
        raise SpecError(f"unknown setup {setup!r}: use one of {', '.join(SETUPS)}")


def check_ensemble(spec: EnsembleSpec) -> None:
    """Reject a bad ensemble spec with one line that names the fix."""
    check_setup(spec.setup)
    if not 1 <= spec.n_models <= MAX_MODELS:
        raise SpecError(f"--models must be in 1..{MAX_MODELS}, got {spec.n_models}")
    if spec.epochs < 1:
        raise SpecError(f"--epochs must be at least 1, got {spec.epochs}")
    if not 0 <= spec.early_epoch < spec.epochs:
        raise SpecError(
            f"--early-epoch must be in 0..{spec.epochs - 1} (before the final epoch {spec.epochs}), "
            f"got {spec.early_epoch}"
        )
    for name, value in (("--batch-size", spec.batch_size), ("--chunk", spec.chunk_size)):
        if value < 1:
            raise SpecError(f"{name} must be at least 1, got {value}")
    for name, value in (("--seed", spec.seed), ("--data-seed", spec.data_seed)):
        if value < 0:
            raise SpecError(f"{name} must not be negative, got {value}")


def add_ensemble(session: Session, study: Study, spec: EnsembleSpec) -> tuple[Ensemble, bool]:
    """The ensemble row, one train task per chunk of models, and the task completing it."""
    from compute import doodl3_params as doodl3

    check_ensemble(spec)
    digest = spec_hash("ensemble", study.name, asdict(spec))
    chunk = min(spec.chunk_size, spec.n_models)
    ensemble, new = get_or_add(
        session, Ensemble, digest, study_id=study.id, setup=spec.setup, n_models=spec.n_models,
        epochs=spec.epochs, early_epoch=spec.early_epoch, batch_size=spec.batch_size,
        seed=spec.seed, data_seed=spec.data_seed, chunk_size=chunk,
        param_names=doodl3.param_names(spec.setup),
        kernel_columns=doodl3.kernel_columns(spec.setup),
        config={"optimizer": "adam", "lr": doodl3.LR, "eps": doodl3.EPS,
                "init": _init_text(spec.setup)},
    )  # fmt: skip
    if not new:
        return ensemble, False
    parts = []
    for start in range(0, spec.n_models, chunk):
        payload = {"ensemble_id": ensemble.id, "start": start,
                   "stop": min(start + chunk, spec.n_models)}  # fmt: skip
        task, _ = enqueue(session, study, "ensemble.train", payload, key=digest)
        parts.append(task)
    done, _ = enqueue(session, study, "ensemble.complete", {"ensemble_id": ensemble.id},
                      depends_on=parts, key=digest)  # fmt: skip
    ensemble.task_id = done.id
    session.flush()
    return ensemble, True


# --- ensembles of a study's models -----------------------------------------------------------

MODELS_SETUP = "models"  # the setup of an ensemble made of tracker models
MAX_ENSEMBLE_PARAMS = 100_000  # one name per parameter is stored; GP maps suit small weight sets
# What may differ between the members of one hyperparameter setting.
_NOT_SETTING = {"id", "name", "seed", "spec_hash", "task_id", "study_id", "created_at", "tags",
                "mlflow_run_id", "train_loss", "train_acc", "test_loss", "test_acc", "gap",
                "loss_gap", "diverged"}  # fmt: skip


def setting_of(model: Model) -> dict[str, Any]:
    """A model's hyperparameter setting: every column that decides its training but the seed."""
    out = {c.name: getattr(model, c.key) for c in Model.__table__.columns
           if c.name not in _NOT_SETTING}  # fmt: skip
    # Which epochs are kept does not change the training.
    out["config"] = {k: v for k, v in (model.config or {}).items() if k != "checkpoint_epochs"}
    return out


def setting_groups(models: Sequence[Model]) -> list[list[Model]]:
    """The models grouped by hyperparameter setting (first model id order)."""
    groups: dict[str, list[Model]] = {}
    for model in sorted(models, key=lambda m: m.id):
        key = json.dumps(setting_of(model), sort_keys=True, default=str)
        groups.setdefault(key, []).append(model)
    return list(groups.values())


def _param_columns(model: Model) -> tuple[list[dict[str, Any]], list[str], list[int]]:
    """The model's parameter tensors (name, shape; buffers left out), one name per scalar
    parameter (``fc1.weight_0_3``) and the flat indices of the kernels (tensors of 2+ dims)."""
    from compute.state import layout_of
    from compute.train import TrainSpec

    spec = TrainSpec.from_row(model)
    layout = [e for e in layout_of(spec.build(spec.load_data())) if e["kind"] == "param"]
    names: list[str] = []
    kernels: list[int] = []
    for entry in layout:
        shape = [int(n) for n in entry["shape"]]
        if len(shape) > 1:
            kernels.extend(range(len(names), len(names) + int(np.prod(shape))))
        names.extend(entry["name"] + "_" + "_".join(map(str, idx)) for idx in np.ndindex(*shape))
    return [{"name": e["name"], "shape": e["shape"]} for e in layout], names, kernels


def add_model_ensemble(
    session: Session, study: Study, models: Sequence[Model], early_epoch: int
) -> tuple[Ensemble, bool]:
    """An ensemble of a study's trained models (setup 'models'): one hyperparameter setting over
    its seeds, each member's weights at ``early_epoch`` and at the final epoch. Its task
    ``ensemble.collect`` waits on the models' training and copies their parameters.

    A Morse graph of it describes that setting's training dynamics: its counts become measures
    of every member model at the final epoch in the meta-analysis.
    """
    from tracker.training.rows import find_checkpoint, model_train_task

    models = sorted({m.id: m for m in models}.values(), key=lambda m: m.id)
    if len(models) < 2:
        raise SpecError(f"an ensemble of models needs at least 2 models of one setting, got {len(models)}")  # fmt: skip
    first = setting_of(models[0])
    for model in models[1:]:
        differ = sorted(k for k, v in setting_of(model).items() if v != first[k])
        if differ:
            raise SpecError(
                f"models {models[0].id} and {model.id} differ in {', '.join(differ)}: an ensemble "
                "is one hyperparameter setting over its seeds (`--from-models settings` groups them)"
            )
    final_epoch = int(models[0].epochs)
    if not 0 <= early_epoch < final_epoch:
        raise SpecError(f"--early-epoch must be in 0..{final_epoch - 1} (before the final epoch {final_epoch}), got {early_epoch}")  # fmt: skip
    checkpoints = {m.id: (find_checkpoint(session, m, early_epoch).id,
                          find_checkpoint(session, m, final_epoch).id) for m in models}  # fmt: skip
    layout, names, kernels = _param_columns(models[0])
    if len(names) > MAX_ENSEMBLE_PARAMS:
        raise SpecError(f"model {models[0].id} has {len(names):,} parameters, more than the "
                        f"{MAX_ENSEMBLE_PARAMS:,} an ensemble of models holds: use smaller models")  # fmt: skip
    ids = [m.id for m in models]
    digest = spec_hash("ensemble-models", study.name, ids, early_epoch)
    ensemble, new = get_or_add(
        session, Ensemble, digest, study_id=study.id, setup=MODELS_SETUP, n_models=len(models),
        epochs=final_epoch, early_epoch=early_epoch, batch_size=int(models[0].batch_size),
        seed=0, data_seed=0, chunk_size=len(models), param_names=names, kernel_columns=kernels,
        config={"source": MODELS_SETUP, "model_ids": ids, "layout": layout,
                "checkpoints": {str(k): list(v) for k, v in checkpoints.items()},
                "setting": json.loads(json.dumps(first, default=str))},
    )  # fmt: skip
    if not new:
        return ensemble, False
    for index, model in enumerate(models):
        session.add(EnsembleMember(ensemble_id=ensemble.id, model_index=index, model_id=model.id))
    task, _ = enqueue(session, study, "ensemble.collect", {"ensemble_id": ensemble.id},
                      depends_on=[model_train_task(session, m) for m in models], key=digest)  # fmt: skip
    ensemble.task_id = task.id
    session.flush()
    return ensemble, True


def _init_text(setup: str) -> str:
    """The kernels' uniform bounds, as the ensemble's recorded config says them."""
    from compute import doodl3_params as doodl3

    kernels = [(name, doodl3.init_limit(setup, name))
               for name, _, kernel in doodl3.param_layout(setup) if kernel]  # fmt: skip
    return ", ".join(f"{name} U(-{lim:g}, {lim:g})" for name, lim in kernels) + ", zero biases"


def find_ensemble(session: Session, ensemble_id: int) -> Ensemble:
    """The ensemble row, or NotFound naming the command that creates one."""
    return Ensemble.find_or_raise_by_id(session, ensemble_id)


def ensemble_tasks(session: Session, ensemble: Ensemble) -> list[Task]:
    """The ensemble's train chunks and its completing task."""
    train = session.scalars(
        sa.select(Task)
        .where(Task.kind == "ensemble.train", Task.study_id == ensemble.study_id)
        .order_by(Task.id)
    ).all()
    mine = [t for t in train if int(t.payload.get("ensemble_id", -1)) == ensemble.id]
    done = session.get(Task, ensemble.task_id) if ensemble.task_id is not None else None
    return [*mine, *([done] if done is not None else [])]


def _wait_on(session: Session, ensemble: Ensemble) -> list[Task]:
    """What a Morse task on ``ensemble`` waits for: nothing once the ensemble is finished, else
    its completing task; refused when one of its tasks failed (the Morse task could never run)."""
    if ensemble.completed_at is not None:
        return []
    open_tasks = [t for t in ensemble_tasks(session, ensemble) if t.status != "done"]
    failed = [t for t in open_tasks if t.status == "failed"]
    done = session.get(Task, ensemble.task_id) if ensemble.task_id is not None else None
    if not failed and done is not None:
        return [done]
    shown = failed or open_tasks
    listed = ", ".join(f"task {t.id} {t.kind} {t.status}" for t in shown[:8])
    more = f" and {len(shown) - 8} more" if len(shown) > 8 else ""
    if failed:
        raise SpecError(
            f"ensemble {ensemble.id} failed to train ({listed}{more}): `tracker requeue "
            "--failed`, then enqueue the Morse graph again"
        )
    raise SpecError(
        f"ensemble {ensemble.id} is not finished and has no completing task ({listed}{more}): "
        "enqueue the ensemble again with `tracker enqueue ensemble`"
    )


def check_morse(spec: MorseSpec, *, force: bool) -> None:
    """Reject a bad Morse graph spec with one line that names the fix."""
    from compute.morse import MAX_SUBDIV, MAX_WEIGHTS

    if spec.pick not in PICKS:
        raise SpecError(f"unknown --pick {spec.pick!r}: use one of {', '.join(PICKS)}")
    if not 2 <= spec.weights <= MAX_WEIGHTS:
        raise SpecError(f"--weights must be 2..{MAX_WEIGHTS} weights, got {spec.weights}")
    if spec.columns and len(set(spec.columns)) != len(spec.columns):
        raise SpecError(f"--weights names a parameter twice ({', '.join(map(repr, spec.columns))}): name each once")  # fmt: skip
    if spec.subdiv < spec.weights:
        raise SpecError(
            f"--subdiv must be at least {spec.weights} (one split per axis of {spec.weights} "
            f"weights), got {spec.subdiv}"
        )
    if spec.subdiv > MAX_SUBDIV:
        raise SpecError(f"--subdiv {spec.subdiv} is above the limit {MAX_SUBDIV} (2**{MAX_SUBDIV} boxes)")  # fmt: skip
    if spec.subdiv > SANE_SUBDIV and not force:
        raise SpecError(
            f"--subdiv {spec.subdiv} means {2**spec.subdiv:,} boxes (more than 2**{SANE_SUBDIV}): "
            "add --force if you mean it"
        )
    if spec.seed < 0:
        raise SpecError(f"--seed must not be negative, got {spec.seed}")


def add_morse(
    session: Session,
    study: Study | None,
    spec: MorseSpec,
    *,
    force: bool = False,
) -> tuple[MorseGraph, bool]:
    """The Morse graph row and its task, for a finished ensemble or one whose training is
    still queued or running (the task then waits on it)."""
    check_morse(spec, force=force)
    ensemble = find_ensemble(session, spec.ensemble_id)
    parents = _wait_on(session, ensemble)
    if ensemble.n_models < 2:
        raise SpecError(f"ensemble {ensemble.id} has {ensemble.n_models} model: a GP map needs at least 2")  # fmt: skip
    columns = check_weights(
        f"ensemble {ensemble.id} ({ensemble.setup})", list(ensemble.param_names),
        len(ensemble.kernel_columns), spec,
    )  # fmt: skip
    study = study or Study.find_or_raise_by_id(session, ensemble.study_id)
    digest = spec_hash("morse", study.name, asdict(spec), ensemble.spec_hash)
    source = {"ensemble_id": ensemble.id, "early_epoch": ensemble.early_epoch,
              "final_epoch": ensemble.epochs, "weights": spec.weights,
              "requested_columns": columns}  # fmt: skip
    row, new = get_or_add(
        session, MorseGraph, digest, study_id=study.id, ensemble_id=ensemble.id,
        setup=ensemble.setup, pick="explicit" if columns else spec.pick, subdiv=spec.subdiv,
        seed=spec.seed,
        conley=spec.conley, source=source, weight_names=[], gp_params={},
    )  # fmt: skip
    if not new:
        return row, False
    task, _ = enqueue(session, study, "morse", {"morse_id": row.id}, depends_on=parents, key=digest)
    row.task_id = task.id
    session.flush()
    return row, True


def check_weights(label: str, names: list[str], n_kernel: int, spec: MorseSpec) -> list[int] | None:
    """The flat parameter indices that ``--weights`` names (None: let --pick choose K of the
    ``n_kernel`` kernel weights), checked against the parameters of ``label``."""
    if not spec.columns:
        if n_kernel < spec.weights:
            raise SpecError(
                f"{label} has {n_kernel} kernel weights, fewer than --weights {spec.weights}: "
                "ask for fewer"
            )
        return None
    out = []
    for item in spec.columns:
        if item.isdigit() and int(item) < len(names):
            out.append(int(item))
        elif item in names:
            out.append(names.index(item))
        else:
            raise SpecError(
                f"--weights: {label} has no parameter {item!r}: "
                f"use a name like {names[0]} or an index 0..{len(names) - 1}"
            )
    if len(set(out)) != len(out):
        raise SpecError(f"--weights names a parameter twice ({', '.join(map(repr, spec.columns))}): name each once")  # fmt: skip
    return out


def find_morse(session: Session, morse_id: int) -> MorseGraph:
    """A computed Morse graph, or NotFound / SpecError naming the command that makes one."""
    row = MorseGraph.find_or_raise_by_id(session, morse_id)
    if row.completed_at is None:
        raise SpecError(f"Morse graph {morse_id} is not computed yet (task {row.task_id}): run `tracker work`")  # fmt: skip
    return row


# --- study files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyEnsemble:
    """A study file's [[ensemble]] table: its spec and the name [[morse]] tables use for it."""

    name: str | None
    spec: EnsembleSpec


@dataclass(frozen=True)
class StudyMorse:
    """A study file's [[morse]] table: ``ensemble`` is a name of the file's [[ensemble]] tables
    or the id of an existing ensemble; ``spec.ensemble_id`` is filled in when written."""

    ensemble: str
    spec: MorseSpec
    force: bool = False


def as_study_keys(message: str) -> str:
    """A CLI message in study-file words: ``--early-epoch`` is the key ``early_epoch``."""
    message = message.replace("--force", "force = true")
    return re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_"), message)


def add_study_morse(
    session: Session,
    study: Study,
    ensembles: Sequence[StudyEnsemble],
    graphs: Sequence[StudyMorse],
) -> dict[str, int]:
    """A study file's ensembles, then its Morse graphs (waiting on those ensembles' training)."""
    counts = {"ensembles": 0, "ensembles_new": 0, "morse": 0, "morse_new": 0}
    ids: dict[str, int] = {}
    for item in ensembles:
        row, new = add_ensemble(session, study, item.spec)
        ids[item.name or ""] = row.id  # "": a file's only, unnamed ensemble
        counts["ensembles"] += 1
        counts["ensembles_new"] += new
    for i, graph in enumerate(graphs):
        ensemble_id = ids[graph.ensemble] if graph.ensemble in ids else int(graph.ensemble)
        spec = replace(graph.spec, ensemble_id=ensemble_id)
        try:
            _, new = add_morse(session, study, spec, force=graph.force)
        except (SpecError, NotFound) as err:
            raise type(err)(f"[[morse]] number {i + 1}: {as_study_keys(str(err))}") from None
        counts["morse"] += 1
        counts["morse_new"] += new
    return counts
