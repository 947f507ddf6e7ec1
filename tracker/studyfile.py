"""Study files: a TOML sweep of models x directions x surfaces, enqueued in one transaction.

```toml
study = "batch-size"
[[model]]
name = "mlp-bs{batch_size}"         # {key} placeholders take the swept values
architecture = "mlp"
arch = { widths = [64, 64], activation = "relu" }
dataset = "digits"
batch_size = [32, 1024]             # a list of values sweeps: one model per combination
lr = 0.05
epochs = 20
checkpoints = [0, 5, 10]            # epochs kept besides the last

[[surface]]                          # around every listed model (default: all of the file)
models = ["mlp-bs32"]
x = "-1:1:21"
y = "-1:1:21"                        # leave out for a 1D surface
direction = { seed = 0, norm = "filter", ignore = "biasbn", target = "weights" }
pairs = 1                            # direction pairs (seeds 2i, 2i+1 after the base seed)
# seeds = "0-4"                      # instead of pairs: one surface per x-direction seed (2D: y
                                     # uses seed+1, so seeds two apart); measures average them
epochs = ["final"]                   # or checkpoint epochs: one surface each
split = "train"                      # subset = N, or minibatches = K with minibatch_size = B
bn = "eval"

[[surface]]                          # along Hessian eigenvectors (a [[hessian]] table makes
models = ["mlp-bs32"]                # them; the tiles wait for its task)
x = "-0.1:0.1:21"
y = "-0.1:0.1:21"
x_direction = "hessian:0"            # "random" (default) or "hessian:I", eigen index I
y_direction = "hessian:1"            # or a table { seed = 1 } for a random y direction
curvature = true                     # also map lambda_min, lambda_max per point (Goldstein)
curvature_tol = 1e-3                 # optional, as --curvature-tol / --curvature-max-iter
curvature_max_iter = 100
# retrains = "all"                   # around the retrained networks instead (or retrain ids),
                                     # at saves = "last" (default), "all" or a list; their
                                     # eigenvectors from [[hessian]] with the same retrains

[[interpolation]]
from = "mlp-bs32"
to = "mlp-bs1024"
x = "-0.5:1.5:41"

[[pca]]
model = "mlp-bs32"
x = "-1:1:21"
y = "-1:1:21"

[[retrain]]                          # jump-and-retrain samples of a model (topology)
model = "mlp-bs32"
seeds = "0-3"
steps = [0.25, 0.5]

[[topology]]                         # PHATE embedding + persistence of those retrains
model = "mlp-bs32"
loss = "test"

[[hessian]]                          # Hessian spectra (default: every model of the file)
models = ["mlp-bs32"]
epochs = "all"                       # "final" (default), "all", or a list of epochs
                                     # retrains = "all" (or ids): the retrained networks
                                     # instead, at saves = "last" (default), "all" or a list
top_k = 5                            # 0: no eigenvalues; trace/density add those measures
trace = true                         # trace_method = "auto" | "hutchinson" | "gauss-newton" | "hutchpp"
density = false
per_layer = true
split = "train"                      # subset = N, or minibatches = K with minibatch_size = B
bn = "eval"
seed = 0
tol = 1e-3
max_iter = 100

[[ensemble]]                         # DOODL3: many small models, early and final weights kept
name = "iris"
setup = "doodl3-iris"                # models = 100, epochs = 450 (Figure 3) by default

[[morse]]                            # the Morse graph of that ensemble's early -> final map
ensemble = "iris"                    # a [[ensemble]] name of the file, or an ensemble id
weights = 2                          # K, or names/indices: ["dense_kernel_0_1", 5]
subdiv = 15
```

The whole format lives here: each section is parsed into its method's spec dataclasses
(``tracker.<method>.rows``), checked, and only then written by ``enqueue_study`` in one
transaction. A new method adds its section to ``SECTIONS``, a parser below, a field of
``Study`` and its rows in ``enqueue_study``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import string
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracker._exceptions import NotFound, SpecError
from tracker._queue import check_study_name
from tracker.curvature.rows import HessianRequest, check_request
from tracker.morse.rows import StudyEnsemble, StudyMorse
from tracker.surfaces.rows import (
    PATH_POINTS,
    CurvatureSpec,
    EvalSpec,
    SurfaceSpec,
    check_curvature,
    parse_direction_choice,
    parse_grid,
)
from tracker.topology.rows import (
    LOSSES,
    RetrainRequest,
    TopologyRequest,
    check_retrain_settings,
    parse_seeds,
    parse_steps,
)
from tracker.training.rows import DirectionSpec, ModelSpec

if TYPE_CHECKING:
    from tracker._db import Database

SWEEPABLE = ("lr", "batch_size", "weight_decay", "momentum", "seed", "epochs",
             "label_corruption", "optimizer", "dataset")  # fmt: skip
MODEL_KEYS = {"name", "architecture", "arch", "dataset", "data", "optimizer", "lr", "momentum",
              "weight_decay", "batch_size", "epochs", "seed", "label_corruption", "lr_schedule",
              "checkpoints"}  # fmt: skip
EVAL_KEYS = {"split", "subset", "minibatches", "minibatch_size", "bn", "metrics", "subset_seed",
             "precision", "gpu", "compile", "loss", "bn_batches"}  # fmt: skip
# Goldstein's min/max eigenvalue map on any surface: `--curvature`, `--curvature-tol`,
# `--curvature-max-iter` (the seed is the direction seed, as the CLI's --seed).
CURVATURE_KEYS = {"curvature", "curvature_tol", "curvature_max_iter"}
SURFACE_KEYS = {
    "models",
    "x",
    "y",
    "direction",
    "x_direction",
    "y_direction",
    "pairs",
    "seeds",
    "epochs",
    "tile",
    "same_dir",
    "retrains",
    "saves",
} | EVAL_KEYS | CURVATURE_KEYS
INTERP_KEYS = {"from", "to", "y_model", "x", "y", "epoch", "target", "tile",
               "direction"} | EVAL_KEYS | CURVATURE_KEYS  # fmt: skip
PCA_KEYS = {"model", "x", "y", "points", "ignore", "tile", "epoch"} | EVAL_KEYS | CURVATURE_KEYS
DIRECTION_KEYS = {"seed", "norm", "ignore", "target"}
RETRAIN_KEYS = {"model", "seeds", "steps", "epochs", "lr", "momentum", "weight_decay",
                "batch_size", "saves_per_epoch", "augment", "epoch"}  # fmt: skip
TOPOLOGY_KEYS = {"model", "loss", "knn", "phate_seed", "n_pca", "legacy"}
# [[hessian]]: value types; "models", "epochs", "retrains" and "saves" are read apart.
HESSIAN_TYPES: dict[str, type] = {
    "top_k": int, "trace": bool, "density": bool, "per_layer": bool, "split": str,
    "subset": int, "minibatches": int, "minibatch_size": int, "bn": str, "seed": int,
    "tol": float, "max_iter": int, "probes": int, "density_runs": int, "subset_seed": int,
    "trace_method": str,
}  # fmt: skip
HESSIAN_KEYS = {"models", "epochs", "retrains", "saves"} | set(HESSIAN_TYPES)
ENSEMBLE_KEYS = {"name", "setup", "models", "epochs", "early_epoch", "batch_size", "seed",
                 "data_seed", "chunk"}  # fmt: skip
MORSE_KEYS = {"ensemble", "pick", "weights", "subdiv", "seed", "conley", "force"}
# Every top-level key a study file may have. Level sets have no study-file section yet: their
# [[levelset]] tables would join here, parsed into tracker.levelsets.rows requests and written
# in enqueue_study.
SECTIONS = {"study", "description", "model", "surface", "interpolation", "pca", "retrain",
            "topology", "hessian", "ensemble", "morse"}  # fmt: skip


@dataclass
class Study:
    name: str
    description: str | None = None
    models: list[ModelSpec] = field(default_factory=list)
    surfaces: list[SurfaceSpec] = field(default_factory=list)
    retrains: list[RetrainRequest] = field(default_factory=list)
    topologies: list[TopologyRequest] = field(default_factory=list)
    hessians: list[HessianRequest] = field(default_factory=list)
    ensembles: list[StudyEnsemble] = field(default_factory=list)
    morse: list[StudyMorse] = field(default_factory=list)
    # The table each of ``surfaces`` came from ("[[surface]] number 2"), for messages.
    surface_tables: list[str] = field(default_factory=list)
    # [[surface]] tables with ``retrains``: one surface per (retrain, save), known only once
    # the file's retrains are written: (spec without the centre, retrains, saves, table).
    retrained_surfaces: list[tuple[SurfaceSpec, tuple[int, ...] | str, tuple[int, ...] | str | None, str]] = field(default_factory=list)  # fmt: skip


# Sizes a study file may ask for, checked before anything is built or allocated.
MAX_FILE_BYTES = 1_000_000
MAX_SECTIONS = 1_000
MAX_MODELS = 10_000
MAX_PAIRS = 1_000
MAX_SURFACES = 100_000


def _check_keys(table: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise SpecError(
            f"unknown key {unknown[0]!r} in {where}: known keys are {', '.join(sorted(known))}"
        )


def _typed(value: Any, kind: type, key: str, where: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise SpecError(f"{key} in {where} must be {kind.__name__}, got {value!r}")
    return value


_TYPES = {"lr": float, "momentum": float, "weight_decay": float, "label_corruption": float,
          "batch_size": int, "epochs": int, "seed": int, "optimizer": str, "dataset": str,
          "architecture": str, "name": str}  # fmt: skip


def _models(table: dict[str, Any], index: int) -> list[ModelSpec]:
    where = f"[[model]] number {index + 1}"
    _check_keys(table, MODEL_KEYS, where)
    for key in ("architecture", "dataset"):
        if key not in table:
            raise SpecError(f"{where} has no {key!r}: every model needs an architecture and a dataset")  # fmt: skip
    for key in ("arch", "data"):
        if key in table and not isinstance(table[key], dict):
            raise SpecError(
                f"{key} in {where} must be a table such as {key} = {{ widths = [64] }}, "
                f"got {table[key]!r}"
            )
    swept = [k for k in SWEEPABLE if isinstance(table.get(k), list)]
    for k in swept:
        if not table[k]:
            raise SpecError(f"{k} in {where} is an empty list: give at least one value")
    combos_count = math.prod(len(table[k]) for k in swept)
    if combos_count > MAX_MODELS:
        raise SpecError(
            f"{where} sweeps {combos_count:,} models ({' x '.join(swept)}), more than "
            f"{MAX_MODELS:,}: split the sweep"
        )
    combos = itertools.product(*(table[k] for k in swept)) if swept else [()]
    out: list[ModelSpec] = []
    for combo in combos:
        values = dict(table)
        values.update(zip(swept, combo, strict=True))
        for key, kind in _TYPES.items():
            if key in values:
                values[key] = _typed(values[key], kind, key, where)
        name = values.get("name")
        if name is not None:
            fields = {f for _, f, _, _ in string.Formatter().parse(name) if f}
            missing = fields - set(values)
            if missing:
                raise SpecError(f"name {name!r} in {where} uses {{{sorted(missing)[0]}}}, which is not a key of the model")  # fmt: skip
            if fields:
                name = name.format(**values)
            elif swept:
                name = name + "".join(f"-{k}{v}" for k, v in zip(swept, combo, strict=True))
        checkpoints = values.get("checkpoints", [])
        if not isinstance(checkpoints, list) or not all(isinstance(e, int) for e in checkpoints):
            raise SpecError(f"checkpoints in {where} must be a list of epochs, got {checkpoints!r}")
        schedule = values.get("lr_schedule", {})
        if not isinstance(schedule, dict) or set(schedule) - {"milestones", "gamma"}:
            raise SpecError(f"lr_schedule in {where} must be {{ milestones = [...], gamma = 0.1 }}")
        out.append(
            ModelSpec(
                architecture=values["architecture"], dataset=values["dataset"],
                arch_config=dict(values.get("arch", {})), dataset_config=dict(values.get("data", {})),
                optimizer=values.get("optimizer", "sgd"), lr=values.get("lr", 0.1),
                momentum=values.get("momentum", 0.0), weight_decay=values.get("weight_decay", 0.0),
                batch_size=values.get("batch_size", 128), epochs=values.get("epochs", 10),
                seed=values.get("seed", 0), label_corruption=values.get("label_corruption", 0.0),
                lr_schedule=schedule, checkpoint_epochs=tuple(checkpoints), name=name,
            )
        )  # fmt: skip
    return out


def direction_spec(
    table: dict[str, Any] | None, where: str, default_seed: int = 0
) -> DirectionSpec:
    if table is not None and not isinstance(table, dict):
        raise SpecError(f"the direction of {where} must be a table such as {{ seed = 0 }}, got {table!r}")  # fmt: skip
    table = dict(table or {})
    _check_keys(table, DIRECTION_KEYS, f"the direction of {where}")
    seed = _typed(table.get("seed", default_seed), int, "seed", f"the direction of {where}")
    if not 0 <= seed < 2**32:
        raise SpecError(f"the direction seed of {where} must be in 0..2**32-1, got {seed}")
    words = {}
    for key, default in (("norm", "filter"), ("ignore", "biasbn"), ("target", "weights")):
        words[key] = _typed(table.get(key, default), str, key, f"the direction of {where}")
    return DirectionSpec(
        kind="random", seed=seed, normalization=words["norm"], ignore=words["ignore"],
        target=words["target"],
    )  # fmt: skip


def eval_spec(table: dict[str, Any], where: str) -> EvalSpec:
    metrics = table.get("metrics", ["loss", "acc"])
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise SpecError(f'metrics in {where} must be a list such as ["loss", "acc"], got {metrics!r}')
    for key in ("subset", "minibatches", "minibatch_size", "subset_seed", "bn_batches"):
        if key in table:
            _typed(table[key], int, key, where)
    words = {key: _typed(table.get(key, default), str, key, where)
             for key, default in (("split", "train"), ("bn", "eval"), ("precision", "fp32"),
                                  ("compile", "none"))}  # fmt: skip
    loss = _typed(table["loss"], str, "loss", where).replace("-", "_") if "loss" in table else None
    return EvalSpec(
        split=words["split"], subset=table.get("subset"),
        minibatch_size=table.get("minibatch_size"), minibatches=table.get("minibatches"),
        bn=words["bn"], metrics=tuple(metrics),
        subset_seed=int(table.get("subset_seed", 0)), precision=words["precision"],
        gpu=_typed(table.get("gpu", False), bool, "gpu", where), compile=words["compile"],
        loss=loss, bn_batches=table.get("bn_batches"),
    )  # fmt: skip


def _tile(value: Any, where: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (value[0], value[1])
    raise SpecError(f"tile in {where} must be an integer or [nx, ny], got {value!r}")


def _epochs(value: Any, where: str) -> list[int | None]:
    values = value if isinstance(value, list) else [value]
    out: list[int | None] = []
    for v in values:
        if v == "final" or v is None:
            out.append(None)
        elif isinstance(v, int) and not isinstance(v, bool):
            out.append(v)
        else:
            raise SpecError(f'epochs in {where} must be checkpoint epochs or "final", got {v!r}')
    return out


def _read(path: Path) -> dict[str, Any]:
    """The parsed TOML of a study file; every way a file can be unusable is one line."""
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise SpecError(f"{path} is a folder, not a study file: name a .toml file")
        if size > MAX_FILE_BYTES:
            raise SpecError(
                f"study file {path} is {size:,} bytes, more than {MAX_FILE_BYTES:,}: a study file "
                "describes a sweep, it does not list it (use lists of values)"
            )
        text = path.read_bytes().decode("utf-8")
        return tomllib.loads(text)
    except FileNotFoundError:
        raise NotFound(f"no study file at {path}: check the path") from None
    except UnicodeDecodeError:
        raise SpecError(f"study file {path} is not UTF-8 text: name a .toml study file") from None
    except OSError as err:
        raise SpecError(f"cannot read study file {path} ({err.strerror or err})") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecError(
            f"study file {path} is not valid TOML ({err}): fix the line it names"
        ) from None


def _tables(doc: dict[str, Any], section: str, path: Path | str) -> list[dict[str, Any]]:
    """The ``[[section]]`` tables of the file (a value of another shape is refused)."""
    value = doc.get(section, [])
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise SpecError(
            f"{section} in {path} must be written as [[{section}]] tables, got {type(value).__name__}"
        )
    if len(value) > MAX_SECTIONS:
        raise SpecError(f"{path} has {len(value):,} [[{section}]] tables, more than {MAX_SECTIONS:,}")
    return value


def _one_epoch(value: Any, where: str) -> int | None:
    epochs = _epochs(value, where)
    if len(epochs) != 1:
        raise SpecError(f'epoch in {where} must be one checkpoint epoch or "final", got {value!r}')
    return epochs[0]


def load(path: str | Path) -> Study:
    """Parse and check a study file (nothing is written)."""
    path = Path(path)
    doc = _read(path)
    _check_keys(doc, SECTIONS, str(path))
    name = doc.get("study")
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f'study file {path} has no study name: add study = "NAME" at the top')
    check_study_name(name)
    description = doc.get("description")
    if description is not None and not isinstance(description, str):
        raise SpecError(f"description in {path} must be text, got {description!r}")
    study = Study(name=name, description=description)
    for i, table in enumerate(_tables(doc, "model", path)):
        study.models.extend(_models(table, i))
        if len(study.models) > MAX_MODELS:
            raise SpecError(f"{path} defines more than {MAX_MODELS:,} models: split the sweep")
    names = [m.name for m in study.models if m.name]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(f"model name {dupes[0]!r} is used twice in {path}: names must be unique")
    all_names = [m.name or str(i) for i, m in enumerate(study.models)]

    def model_refs(value: Any, where: str) -> list[str]:
        refs = value if isinstance(value, list) else [value]
        for ref in refs:
            if not isinstance(ref, str | int):
                raise SpecError(f"models in {where} must be names or ids, got {ref!r}")
            if isinstance(ref, str) and not ref.isdigit() and ref not in names:
                raise SpecError(f"{where} names model {ref!r}, which the file does not define (models: {', '.join(names) or 'none'})")  # fmt: skip
        return [str(r) for r in refs]

    def one_ref(value: Any, where: str) -> str:
        refs = model_refs(value, where)
        if len(refs) != 1:
            raise SpecError(f"{where} names {len(refs)} models where it needs one: give a name or id")
        return refs[0]

    for i, table in enumerate(_tables(doc, "surface", path)):
        where = f"[[surface]] number {i + 1}"
        _check_keys(table, SURFACE_KEYS, where)
        if "x" not in table:
            raise SpecError(f'{where} has no x grid: add x = "-1:1:21"')
        x = parse_grid(table["x"], "x grid")
        y = parse_grid(table["y"], "y grid") if "y" in table else None
        base = direction_spec(table.get("direction"), where)
        x_hessian, y_hessian = _direction_choices(table, where, two_d=y is not None)
        pairs = _typed(table.get("pairs", 1), int, "pairs", where)
        if not 1 <= pairs <= MAX_PAIRS:
            raise SpecError(f"pairs in {where} must be between 1 and {MAX_PAIRS}, got {pairs}")
        x_seeds = _surface_seeds(table, where, two_d=y is not None)
        if x_seeds is not None:
            pairs = len(x_seeds)
        ev = eval_spec(table, where)
        same_dir = _typed(table.get("same_dir", False), bool, "same_dir", where)
        if same_dir and "y_direction" in table:
            raise SpecError(f"{where} has same_dir = true and a y_direction: keep one of them")
        if x_hessian is not None and pairs > 1 and (y is None or y_hessian is not None or same_dir):
            key = "seeds" if x_seeds is not None else "pairs"
            raise SpecError(f'{where}: {key} draw random x directions, but x_direction = "hessian:{x_hessian}" is one eigenvector and no random y direction varies: every surface would be the same; drop {key}')  # fmt: skip
        curvature = _curvature(table, where)
        refs = model_refs(table["models"], where) if "models" in table else all_names
        retrains = _point_list(table.get("retrains"), "retrains", ("all",), where)
        saves = _point_list(table.get("saves"), "saves", ("last", "all"), where)
        if retrains is None and saves is not None:
            raise SpecError(f'{where}: saves picks saves of retrains\' trajectories: add retrains = "all" (or retrain ids)')  # fmt: skip
        if retrains is not None:
            if "epochs" in table:
                raise SpecError(f"{where}: epochs picks checkpoints and retrains retrained networks: give one of them")  # fmt: skip
            if x_hessian is None or (y is not None and y_hessian is None and not same_dir):
                raise SpecError(f'{where}: a surface around retrained networks runs along their Hessian eigenvectors: set x_direction = "hessian:I" (and y_direction = "hessian:J" for a 2D one)')  # fmt: skip
            for ref in refs:
                study.retrained_surfaces.append((SurfaceSpec(
                    model=ref, x=x, y=y, same_dir=same_dir, evaluation=ev,
                    tile=_tile(table.get("tile"), where), x_hessian=x_hessian,
                    y_hessian=y_hessian, curvature=curvature,
                ), retrains, None if saves == "last" else saves, where))  # fmt: skip
            continue
        epochs = _epochs(table.get("epochs", "final"), where)
        # Checked before a single spec is built: pairs x models x epochs surfaces.
        count = len(study.surfaces) + pairs * len(refs) * len(epochs)
        if count > MAX_SURFACES:
            raise SpecError(
                f"{where} makes {pairs * len(refs) * len(epochs):,} surfaces (pairs x models x "
                f"epochs); a study file may make at most {MAX_SURFACES:,}"
            )
        for ref in refs:
            for epoch in epochs:
                for p in range(pairs):
                    step = 2 if y is not None else 1
                    x_seed = x_seeds[p] if x_seeds is not None else (base.seed or 0) + step * p
                    xd = replace(base, seed=x_seed)
                    yd = None
                    if y is not None and not same_dir and y_hessian is None:
                        # The y direction: its own table if given, else the x one's with seed + 1.
                        own = isinstance(table.get("y_direction"), dict)
                        yd = direction_spec(table.get("y_direction" if own else "direction"), where)
                        first = (yd.seed or 0) if own else (base.seed or 0) + 1
                        yd = replace(yd, seed=x_seed + 1 if x_seeds is not None else first + step * p)
                    study.surfaces.append(SurfaceSpec(
                        model=ref, x=x, y=y, epoch=epoch, x_direction=xd, y_direction=yd,
                        same_dir=same_dir, evaluation=ev, tile=_tile(table.get("tile"), where),
                        x_hessian=x_hessian, y_hessian=y_hessian, curvature=curvature,
                    ))  # fmt: skip
                    study.surface_tables.append(where)
    for i, table in enumerate(_tables(doc, "interpolation", path)):
        where = f"[[interpolation]] number {i + 1}"
        _check_keys(table, INTERP_KEYS, where)
        for key in ("from", "to", "x"):
            if key not in table:
                raise SpecError(f"{where} has no {key!r}: an interpolation needs from, to and x")
        a = one_ref(table["from"], where)
        b = one_ref(table["to"], where)
        target = str(table.get("target", "states"))
        study.surfaces.append(SurfaceSpec(
            model=a, other_model=b, x=parse_grid(table["x"], "x grid"),
            y=parse_grid(table["y"], "y grid") if "y" in table else None,
            epoch=_one_epoch(table.get("epoch", "final"), where),
            x_direction=DirectionSpec(kind="interpolation", seed=None, normalization="none",
                                      ignore="none", target=target),
            y_direction=direction_spec(table.get("direction"), where, 1) if "y" in table else None,
            y_model=one_ref(table["y_model"], where) if "y_model" in table else None,
            evaluation=eval_spec(table, where), tile=_tile(table.get("tile"), where),
            curvature=_curvature(table, where),
        ))  # fmt: skip
        study.surface_tables.append(where)
    for i, table in enumerate(_tables(doc, "pca", path)):
        where = f"[[pca]] number {i + 1}"
        _check_keys(table, PCA_KEYS, where)
        if "model" not in table:
            raise SpecError(f"{where} has no 'model': a PCA surface needs the model")
        around = "x" not in table and "y" not in table  # a grid around the projected path
        if not around and ("x" not in table or "y" not in table):
            raise SpecError(f"{where} gives one of x and y: give both, or neither for a grid around the path")  # fmt: skip
        if around:
            n = _typed(table.get("points", PATH_POINTS), int, "points", where)
            x = y = parse_grid(f"-1:1:{n}", "points")
        elif "points" in table:
            raise SpecError(f"{where}: points is for a grid around the path; with x and y, drop it")
        else:
            x, y = parse_grid(table["x"], "x grid"), parse_grid(table["y"], "y grid")
        ref = one_ref(table["model"], where)
        study.surfaces.append(SurfaceSpec(
            model=ref, x=x, y=y, path_range=around,
            epoch=_one_epoch(table.get("epoch", "final"), where),
            x_direction=DirectionSpec(kind="pca", seed=None, normalization="none",
                                      ignore=str(table.get("ignore", "biasbn")), target="weights"),
            evaluation=eval_spec(table, where), tile=_tile(table.get("tile"), where),
            curvature=_curvature(table, where),
        ))  # fmt: skip
        study.surface_tables.append(where)
    study.retrains, study.topologies = topology_sections(doc, names)
    for i, table in enumerate(_tables(doc, "hessian", path)):
        where = f"[[hessian]] number {i + 1}"
        _check_keys(table, HESSIAN_KEYS, where)
        refs = model_refs(table["models"], where) if "models" in table else all_names
        study.hessians.extend(hessian_requests(table, refs, where))
    study.ensembles, study.morse = morse_sections(doc)
    return study


def _direction_choices(
    table: dict[str, Any], where: str, *, two_d: bool
) -> tuple[int | None, int | None]:
    """``x_direction`` and ``y_direction`` of a [[surface]] as eigen indices (None: random), with
    the checks of `--x-direction`/`--y-direction`; a y_direction table is a random direction."""
    x_text = table.get("x_direction")
    if x_text is not None and not isinstance(x_text, str):
        raise SpecError(f'x_direction in {where} must be "random" or "hessian:I" (e.g. "hessian:0"), got {x_text!r}')  # fmt: skip
    x_hessian = parse_direction_choice(x_text, f"{where}: x_direction")
    y_value = table.get("y_direction")
    if y_value is not None and not isinstance(y_value, str | dict):
        raise SpecError(f'y_direction in {where} must be "random", "hessian:I" or a table such as {{ seed = 1 }}, got {y_value!r}')  # fmt: skip
    y_hessian = None
    if isinstance(y_value, str):
        y_hessian = parse_direction_choice(y_value, f"{where}: y_direction")
    if y_hessian is not None and not two_d:
        raise SpecError(f'{where}: y_direction needs a 2D surface: add y = "-1:1:21" too')
    if y_hessian is not None and x_hessian is None:
        raise SpecError(f'{where}: a Hessian y direction needs a Hessian x direction: add x_direction = "hessian:0"')  # fmt: skip
    return x_hessian, y_hessian


def _curvature(table: dict[str, Any], where: str) -> CurvatureSpec | None:
    """``curvature = true`` (with ``curvature_tol``, ``curvature_max_iter``): Goldstein's
    lambda_min/lambda_max map, checked as `--curvature`; seeded, as the CLI's --seed, with the
    direction table's seed (0 when none is given)."""
    on = _typed(table.get("curvature", False), bool, "curvature", where)
    given = [k for k in ("curvature_tol", "curvature_max_iter") if k in table]
    if not on:
        if given:
            raise SpecError(f"{given[0]} in {where} sets up the curvature map: add curvature = true")
        return None
    direction = table.get("direction")
    seed = direction.get("seed", 0) if isinstance(direction, dict) else 0
    spec = CurvatureSpec(
        tol=_typed(table.get("curvature_tol", 1e-3), float, "curvature_tol", where),
        max_iter=_typed(table.get("curvature_max_iter", 100), int, "curvature_max_iter", where),
        seed=_typed(seed, int, "seed", f"the direction of {where}"),
    )  # fmt: skip
    try:
        check_curvature(spec)
    except SpecError as err:
        raise SpecError(f"{where}: {_study_words(str(err))}") from None
    return spec


def _study_words(message: str) -> str:
    """A CLI message in study-file words: ``--curvature-tol`` is the key ``curvature_tol``."""
    from tracker.morse.rows import as_study_keys

    return as_study_keys(message)


def _hessian_epochs(value: Any, where: str) -> tuple[int, ...] | str | None:
    if value == "all":
        return "all"
    epochs = _epochs(value, where)
    if None in epochs:
        if len(epochs) > 1:
            raise SpecError(f'epochs in {where} mixes "final" with epochs: list epochs, or "all"')
        return None
    return tuple(sorted({int(e) for e in epochs if e is not None}))


def _point_list(value: Any, key: str, words: tuple[str, ...], where: str) -> tuple[int, ...] | str | None:  # fmt: skip
    """A [[hessian]] table's ``retrains`` or ``saves``: one of ``words`` or a list of ids."""
    if value is None or value in words:
        return value
    if (isinstance(value, list) and value
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)):  # fmt: skip
        return tuple(sorted(set(value)))
    choices = " or ".join(f'"{w}"' for w in words)
    raise SpecError(f"{key} in {where} must be {choices} or a list of ids, got {value!r}")


def hessian_requests(table: dict[str, Any], refs: Sequence[str], where: str) -> list[HessianRequest]:
    """One checked request per model of a [[hessian]] table (nothing is written)."""
    values = {key: _typed(table[key], kind, key, where)
              for key, kind in HESSIAN_TYPES.items() if key in table}  # fmt: skip
    epochs = _hessian_epochs(table.get("epochs", "final"), where)
    retrains = _point_list(table.get("retrains"), "retrains", ("all",), where)
    saves = _point_list(table.get("saves"), "saves", ("last", "all"), where)
    if "epochs" in table and retrains is not None:
        raise SpecError(f"{where}: epochs picks checkpoints and retrains retrained networks: give one of them")  # fmt: skip
    out = []
    for ref in refs:
        req = HessianRequest(model=ref, epochs=None if retrains is not None else epochs,
                             retrains=retrains, saves=None if saves == "last" else saves,
                             **values)  # fmt: skip
        try:
            check_request(req)
        except SpecError as err:
            raise SpecError(f"{where}: {err}") from None
        if req.per_layer and not req.trace:
            raise SpecError(f"{where}: per_layer splits the trace by layer: add trace = true")
        out.append(req)
    return out


# --- topology sections ------------------------------------------------------------------------


def _number(table: dict[str, Any], key: str, kind: type, where: str, default: Any) -> Any:
    value = table.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise SpecError(f"{key} in {where} must be {kind.__name__}, got {value!r}")
    return value


def _model_ref(table: dict[str, Any], where: str, names: Sequence[str]) -> str:
    ref = table.get("model")
    if ref is None:
        raise SpecError(f'{where} has no model: add model = "NAME" (a model of the file) or an id')
    if isinstance(ref, int) and not isinstance(ref, bool):
        return str(ref)
    if not isinstance(ref, str) or (not ref.isdigit() and ref not in names):
        raise SpecError(f"{where} names model {ref!r}, which the file does not define (models: {', '.join(names) or 'none'})")  # fmt: skip
    return ref


def topology_sections(
    doc: dict[str, Any], names: Sequence[str]
) -> tuple[list[RetrainRequest], list[TopologyRequest]]:
    """The [[retrain]] and [[topology]] tables of a study file, checked (nothing is written)."""
    retrains: list[RetrainRequest] = []
    for i, table in enumerate(_tables(doc, "retrain", "the study file")):
        where = f"[[retrain]] number {i + 1}"
        _check_keys(table, RETRAIN_KEYS, where)
        seeds = table.get("seeds", "0-3")
        if isinstance(seeds, list):
            seeds = ",".join(str(s) for s in seeds)
        steps = table.get("steps", [0.25, 0.5, 0.75, 1.0])
        if isinstance(steps, list):
            steps = ",".join(str(s) for s in steps)
        epoch = table.get("epoch")
        retrains.append(RetrainRequest(
            model=_model_ref(table, where, names), seeds=parse_seeds(str(seeds)),
            steps=parse_steps(str(steps)), epochs=_number(table, "epochs", int, where, 40),
            lr=_number(table, "lr", float, where, 0.001),
            momentum=_number(table, "momentum", float, where, 0.9),
            weight_decay=_number(table, "weight_decay", float, where, 1e-4),
            batch_size=_number(table, "batch_size", int, where, 128),
            saves_per_epoch=_number(table, "saves_per_epoch", int, where, 1),
            augment=_number(table, "augment", bool, where, False),
            epoch=None if epoch is None else _number(table, "epoch", int, where, None),
        ))  # fmt: skip
        req = retrains[-1]
        for seed in req.seeds:
            for step in req.steps:
                try:
                    check_retrain_settings(seed=seed, step_size=step, epochs=req.epochs,
                                           lr=req.lr, momentum=req.momentum,
                                           weight_decay=req.weight_decay,
                                           batch_size=req.batch_size,
                                           saves_per_epoch=req.saves_per_epoch)  # fmt: skip
                except SpecError as err:
                    raise SpecError(f"{where}: {err}") from None
    topologies: list[TopologyRequest] = []
    for i, table in enumerate(_tables(doc, "topology", "the study file")):
        where = f"[[topology]] number {i + 1}"
        _check_keys(table, TOPOLOGY_KEYS, where)
        loss = _number(table, "loss", str, where, "test")
        if loss not in LOSSES:
            raise SpecError(f"unknown loss {loss!r} in {where}: use one of {', '.join(LOSSES)}")
        topologies.append(TopologyRequest(
            model=_model_ref(table, where, names), loss=loss,
            knn=_number(table, "knn", int, where, 20),
            phate_seed=_number(table, "phate_seed", int, where, 0),
            n_pca=_number(table, "n_pca", int, where, 100),
            legacy=_number(table, "legacy", bool, where, False),
        ))  # fmt: skip
    return retrains, topologies


# --- Morse sections ---------------------------------------------------------------------------


def _ensemble(table: dict[str, Any], where: str) -> StudyEnsemble:
    """One [[ensemble]] table: the keys and defaults of `tracker enqueue ensemble`."""
    from compute.doodl3_params import DEFAULTS
    from tracker.morse.rows import EnsembleSpec, as_study_keys, check_ensemble, check_setup

    _check_keys(table, ENSEMBLE_KEYS, where)
    if "setup" not in table:
        raise SpecError(f'{where} has no setup: add setup = "doodl3-iris" (or doodl3-iris-layers-2, doodl3-mnist)')  # fmt: skip
    setup = _number(table, "setup", str, where, None)
    name = table.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise SpecError(f"name in {where} must be non-empty text, got {name!r}")
    try:
        check_setup(setup)
        defaults = DEFAULTS[setup]
        spec = EnsembleSpec(
            setup=setup, n_models=_number(table, "models", int, where, 100),
            epochs=_number(table, "epochs", int, where, defaults["epochs"]),
            early_epoch=_number(table, "early_epoch", int, where, 2),
            batch_size=_number(table, "batch_size", int, where, defaults["batch_size"]),
            seed=_number(table, "seed", int, where, 0),
            data_seed=_number(table, "data_seed", int, where, 0),
            chunk_size=_number(table, "chunk", int, where, 50),
        )  # fmt: skip
        check_ensemble(spec)
    except SpecError as err:
        text = str(err)
        raise SpecError(text if where in text else f"{where}: {as_study_keys(text)}") from None
    return StudyEnsemble(name=name, spec=spec)


def _weights(value: Any, where: str) -> tuple[int, tuple[str, ...]]:
    """``weights``: a count K, or parameters by name or index (a list or "a,b" text)."""
    from tracker.morse.rows import parse_weights

    if isinstance(value, list) and all(
        isinstance(v, str | int) and not isinstance(v, bool) for v in value
    ):
        value = ",".join(str(v) for v in value)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise SpecError(f'weights in {where} must be a count such as 2 or a list such as ["dense_kernel_0_1", 5], got {value!r}')  # fmt: skip
    return parse_weights(str(value))


def _morse(table: dict[str, Any], where: str, ensembles: Sequence[StudyEnsemble]) -> StudyMorse:
    """One [[morse]] table: the keys and defaults of `tracker enqueue morse`, on an ensemble of
    the file (by name; the file's only one when left out) or an existing one (by id)."""
    from tracker.morse.rows import MorseSpec, as_study_keys, check_morse, check_weights

    _check_keys(table, MORSE_KEYS, where)
    names = [e.name for e in ensembles if e.name is not None]
    ref = table.get("ensemble")
    if ref is None:
        if len(ensembles) != 1:
            raise SpecError(f'{where} has no ensemble: add ensemble = "NAME" (an [[ensemble]] of the file) or an ensemble id')  # fmt: skip
        ref = ensembles[0].name or ""  # the file's only ensemble ("": it has no name)
    elif isinstance(ref, bool) or not isinstance(ref, str | int) or str(ref) == "":
        raise SpecError(f"ensemble in {where} must be an [[ensemble]] name or an id, got {ref!r}")
    elif str(ref) not in names and not str(ref).isdigit():
        raise SpecError(f"{where} names ensemble {ref!r}, which the file does not define (ensembles: {', '.join(names) or 'none'})")  # fmt: skip
    ref = str(ref)
    force = _number(table, "force", bool, where, False)
    try:
        k, columns = _weights(table.get("weights", 2), where)
        spec = MorseSpec(
            ensemble_id=0, pick=_number(table, "pick", str, where, "max-variance"),
            subdiv=_number(table, "subdiv", int, where, 15),
            seed=_number(table, "seed", int, where, 0),
            conley=_number(table, "conley", bool, where, True), weights=k, columns=columns,
        )  # fmt: skip
        check_morse(spec, force=force)
        own = [e for e in ensembles if (e.name or "") == ref]
        if own:  # an ensemble of the file: its parameters are known before anything is written
            from compute.doodl3_params import kernel_columns, param_names

            setup = own[0].spec.setup
            check_weights(f"ensemble {ref!r} ({setup})", param_names(setup),
                          len(kernel_columns(setup)), spec)  # fmt: skip
    except SpecError as err:
        text = str(err)
        raise SpecError(text if where in text else f"{where}: {as_study_keys(text)}") from None
    return StudyMorse(ensemble=ref, spec=spec, force=force)


def morse_sections(doc: dict[str, Any]) -> tuple[list[StudyEnsemble], list[StudyMorse]]:
    """The [[ensemble]] and [[morse]] tables of a study file, checked (nothing is written)."""
    ensembles = [
        _ensemble(table, f"[[ensemble]] number {i + 1}")
        for i, table in enumerate(_tables(doc, "ensemble", "the study file"))
    ]
    named = [e.name for e in ensembles if e.name is not None]
    dupes = sorted({n for n in named if named.count(n) > 1})
    if dupes:
        raise SpecError(f"ensemble name {dupes[0]!r} is used twice in the study file: names must be unique")  # fmt: skip
    graphs = [
        _morse(table, f"[[morse]] number {i + 1}", ensembles)
        for i, table in enumerate(_tables(doc, "morse", "the study file"))
    ]
    return ensembles, graphs


# --- writing the rows -------------------------------------------------------------------------


def demo_study() -> str:
    """The text of the demo study (`tracker demo`), shipped as tracker/studies/demo.toml."""
    return resources.files("tracker").joinpath("studies/demo.toml").read_text()


def enqueue_study(db: Database, path: str | Path, store_url: str | None = None) -> dict[str, Any]:
    """Validate a study file and write all its rows in one transaction. ``store_url``: the
    store of models trained before, whose loss a [[hessian]] table checks (default: the
    resolved settings' store, TRACKER_STORE or TRACKER_HOME/store.zarr)."""
    from tracker._config import resolve
    from tracker._queue import get_or_create_study
    from tracker.curvature.rows import add_hessian, check_losses, retrain_points
    from tracker.morse.rows import add_study_morse
    from tracker.surfaces.rows import add_surface
    from tracker.topology.rows import add_study_topology
    from tracker.training.rows import add_model, check_model, find_model

    plan = load(path)
    models = [check_model(m) for m in plan.models]
    counts: dict[str, Any] = {"models": 0, "models_new": 0, "surfaces": 0, "surfaces_new": 0}
    with db.session() as session:
        study = get_or_create_study(session, plan.name, plan.description)
        names: dict[str, Any] = {}
        for i, spec in enumerate(models):
            model, new = add_model(session, study, spec)
            names[spec.name or str(i)] = model
            counts["models"] += 1
            counts["models_new"] += new
        # Spectra before surfaces: a surface along eigenvectors finds the direction rows a
        # [[hessian]] table of the file adds, and its tiles wait for that spectrum's task.
        counts["hessians"] = counts["hessians_new"] = 0

        def hessians(retrained: bool) -> None:
            for req in plan.hessians:
                if (req.retrains is not None) != retrained:
                    continue
                rows = add_hessian(session, study, req, names)
                check_losses(session, store_url or resolve().store_url, rows)
                for _, new in rows:
                    counts["hessians"] += 1
                    counts["hessians_new"] += new

        hessians(retrained=False)
        for surface, where in zip(plan.surfaces, plan.surface_tables, strict=True):
            if surface.x_hessian is not None:
                _check_eigenvectors(session, study, surface, names, where)
            _, new = add_surface(session, study, surface, names)
            counts["surfaces"] += 1
            counts["surfaces_new"] += new
        if plan.retrains or plan.topologies:
            counts.update(
                add_study_topology(session, study, plan.retrains, plan.topologies, names)
            )
        hessians(retrained=True)  # after the file's retrains: "all" includes them
        for template, retrains, saves, where in plan.retrained_surfaces:  # after those spectra
            model = find_model(session, template.model, names)
            try:
                points = retrain_points(session, model, retrains, saves)
            except SpecError as err:
                raise SpecError(f"{where}: {err}") from None
            if counts["surfaces"] + len(points) > MAX_SURFACES:
                raise SpecError(f"{where} makes {len(points):,} surfaces (retrains x saves); a "
                                f"study file may make at most {MAX_SURFACES:,} in all")  # fmt: skip
            for retrain, save in points:
                surface = replace(template, retrain=retrain.id, save=save)
                _check_eigenvectors(session, study, surface, names, where)
                _, new = add_surface(session, study, surface, names)
                counts["surfaces"] += 1
                counts["surfaces_new"] += new
        if plan.ensembles or plan.morse:
            counts.update(add_study_morse(session, study, plan.ensembles, plan.morse))
        counts["study_id"] = study.id
    counts["study"] = plan.name
    return counts


def _check_eigenvectors(
    session: Any, study: Any, spec: SurfaceSpec, names: dict[str, Any], where: str
) -> None:
    """A surface along eigenvectors needs their direction rows, from a [[hessian]] table of the
    file or an earlier `tracker enqueue hessian`: refused in study-file words otherwise."""
    from tracker._schema import Checkpoint, Retrain
    from tracker.curvature.rows import hessian_command
    from tracker.surfaces.rows import hessian_direction
    from tracker.training.rows import find_checkpoint, find_model

    model = find_model(session, spec.model, names)
    point = None
    if spec.retrain is not None and spec.save is not None:  # retrain_points checked both
        point = (Retrain.find_or_raise_by_id(session, spec.retrain), spec.save)
        centre = Checkpoint.find_or_raise_by_id(session, point[0].checkpoint_id)
    else:
        centre = find_checkpoint(session, model, spec.epoch)
    indices = [i for i in (spec.x_hessian, spec.y_hessian) if i is not None]
    found = None
    for index in indices:
        try:
            found = hessian_direction(session, study, model, centre, index, found, point=point)
        except SpecError:
            ref = str(spec.model)
            label = ref if ref.isdigit() else f'"{ref}"'
            k = max(indices) + 1
            same = " in the spectrum of its x direction" if found else ""
            if point is not None:
                rid, save = point[0].id, point[1]
                raise SpecError(
                    f"{where}: model {label} has no Hessian eigenvector {index} at save {save} "
                    f"of retrain {rid}{same}: add a [[hessian]] table with models = [{label}], "
                    f'retrains = "all", saves covering {save} and top_k = {k}, or make it first '
                    f"with `tracker enqueue hessian --model {model.id} --retrains {rid} "
                    f"--saves {save} --top-k {k}`"
                ) from None
            raise SpecError(
                f"{where}: model {label} has no Hessian eigenvector {index} at epoch "
                f"{centre.epoch}{same}: add a "
                f"[[hessian]] table with models = [{label}], top_k = {k} and epochs covering "
                f"{centre.epoch}, or make it first with "
                f"`{hessian_command(model.id, centre.epoch, k - 1)}`"
            ) from None


def cmd_enqueue_study(args: argparse.Namespace) -> int:
    """`tracker enqueue study FILE.toml` (also `tracker enqueue FILE.toml`)."""
    from tracker._cliutil import open_db, settings

    db = open_db(args)
    c = enqueue_study(db, args.file, settings(args).store_url)
    print(
        f"study {c['study']!r}: {c['models']} model(s) ({c['models_new']} new), "
        f"{c['surfaces']} surface(s) ({c['surfaces_new']} new)"
        + (f", {c['hessians']} Hessian measure(s) ({c['hessians_new']} new)" if c["hessians"] else "")
        + "; run `tracker work`"
    )
    if "ensembles" in c:
        print(f"  {c['ensembles']} ensemble(s) ({c['ensembles_new']} new), "
              f"{c['morse']} Morse graph(s) ({c['morse_new']} new)")  # fmt: skip
    return 0


def _surface_seeds(table: dict[str, Any], where: str, *, two_d: bool) -> tuple[int, ...] | None:
    """``seeds = "0-4"`` (or a list): the x-direction seeds, one surface each; None if absent."""
    if "seeds" not in table:
        return None
    for other in ("pairs", "y_direction"):
        if other in table:
            raise SpecError(f"{where} has both seeds and {other}: seeds gives every surface its own x and y directions, drop {other}")  # fmt: skip
    if isinstance(table.get("direction"), dict) and "seed" in table["direction"]:
        raise SpecError(f"{where} has both seeds and a direction seed: drop seed from the direction")
    raw = table["seeds"]
    seeds = parse_seeds(",".join(str(s) for s in raw) if isinstance(raw, list) else str(raw))
    if len(seeds) > MAX_PAIRS:
        raise SpecError(f"seeds in {where} name {len(seeds):,} seeds; at most {MAX_PAIRS:,}")
    if two_d and set(seeds) & {s + 1 for s in seeds}:
        raise SpecError(f"seeds in {where}: a 2D surface's y direction uses seed+1, so the seeds must be two apart (e.g. 0,2,4,6,8)")  # fmt: skip
    return seeds
