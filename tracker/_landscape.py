"""Loss-surface work as rows and tasks: models to train, directions, surfaces and their tiles.

Specs are validated completely before anything is written, and everything one request
creates is written in one transaction, so a bad request leaves the database unchanged.
Each row has a spec hash: enqueueing the same spec again finds the existing rows.

Task graph of one surface::

    train(model) --> direction(s) --> surface.tile x N --> surface.complete
"""

from __future__ import annotations

import functools
import json
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
from tracker._schema import Checkpoint, Direction, Model, Study, Surface, Task, Tile

OPTIMIZERS = ("sgd", "adam")
NORMALIZATIONS = ("filter", "layer", "model", "none")
IGNORES = ("biasbn", "none")
TARGETS = ("weights", "states")
SPLITS = ("train", "test", "val")
BN_MODES = ("eval", "train")
METRICS = ("loss", "acc")
PRECISIONS = ("fp32", "tf32", "bf16")
MAX_GRID_POINTS = 4_000_000
REGRESSION_DATASETS = frozenset({"autompg"})


# --- grids ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    lo: float
    hi: float
    n: int

    def text(self) -> str:
        return f"{self.lo:g}:{self.hi:g}:{self.n}"

    def points(self) -> list[float]:
        if self.n == 1:
            return [self.lo]
        step = (self.hi - self.lo) / (self.n - 1)
        return [self.lo + i * step for i in range(self.n)]


def parse_grid(text: Any, what: str = "grid") -> Grid:
    """Parse ``MIN:MAX:N`` (Goldstein's xmin:xmax:xnum)."""
    example = "write MIN:MAX:N with MIN < MAX and N >= 1, e.g. -1:1:51"
    if isinstance(text, Grid):
        return text
    parts = str(text).split(":")
    if len(parts) != 3:
        raise SpecError(f"{what} {text!r} is not MIN:MAX:N: {example}")
    try:
        lo, hi = float(parts[0]), float(parts[1])
        n = int(parts[2])
    except ValueError:
        raise SpecError(f"{what} {text!r} does not parse as numbers: {example}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise SpecError(f"{what} {text!r} has a non-finite bound: {example}")
    if n < 1:
        raise SpecError(f"{what} {text!r} has {n} points: {example}")
    if n > 1 and not lo < hi:
        raise SpecError(f"{what} {text!r} runs from {lo:g} down to {hi:g}: {example}")
    return Grid(lo, hi, n)


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


@dataclass(frozen=True)
class EvalSpec:
    split: str = "train"
    subset: int | None = None
    minibatch_size: int | None = None
    minibatches: int | None = None
    bn: str = "eval"
    metrics: tuple[str, ...] = ("loss", "acc")
    subset_seed: int = 0
    precision: str = "fp32"  # tf32 / bf16: opt-in, used on GPU workers only


@dataclass(frozen=True)
class SurfaceSpec:
    """A surface around one model's checkpoint (or along the line between two models)."""

    model: int | str  # a model id, or a model name within the same request
    x: Grid
    y: Grid | None = None
    epoch: int | None = None  # None: the final epoch
    x_direction: DirectionSpec = field(default_factory=DirectionSpec)
    y_direction: DirectionSpec | None = None
    evaluation: EvalSpec = field(default_factory=EvalSpec)
    tile: tuple[int, int] | None = None  # (tile_nx, tile_ny)
    other_model: int | str | None = None  # interpolation: the far end (theta_B)


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


def check_eval(spec: EvalSpec, regression: bool) -> None:
    if spec.split not in SPLITS:
        raise SpecError(f"unknown split {spec.split!r}: use one of {', '.join(SPLITS)}")
    if spec.precision not in PRECISIONS:
        raise SpecError(f"unknown precision {spec.precision!r}: use fp32, tf32 or bf16 (GPU only)")
    if spec.bn not in BN_MODES:
        raise SpecError(f"unknown BatchNorm mode {spec.bn!r}: use eval or train")
    for m in spec.metrics:
        if m not in METRICS:
            raise SpecError(f"unknown metric {m!r}: use loss and/or acc")
    if "loss" not in spec.metrics:
        raise SpecError("metrics must include loss (acc is optional)")
    if regression and "acc" in spec.metrics:
        raise SpecError("accuracy is undefined for a regression data set: use --metrics loss")
    if spec.subset is not None and spec.subset < 1:
        raise SpecError(f"subset must be at least 1 sample, got {spec.subset}")
    if (spec.minibatches is None) != (spec.minibatch_size is None):
        raise SpecError("give both the number of minibatches and their size (e.g. 3 and 256)")
    if spec.minibatches is not None and (spec.minibatches < 1 or spec.minibatch_size < 1):  # type: ignore[operator]
        raise SpecError("the number of minibatches and their size must be at least 1")
    if spec.minibatches is not None and spec.subset is not None:
        raise SpecError("choose either a fixed subset or the first k minibatches, not both")


# --- array paths ------------------------------------------------------------------------------


def model_dir(model: Model) -> str:
    return array_path("models", model)


def checkpoint_path(model: Model, epoch: int) -> str:
    return array_path("models", model, f"epoch-{epoch:04d}")


def direction_path(direction: Direction) -> str:
    return array_path("directions", direction)


def surface_dir(surface: Surface) -> str:
    return array_path("surfaces", surface)


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
    if isinstance(ref, str) and names is not None and ref in names:
        return names[ref]
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        model = session.get(Model, int(ref))
        if model is None:
            raise NotFound(f"unknown model id {ref}: `tracker show study NAME` lists a study's models")  # fmt: skip
        return model
    found = session.scalars(sa.select(Model).where(Model.name == ref)).all()
    if len(found) == 1:
        return found[0]
    if not found:
        raise NotFound(f"unknown model {ref!r}: give a model id or the name of a model in the study file")  # fmt: skip
    raise SpecError(f"model name {ref!r} names {len(found)} models: use its id")


def _checkpoint(session: Session, model: Model, epoch: int | None) -> Checkpoint:
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


def _model_signature(model: Model) -> tuple[Any, ...]:
    """Models with equal signatures have the same parameter layout."""
    arch = repr(sorted((model.arch_config or {}).items()))
    return (model.architecture, arch, model.dataset)


def _train_task(session: Session, model: Model) -> Task:
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
    parents = [_train_task(session, model)]
    if other_model is not None and other_model.id != model.id:
        parents.append(_train_task(session, other_model))
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


def _balanced(n: int, target: int) -> int:
    """A tile side near ``target`` that cuts n points into equal tiles (51 -> 13,13,13,12)."""
    tiles = -(-n // target)
    return -(-n // tiles)


# Tiles: at least 16x16 points (32 in 1D), grown for cheap surfaces until one tile is about
# TILE_WORK samples x parameters (~0.1-0.3 s for an MLP on one CPU core): a tile costs a claim,
# two chunk writes and a completion (~10-20 ms), which was a third of the work of a 16x16 tile
# of an MLP on one 128-sample minibatch (seed 001's grids).
TILE_WORK = 2e9
MAX_TILE_POINTS = {1: 256, 2: 4096}
# Rough sizes of the built-in data sets' splits (train, test): only for sizing tiles.
_SPLIT_SIZES = {
    "iris": (120, 30), "digits": (1438, 359), "mnist5k": (4000, 1000), "autompg": (314, 78),
    "fashion-mnist": (60000, 10000), "mnist": (60000, 10000), "cifar10": (50000, 10000),
}  # fmt: skip


def default_tile(nx: int, ny: int | None, point_cost: float | None = None) -> tuple[int, int]:
    """Tile sides for an nx (x ny) grid; ``point_cost`` (samples x parameters of one point,
    when known) makes tiles of cheap surfaces larger."""
    base = 32 if ny is None else 16 * 16
    points = float(base)
    if point_cost:
        points = min(max(base, TILE_WORK / point_cost), MAX_TILE_POINTS[1 if ny is None else 2])
    if ny is None:
        return (_balanced(nx, int(points)), 1)
    side = max(16, int(points**0.5))
    return (_balanced(nx, side), _balanced(ny, side))


def _point_cost(model: Model, ev: EvalSpec) -> float | None:
    """Samples x parameters evaluated per grid point, or None when a size is unknown."""
    if ev.minibatch_size is not None and ev.minibatches is not None:
        samples = ev.minibatch_size * ev.minibatches
    elif ev.subset is not None:
        samples = ev.subset
    elif model.dataset in _SPLIT_SIZES and ev.split in ("train", "test"):
        samples = _SPLIT_SIZES[model.dataset][0 if ev.split == "train" else 1]
    else:
        return None
    params = _parameter_count(
        model.architecture, json.dumps(model.arch_config or {}, sort_keys=True), model.dataset
    )
    return None if params is None else float(samples) * float(params)


@functools.lru_cache(maxsize=64)
def _parameter_count(architecture: str, config_json: str, dataset: str) -> int | None:
    """Cached per (architecture, config, dataset): a study adds many surfaces of one model."""
    try:
        from compute.models import parameter_count

        return parameter_count(architecture, json.loads(config_json), dataset)
    except Exception:  # sizing is a heuristic: the default tiles are always valid
        return None


def add_surface(
    session: Session,
    study: Study,
    spec: SurfaceSpec,
    names: dict[str, Model] | None = None,
) -> tuple[Surface, bool]:
    """The surface row, one tile task per chunk, and the task that completes it."""
    model = find_model(session, spec.model, names)
    check_eval(spec.evaluation, model.dataset in REGRESSION_DATASETS)
    ev = spec.evaluation
    points = spec.x.n * (spec.y.n if spec.y else 1)
    if points > MAX_GRID_POINTS:
        raise SpecError(f"the grid has {points:,} points, more than {MAX_GRID_POINTS:,}: use a coarser grid")  # fmt: skip
    centre = _checkpoint(session, model, spec.epoch)
    xdir = spec.x_direction
    if spec.other_model is not None:
        # Interpolation theta_A + x (theta_B - theta_A): the centre is A, the direction B - A.
        other = find_model(session, spec.other_model, names)
        if _model_signature(other) != _model_signature(model):
            raise SpecError(
                f"cannot interpolate model {model.id} ({model.architecture} on {model.dataset}) "
                f"and model {other.id} ({other.architecture} on {other.dataset}): "
                "both ends need the same architecture and data set"
            )
        far = _checkpoint(session, other, spec.epoch)
        xdir = replace(xdir, kind="interpolation", seed=None, normalization="none", ignore="none")
        x_rows = add_direction(session, study, xdir, model, centre, far, other)
        y_rows: list[Direction] = []
        if spec.y is not None:
            ydir = spec.y_direction or DirectionSpec(seed=1)
            y_rows = add_direction(session, study, ydir, model, centre)
    elif xdir.kind == "pca":
        if spec.y is None:
            raise SpecError("a PCA surface is 2D: give --y MIN:MAX:N too")
        rows = add_direction(session, study, xdir, model, centre)
        x_rows, y_rows = [rows[0]], [rows[1]]
    else:
        if xdir.kind == "interpolation":
            raise SpecError("an interpolation needs the other model: --interpolate A B")
        x_rows = add_direction(session, study, xdir, model, centre)
        y_rows = []
        if spec.y is not None:
            ydir = spec.y_direction or replace(xdir, seed=(xdir.seed or 0) + 1)
            if ydir.kind != "random":
                raise SpecError("the y direction of a random surface must be random too")
            if ydir == xdir:
                raise SpecError("the x and y directions are the same (same seed): give the y direction another seed")  # fmt: skip
            y_rows = add_direction(session, study, ydir, model, centre)
    xd = x_rows[0]
    yd = y_rows[0] if y_rows else None
    nx, ny = spec.x.n, (spec.y.n if spec.y else None)
    tnx, tny = spec.tile or default_tile(nx, ny, _point_cost(model, ev))
    if tnx < 1 or tny < 1:
        raise SpecError(f"tile sizes must be at least 1, got {tnx}x{tny}")
    tny = 1 if ny is None else min(tny, ny)
    tnx = min(tnx, nx)
    eval_config = {"subset_seed": ev.subset_seed, "precision": ev.precision}
    digest = spec_hash(
        "surface", study.name, centre.id, xd.id, yd.id if yd else None, spec.x.text(),
        spec.y.text() if spec.y else None, asdict(ev), [tnx, tny],
    )  # fmt: skip
    surface, new = get_or_add(
        session, Surface, digest, study_id=study.id, checkpoint_id=centre.id,
        x_direction_id=xd.id, y_direction_id=yd.id if yd else None,
        x_min=spec.x.lo, x_max=spec.x.hi, nx=nx,
        y_min=spec.y.lo if spec.y else None, y_max=spec.y.hi if spec.y else None, ny=ny,
        tile_nx=tnx, tile_ny=tny if ny is not None else None, split=ev.split,
        subset_size=ev.subset, minibatch_size=ev.minibatch_size, n_minibatches=ev.minibatches,
        bn_mode=ev.bn, metrics=list(ev.metrics), eval_config=eval_config,
    )  # fmt: skip
    if not new:
        return surface, False
    # A PCA pair shares one direction task; enqueue() records each parent once.
    parents = [_train_task(session, model)] + [
        session.get(Task, d.task_id) for d in (xd, yd) if d is not None
    ]
    tile_tasks: list[Task] = []
    for iy0 in range(0, ny or 1, tny):
        for ix0 in range(0, nx, tnx):
            ix1, iy1 = min(ix0 + tnx, nx), min(iy0 + tny, ny or 1)
            payload = {"surface_id": surface.id, "tile": [ix0, ix1, iy0, iy1]}
            task, _ = enqueue(session, study, "surface.tile", payload, depends_on=parents,
                              key=digest)  # fmt: skip
            session.add(Tile(surface_id=surface.id, ix0=ix0, ix1=ix1, iy0=iy0, iy1=iy1,
                             task_id=task.id))  # fmt: skip
            tile_tasks.append(task)
    done_task, _ = enqueue(
        session, study, "surface.complete", {"surface_id": surface.id},
        depends_on=tile_tasks, key=digest,
    )  # fmt: skip
    surface.task_id = done_task.id
    session.flush()
    return surface, True


def surface_tasks(session: Session, surface: Surface) -> list[int]:
    return list(session.scalars(sa.select(Tile.task_id).where(Tile.surface_id == surface.id)))


__all__: Sequence[str] = (
    "DirectionSpec", "EvalSpec", "Grid", "ModelSpec", "SurfaceSpec", "add_model",
    "add_surface", "check_model", "parse_grid",
)  # fmt: skip
