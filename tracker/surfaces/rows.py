"""Loss surfaces as rows and tasks: grids, surface specs, tiles; imported Goldstein surfaces.

Specs are validated completely before anything is written, and everything one request
creates is written in one transaction, so a bad request leaves the database unchanged.
Each row has a spec hash: enqueueing the same spec again finds the existing rows. Models and
directions are the training package's rows.

Task graph of one surface::

    train(model) --> direction(s) --> surface.tile x N --> surface.complete

A surface around a retrained network (a save of a retrain's trajectory) runs along that
save's Hessian eigenvectors; their directions wait for the retrain.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._arrays import add_array, array_path
from tracker._db import Database, utcnow
from tracker._exceptions import SpecError
from tracker._queue import enqueue, get_or_create_study, spec_hash
from tracker._rows import get_or_add
from tracker._schema import (
    Checkpoint,
    Direction,
    HessianSpectrum,
    Model,
    Retrain,
    Study,
    Surface,
    Task,
    Tile,
)
from tracker._store import ArrayStore
from tracker.training.rows import (
    DirectionSpec,
    add_direction,
    find_checkpoint,
    find_model,
    model_signature,
    model_train_task,
    parameter_count,
)

SPLITS = ("train", "test", "val")
BN_MODES = ("eval", "train", "recompute")
DEFAULT_BN_BATCHES = 10
PATH_MARGIN = 0.25  # a path-range PCA grid: the path's extent widened by this share each side
PATH_POINTS = 21  # its points per axis when none are given  # --bn recompute: training batches per point when none are given
METRICS = ("loss", "acc")
PRECISIONS = ("fp32", "tf32", "bf16")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")  # compute.engine's
LOSSES = ("cross_entropy", "mse")  # None: the data set's own (cross_entropy, or mse for regression)
MAX_GRID_POINTS = 4_000_000
MAX_AXIS_POINTS = 100_001
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
    if n > MAX_AXIS_POINTS:
        raise SpecError(
            f"{what} {text!r} has {n:,} points, more than {MAX_AXIS_POINTS:,} on one axis: "
            "use a coarser grid"
        )
    if n > 1 and not lo < hi:
        raise SpecError(f"{what} {text!r} runs from {lo:g} down to {hi:g}: {example}")
    return Grid(lo, hi, n)


# --- specs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSpec:
    split: str = "train"
    subset: int | None = None
    minibatch_size: int | None = None
    minibatches: int | None = None
    bn: str = "eval"
    metrics: tuple[str, ...] = ("loss", "acc")
    subset_seed: int = 0
    precision: str = "fp32"  # tf32 / bf16: opt-in, GPU workers only (the tiles need a GPU)
    gpu: bool = False  # the tiles are claimed only by GPU workers (`tracker work --cuda`)
    compile: str = "none"  # torch.compile mode of the evaluation forward
    loss: str | None = None  # Goldstein's --loss_name; mse on classes: softmax vs one-hot
    bn_batches: int | None = None  # bn='recompute': training batches per point (default 10)

    @property
    def needs_gpu(self) -> bool:
        """Reduced precision exists only on a GPU: such a surface waits for a GPU worker
        rather than being computed in fp32 by a CPU one."""
        return self.gpu or self.precision != "fp32"

    def identity(self) -> dict[str, Any]:
        """What the spec hash covers: options left at their defaults (None, no GPU, no
        compile) are left out, so adding an option keeps the hashes (and so the rows found
        again) of the surfaces that do not use it."""
        out = {k: v for k, v in asdict(self).items() if not (k in _OPTIONAL and v is None)}
        if not self.gpu:
            out.pop("gpu")
        if self.compile == "none":
            out.pop("compile")
        return out


_OPTIONAL = frozenset({"loss", "bn_batches"})


@dataclass(frozen=True)
class CurvatureSpec:
    """Goldstein's min/max Hessian eigenvalue map: per grid point (and minibatch group), the
    algebraically largest and smallest eigenvalue of the Hessian of the loss at the displaced
    weights, both from one Lanczos run (each end, ``which='largest'`` / ``'smallest'``, to
    ``tol`` relative residual) of at most ``max_iter`` steps from a start seeded with ``seed``."""

    tol: float = 1e-3
    max_iter: int = 100
    seed: int = 0


def check_curvature(spec: CurvatureSpec) -> None:
    if isinstance(spec.tol, bool) or not (math.isfinite(spec.tol) and 0 < spec.tol < 1):
        raise SpecError(f"--curvature-tol must be in (0, 1), e.g. 1e-3, got {spec.tol!r}")
    if isinstance(spec.max_iter, bool) or not 1 <= spec.max_iter <= 100_000:
        raise SpecError(f"--curvature-max-iter must be in 1..100,000, got {spec.max_iter!r}")
    if not 0 <= spec.seed < 2**31:
        raise SpecError(f"the curvature seed must be in 0..2**31-1, got {spec.seed}")


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
    # Hessian eigenvector directions (``hessian:I``): eigen index I of the centre checkpoint.
    x_hessian: int | None = None
    y_hessian: int | None = None
    curvature: CurvatureSpec | None = None  # also map lambda_min / lambda_max per point
    y_model: int | str | None = None  # interpolation: y = theta_C - theta_A (Goldstein's model_file3)
    same_dir: bool = False  # Goldstein's --same_dir: the y direction is the x direction
    # PCA: the grid's range is set from the projected path (PATH_MARGIN around it) once the
    # directions exist; x and y then only give the point counts.
    path_range: bool = False
    # Centred on a retrained network: save ``save`` (None: the last) of the model's retrain
    # ``retrain``, along that save's Hessian eigenvectors (x_hessian, y_hessian).
    retrain: int | None = None
    save: int | None = None


def parse_direction_choice(text: str | None, what: str) -> int | None:
    """``random`` (None) or ``hessian:I`` (the eigen index I): `--x-direction` and a study
    file's ``x_direction`` alike; ``what`` names the flag or key in the message."""
    if text is None or text.strip() == "random":
        return None
    kind, _, index = text.strip().partition(":")
    if kind == "hessian" and index.isdigit():
        return int(index)
    raise SpecError(f"{what} {text!r} is not random or hessian:I (e.g. hessian:0, the top one)")


def check_eval(spec: EvalSpec, regression: bool) -> None:
    if spec.split not in SPLITS:
        raise SpecError(f"unknown split {spec.split!r}: use one of {', '.join(SPLITS)}")
    if spec.loss is not None and spec.loss not in LOSSES:
        raise SpecError(f"unknown loss {spec.loss!r}: use cross-entropy or mse")
    if regression and spec.loss == "cross_entropy":
        raise SpecError("cross-entropy needs class labels and this data set is a regression: use --loss mse")  # fmt: skip
    if spec.precision not in PRECISIONS:
        raise SpecError(f"unknown precision {spec.precision!r}: use fp32, tf32 or bf16 (GPU only)")
    if spec.compile not in COMPILE_MODES:
        raise SpecError(
            f"unknown compile mode {spec.compile!r}: use one of {', '.join(COMPILE_MODES)}"
        )
    if spec.bn not in BN_MODES:
        raise SpecError(f"unknown BatchNorm mode {spec.bn!r}: use eval, train or recompute")
    if spec.bn_batches is not None and spec.bn != "recompute":
        raise SpecError("BatchNorm batches are for --bn recompute: drop --bn-batches or add --bn recompute")  # fmt: skip
    if spec.bn_batches is not None and not 1 <= spec.bn_batches <= 10_000:
        raise SpecError(f"--bn-batches must be between 1 and 10000, got {spec.bn_batches}")
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


# --- array paths ------------------------------------------------------------------------------


def surface_dir(surface: Surface) -> str:
    """The store folder of a surface's grids (loss, acc)."""
    return array_path("surfaces", surface)


# --- writing rows -----------------------------------------------------------------------------


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


def _point_cost(session: Session, model: Model, centre: Checkpoint, ev: EvalSpec) -> float | None:
    """Samples x parameters evaluated per grid point, or None when a size is unknown."""
    if ev.minibatch_size is not None and ev.minibatches is not None:
        samples = ev.minibatch_size * ev.minibatches
    elif ev.subset is not None:
        samples = ev.subset
    elif model.dataset in _SPLIT_SIZES and ev.split in ("train", "test"):
        samples = _SPLIT_SIZES[model.dataset][0 if ev.split == "train" else 1]
    else:
        return None
    params = parameter_count(session, model, centre)
    return None if params is None else float(samples) * float(params)


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
    point = _retrain_centre(session, model, spec)
    if point is None:
        centre = find_checkpoint(session, model, spec.epoch)
    else:  # the trajectory has the layout of the checkpoint the retrain jumped from
        centre = Checkpoint.find_or_raise_by_id(session, point[0].checkpoint_id)
    xdir = spec.x_direction
    if spec.other_model is not None:
        # Interpolation theta_A + x (theta_B - theta_A): the centre is A, the direction B - A.
        other, far = _far_end(
            session, spec.other_model, names, model, centre, spec.epoch,
            mismatch="cannot interpolate model {model.id} ({model.architecture} on "
            "{model.dataset}) and model {other.id} ({other.architecture} on {other.dataset}): "
            "both ends need the same architecture and data set",
            itself="cannot interpolate checkpoint {centre.id} with itself (model {model.id}, "
            "epoch {centre.epoch}): the direction theta_B - theta_A would be zero; name two models",
        )  # fmt: skip
        xdir = replace(xdir, kind="interpolation", seed=None, normalization="none", ignore="none")
        x_rows = add_direction(session, study, xdir, model, centre, far, other)
        y_rows: list[Direction] = []
        if spec.y_model is not None:
            y_rows = _third_model_direction(session, study, spec, model, centre, xdir, names)
            if y_rows[0].id == x_rows[0].id:
                raise SpecError("--y-model names the same model as B: the y direction would be the x one; name a third model")  # fmt: skip
        elif spec.y is not None:
            ydir = spec.y_direction or DirectionSpec(seed=1)
            y_rows = add_direction(session, study, ydir, model, centre)
    elif spec.x_hessian is not None:
        x_rows = [hessian_direction(session, study, model, centre, spec.x_hessian, point=point)]
        y_rows = []
        if spec.same_dir:
            if spec.y is None:
                raise SpecError("--same-dir makes the y direction the x one: give --y MIN:MAX:N too")
            if spec.y_hessian is not None:
                raise SpecError("--same-dir and --y-direction both give the y direction: keep one of them")  # fmt: skip
            y_rows = x_rows
        elif spec.y is not None:
            y_rows = [hessian_direction(session, study, model, centre, spec.y_hessian, x_rows[0],
                                        point=point)
                      if spec.y_hessian is not None
                      else add_direction(session, study, spec.y_direction or DirectionSpec(seed=1),
                                         model, centre)[0]]  # fmt: skip
    elif spec.y_hessian is not None:
        raise SpecError("a Hessian y direction needs a Hessian x direction: --x-direction hessian:0")
    elif spec.y_model is not None:
        raise SpecError("a y direction from a third model (--y-model) needs --interpolate A B")
    elif xdir.kind == "pca":
        if spec.y is None:
            raise SpecError("a PCA surface is 2D: give --y MIN:MAX:N too")
        rows = add_direction(session, study, xdir, model, centre)
        x_rows, y_rows = [rows[0]], [rows[1]]
    elif spec.path_range:
        raise SpecError("a grid around the projected path is for PCA surfaces: add --pca or give --x/--y")
    else:
        if xdir.kind == "interpolation":
            raise SpecError("an interpolation needs the other model: --interpolate A B")
        x_rows = add_direction(session, study, xdir, model, centre)
        y_rows = []
        if spec.same_dir:
            if spec.y is None:
                raise SpecError("--same-dir makes the y direction the x one: give --y MIN:MAX:N too")
            y_rows = x_rows
        elif spec.y is not None:
            ydir = spec.y_direction or replace(xdir, seed=(xdir.seed or 0) + 1)
            if ydir.kind != "random":
                raise SpecError("the y direction of a random surface must be random too")
            if ydir == xdir:
                raise SpecError("the x and y directions are the same (same seed): give the y direction another seed")  # fmt: skip
            y_rows = add_direction(session, study, ydir, model, centre)
    xd = x_rows[0]
    yd = y_rows[0] if y_rows else None
    nx, ny = spec.x.n, (spec.y.n if spec.y else None)
    tnx, tny = spec.tile or default_tile(nx, ny, _point_cost(session, model, centre, ev))
    if tnx < 1 or tny < 1:
        raise SpecError(f"tile sizes must be at least 1, got {tnx}x{tny}")
    tny = 1 if ny is None else min(tny, ny)
    tnx = min(tnx, nx)
    if spec.same_dir and spec.x_direction.kind != "random":
        raise SpecError("--same-dir applies to random directions, not to an interpolation or PCA")
    eval_config: dict[str, Any] = {"subset_seed": ev.subset_seed, "precision": ev.precision,
                                   "compile": ev.compile, "gpu": ev.needs_gpu}  # fmt: skip
    if ev.loss is not None:
        eval_config["loss"] = ev.loss
    if spec.path_range:
        eval_config["range"] = "path"
    if ev.bn == "recompute":
        # K batches of the model's training batch size, the first K * B rows of its train split
        k, b = ev.bn_batches or DEFAULT_BN_BATCHES, int(model.batch_size)
        n_train = _SPLIT_SIZES.get(model.dataset, (None, None))[0]
        if n_train is not None and k * b > n_train:
            raise SpecError(
                f"--bn recompute asks for {k} batches of {b} (the model's batch size), more than "
                f"the {n_train} rows of {model.dataset}'s train split: use --bn-batches {n_train // b}"
            )
        eval_config["bn_batches"], eval_config["bn_batch_size"] = k, b
    # The curvature settings join the hash only when asked for: older specs keep their hash.
    extra: list[Any] = []
    if spec.curvature is not None:
        check_curvature(spec.curvature)
        eval_config["curvature"] = asdict(spec.curvature)
        extra = [{"curvature": asdict(spec.curvature)}]
    if point is not None:  # a checkpoint's surfaces keep the hashes they had
        extra.append({"retrain": point[0].id, "save": point[1]})
    texts = [g.text() if g else None for g in (spec.x, spec.y)]
    if spec.path_range:  # the range is not known yet: the hash names the point counts
        texts = [f"path:{g.n}" if g else None for g in (spec.x, spec.y)]
    digest = spec_hash(
        "surface", study.name, centre.id, xd.id, yd.id if yd else None, texts[0], texts[1],
        ev.identity(), [tnx, tny], *extra,
    )  # fmt: skip
    surface, new = get_or_add(
        session, Surface, digest, study_id=study.id, checkpoint_id=centre.id,
        x_direction_id=xd.id, y_direction_id=yd.id if yd else None,
        x_min=spec.x.lo, x_max=spec.x.hi, nx=nx,
        y_min=spec.y.lo if spec.y else None, y_max=spec.y.hi if spec.y else None, ny=ny,
        tile_nx=tnx, tile_ny=tny if ny is not None else None, split=ev.split,
        subset_size=ev.subset, minibatch_size=ev.minibatch_size, n_minibatches=ev.minibatches,
        bn_mode=ev.bn, metrics=list(ev.metrics), eval_config=eval_config,
        curvature=spec.curvature is not None,
        retrain_id=point[0].id if point else None, save_index=point[1] if point else None,
    )  # fmt: skip
    if not new:
        return surface, False
    # A PCA pair shares one direction task; enqueue() records each parent once.
    parents = [model_train_task(session, model)] + [
        Task.find_or_raise_by_id(session, d.task_id) for d in (xd, yd) if d is not None
    ]
    if spec.path_range:  # the grid's range comes from the projected path before any tile
        ranged, _ = enqueue(session, study, "surface.range", {"surface_id": surface.id},
                            depends_on=parents, key=digest)  # fmt: skip
        parents.append(ranged)
    tile_tasks: list[Task] = []
    for iy0 in range(0, ny or 1, tny):
        for ix0 in range(0, nx, tnx):
            ix1, iy1 = min(ix0 + tnx, nx), min(iy0 + tny, ny or 1)
            payload = {"surface_id": surface.id, "tile": [ix0, ix1, iy0, iy1]}
            task, _ = enqueue(session, study, "surface.tile", payload, depends_on=parents,
                              key=digest, needs_gpu=ev.needs_gpu)  # fmt: skip
            session.add(Tile(surface_id=surface.id, ix0=ix0, ix1=ix1, iy0=iy0, iy1=iy1,
                             task_id=task.id))  # fmt: skip
            tile_tasks.append(task)
    done_task, _ = enqueue(
        session, study, "surface.complete", {"surface_id": surface.id},
        depends_on=tile_tasks, key=digest,
    )  # fmt: skip
    surface.task_id = done_task.id
    # Its figures on the model's MLflow run, by a worker that has MLflow (not the tile path).
    enqueue(session, study, "surface.artifacts", {"surface_id": surface.id},
            depends_on=[done_task], key=digest)  # fmt: skip
    session.flush()
    return surface, True


def hessian_direction(
    session: Session, study: Study, model: Model, centre: Checkpoint, index: int,
    sibling: Direction | None = None, point: tuple[Retrain, int] | None = None,
) -> Direction:  # fmt: skip
    """Eigenvector ``index`` of the Hessian at the centre checkpoint, or at save ``point[1]``
    of retrain ``point[0]`` (a ``directions`` row of kind 'hessian', made by `tracker enqueue
    hessian`): from the same spectrum as ``sibling`` when given, else from the newest spectrum
    that has it, one of ``study`` first. Its task may still be queued: the surface's tiles
    wait for it."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise SpecError(f"hessian:{index} is not an eigen index: write hessian:0 for the top one")
    query = (
        sa.select(Direction)
        .join(HessianSpectrum, HessianSpectrum.id == Direction.hessian_spectrum_id)
        .where(Direction.kind == "hessian", Direction.checkpoint_a_id == centre.id,
               Direction.eigen_index == index)
    )  # fmt: skip
    if point is None:  # the checkpoint's own, not a retrained network's
        query = query.where(HessianSpectrum.retrain_id.is_(None))
    else:
        query = query.where(HessianSpectrum.retrain_id == point[0].id,
                            HessianSpectrum.save_index == point[1])  # fmt: skip
    if sibling is not None:
        query = query.where(Direction.hessian_spectrum_id == sibling.hessian_spectrum_id)
    order = (sa.case((Direction.study_id == study.id, 0), else_=1), Direction.id.desc())
    found = session.scalar(query.order_by(*order).limit(1))
    if found is None:
        same = " in the same spectrum as the x direction" if sibling is not None else ""
        if point is None:
            where, ask = f"at epoch {centre.epoch}", f"--epochs {centre.epoch}"
        else:
            where = f"at save {point[1]} of retrain {point[0].id}"
            ask = f"--retrains {point[0].id} --saves {point[1]}"
        raise SpecError(
            f"model {model.id} has no Hessian eigenvector {index} {where}{same}: make it first "
            f"with `tracker enqueue hessian --model {model.id} {ask} --top-k {index + 1}`"
        )
    return found


def _retrain_centre(session: Session, model: Model, spec: SurfaceSpec) -> tuple[Retrain, int] | None:  # fmt: skip
    """The retrain and save a surface is centred on (None: a checkpoint), checked: a retrain
    of the model, a save of its trajectory, and Hessian eigenvector directions only (random,
    PCA and interpolation directions are made around checkpoints)."""
    if spec.retrain is None:
        if spec.save is not None:
            raise SpecError("--save S picks a save of a retrain's trajectory: add --retrain R")
        return None
    if spec.epoch is not None:
        raise SpecError("--epoch and --retrain both name the centre (a retrain starts from "
                        "its own checkpoint): drop --epoch")  # fmt: skip
    if spec.other_model is not None or spec.x_direction.kind != "random" or spec.path_range:
        raise SpecError("a surface around a retrained network (--retrain) runs along its "
                        "Hessian eigenvectors: drop --interpolate/--pca and give "
                        "--x-direction hessian:I")  # fmt: skip
    if spec.x_hessian is None or (spec.y is not None and spec.y_hessian is None
                                  and not spec.same_dir):  # fmt: skip
        raise SpecError("a surface around a retrained network (--retrain) runs along its "
                        "Hessian eigenvectors: give --x-direction hessian:I (and "
                        "--y-direction hessian:J for a 2D one)")  # fmt: skip
    retrain = session.get(Retrain, spec.retrain)
    if retrain is None or retrain.model_id != model.id:
        raise SpecError(f"retrain {spec.retrain} is not a retrain of model {model.id}: "
                        f"`tracker ls retrains --where model_id={model.id}` lists them")  # fmt: skip
    n_saves = int(retrain.epochs) * int(retrain.saves_per_epoch) + 1
    save = n_saves - 1 if spec.save is None else spec.save
    if isinstance(save, bool) or not isinstance(save, int) or not 0 <= save < n_saves:
        raise SpecError(
            f"retrain {retrain.id} has saves 0..{n_saves - 1} ({retrain.epochs} epochs x "
            f"{retrain.saves_per_epoch} per epoch, and the jump): ask for one of those"
        )
    return retrain, save


def path_range(trajectory: np.ndarray) -> tuple[float, float, float, float]:
    """The grid range around a projected path ``[n, 3]`` of (epoch, x, y): its extent (the
    centre, at the origin, included) widened by PATH_MARGIN of it on each side."""
    out: list[float] = []
    for col in (1, 2):
        values = np.append(np.asarray(trajectory, dtype=np.float64)[:, col], 0.0)
        lo, hi = float(values.min()), float(values.max())
        pad = PATH_MARGIN * (hi - lo) if hi > lo else 1.0
        out += [lo - pad, hi + pad]
    return out[0], out[1], out[2], out[3]


def _third_model_direction(
    session: Session, study: Study, spec: SurfaceSpec, model: Model, centre: Any,
    xdir: DirectionSpec, names: dict[str, Model] | None,
) -> list[Direction]:  # fmt: skip
    """Goldstein's ``model_file3``: the y direction theta_C - theta_A of an interpolation."""
    if spec.y is None:
        raise SpecError("a y direction from a third model (--y-model) needs --y MIN:MAX:N too")
    third, far = _far_end(
        session, spec.y_model, names, model, centre, spec.epoch,  # type: ignore[arg-type]
        mismatch="model {other.id} ({other.architecture} on {other.dataset}) cannot give the y "
        "direction of model {model.id} ({model.architecture} on {model.dataset}): all three "
        "models need the same architecture and data set",
        itself="--y-model {other.id} is the centre model itself: the y direction theta_C - "
        "theta_A would be zero; name a third model",
    )  # fmt: skip
    return add_direction(session, study, xdir, model, centre, far, third)


def _far_end(
    session: Session, ref: int | str, names: dict[str, Model] | None, model: Model,
    centre: Any, epoch: int | None, *, mismatch: str, itself: str,
) -> tuple[Model, Any]:  # fmt: skip
    """The model ``ref`` names and its checkpoint at ``epoch``: the far end of a direction
    theta_far - theta_centre, refused (``mismatch``/``itself``, formatted with model, other
    and centre) when its architecture or data set differ or it is the centre itself."""
    other = find_model(session, ref, names)
    if model_signature(other) != model_signature(model):
        raise SpecError(mismatch.format(model=model, other=other, centre=centre))
    far = find_checkpoint(session, other, epoch)
    if far.id == centre.id:
        raise SpecError(itself.format(model=model, other=other, centre=centre))
    return other, far


def surface_tasks(session: Session, surface: Surface) -> list[int]:
    return list(session.scalars(sa.select(Tile.task_id).where(Tile.surface_id == surface.id)))


# --- imported surfaces ------------------------------------------------------------------------


def _uniform(values: np.ndarray, name: str) -> tuple[float, float, int]:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise SpecError(f"the file's {name} is empty: it holds no surface")
    if values.size > 1:
        expected = np.linspace(values[0], values[-1], values.size)
        if not np.allclose(values, expected, rtol=1e-6, atol=1e-9) or values[-1] <= values[0]:
            raise SpecError(f"the file's {name} are not an increasing even grid: cannot import it")
    return float(values[0]), float(values[-1]), int(values.size)


def import_h5(
    db: Database, store_url: str, content: dict[str, Any], *, study: str, source: str
) -> int:
    """Write a surface row (with summaries) and its arrays; return the surface id."""
    from compute.summary import summarize

    xs, ys = content["xs"], content.get("ys")
    loss = np.asarray(content["loss"], dtype=np.float32)
    acc = content.get("acc")
    acc = np.full_like(loss, np.nan) if acc is None else np.asarray(acc, dtype=np.float32)
    x_min, x_max, nx = _uniform(xs, "xcoordinates")
    y_min = y_max = ny = None
    if ys is not None:
        y_min, y_max, ny = _uniform(ys, "ycoordinates")
    if loss.shape != (1, ny or 1, nx):
        raise SpecError(f"the file's train_loss has shape {loss.shape[1:]}, the coordinates say {(ny or 1, nx)}")  # fmt: skip
    digest = hashlib.sha256(
        b"import-h5" + study.encode() + loss.tobytes() + np.asarray(xs).tobytes()
        + (np.asarray(ys).tobytes() if ys is not None else b"")
    ).hexdigest()  # fmt: skip
    store = ArrayStore(store_url)
    with db.session() as session:
        existing = session.scalar(sa.select(Surface).where(Surface.spec_hash == digest))
        if existing is not None:
            return existing.id
        st = get_or_create_study(session, study)
        summary = summarize(np.asarray(xs), None if ys is None else np.asarray(ys), loss)
        surface = Surface(
            study_id=st.id, spec_hash=digest, checkpoint_id=None, x_direction_id=None,
            x_min=x_min, x_max=x_max, nx=nx, y_min=y_min, y_max=y_max, ny=ny, tile_nx=nx,
            tile_ny=ny, split=str(content.get("split", "train")), bn_mode="eval",
            metrics=["loss"] + (["acc"] if content.get("acc") is not None else []),
            eval_config={"imported": True}, source=source[:500], **summary,
        )  # fmt: skip
        session.add(surface)
        session.flush()
        # The arrays go in before the commit that makes the row visible; if one cannot be
        # written (a read-only or full store) the others are removed and nothing is committed.
        written: list[str] = []
        try:
            for name, data, column in (("loss", loss, "loss_array_id"),
                                       ("acc", acc, "acc_array_id")):  # fmt: skip
                path = f"{surface_dir(surface)}/{name}"
                written.append(path)
                spec = store.write(path, data, chunks=data.shape)
                setattr(surface, column, add_array(session, spec).id)
        except BaseException:
            for path in written:
                with contextlib.suppress(Exception):
                    store.delete(path)
            raise
        surface.completed_at = session.scalar(sa.select(utcnow()))
        return surface.id


__all__: Sequence[str] = (
    "CurvatureSpec", "EvalSpec", "Grid", "SurfaceSpec", "add_surface", "hessian_direction",
    "import_h5", "parse_direction_choice", "parse_grid",
)  # fmt: skip
