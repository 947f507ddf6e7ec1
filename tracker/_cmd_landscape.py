"""Commands for loss-surface work: enqueue, train, plot, export, import, demo."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from tracker._exceptions import SpecError

# --- argument helpers -------------------------------------------------------------------------


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SpecError(f"{what} {text!r} is not a comma-separated list of integers") from None


def _tile(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise SpecError(f"--tile {text!r} is not NX or NXxNY (e.g. 16x16)") from None
    return (values[0], values[-1]) if len(values) in (1, 2) else None


def model_spec_from_args(args: argparse.Namespace) -> Any:
    from tracker._landscape import ModelSpec

    try:
        arch_config = json.loads(args.arch_config)
    except json.JSONDecodeError as err:
        raise SpecError(f"--arch-config is not valid JSON ({err})") from None
    if not isinstance(arch_config, dict):
        raise SpecError("--arch-config must be a JSON object")
    if args.widths:
        arch_config["widths"] = _ints(args.widths, "--widths")
    if args.activation:
        arch_config["activation"] = args.activation
    data_cfg: dict[str, Any] = {"seed": args.data_seed}
    if args.data_root:
        data_cfg["root"] = str(Path(args.data_root).absolute())
    if args.augment:
        data_cfg["augment"] = True
    schedule = {}
    if args.lr_milestones:
        schedule = {
            "milestones": _ints(args.lr_milestones, "--lr-milestones"),
            "gamma": args.lr_gamma,
        }
    return ModelSpec(
        architecture=args.arch, dataset=args.dataset, arch_config=arch_config,
        dataset_config=data_cfg, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, batch_size=args.batch_size, epochs=args.epochs,
        seed=args.seed, label_corruption=args.label_corruption, lr_schedule=schedule,
        checkpoint_epochs=tuple(_ints(args.checkpoints, "--checkpoints")), name=args.name,
    )  # fmt: skip


def _open(args: argparse.Namespace) -> Any:
    from tracker._cliutil import open_db

    return open_db(args)


def _settings(args: argparse.Namespace) -> Any:
    from tracker._cliutil import settings

    return settings(args)


# --- enqueue ----------------------------------------------------------------------------------


def cmd_enqueue_model(args: argparse.Namespace) -> int:
    from tracker._landscape import add_model, check_model
    from tracker._queue import get_or_create_study

    spec = check_model(model_spec_from_args(args))
    db = _open(args)
    with db.session() as session:
        study = get_or_create_study(session, args.study)
        model, new = add_model(session, study, spec)
        mid = model.id
    print(f"model {mid} ({'new' if new else 'already queued'}) in study {args.study!r}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Enqueue one model and train it here, in the foreground."""
    from tracker._landscape import add_model, check_model
    from tracker._queue import get_or_create_study
    from tracker._schema import Model, Task
    from tracker._worker import WorkerConfig, run_worker

    spec = check_model(model_spec_from_args(args))
    settings = _settings(args)
    db = _open(args)
    with db.session() as session:
        study = get_or_create_study(session, args.study)
        model, _ = add_model(session, study, spec)
        mid, sid, tid = model.id, study.id, model.task_id
    with db.session() as session:
        status = session.get(Task, tid).status
    if status != "done":
        print(f"training model {mid} ({spec.architecture} on {spec.dataset}, {spec.epochs} epochs)")
        run_worker(WorkerConfig(db_url=settings.db_url, store_url=settings.store_url,
                                mlflow_uri=settings.mlflow_uri, kinds=("train",),
                                study_ids=(sid,)))  # fmt: skip
    with db.session() as session:
        model = session.get(Model, mid)
        task = session.get(Task, tid)
        if task.status != "done":
            raise SpecError(f"training model {mid} did not finish ({task.status}): `tracker show task {tid}` has the error")  # fmt: skip
        print(
            f"model {mid}: train loss {model.train_loss:.4f} acc {model.train_acc:.4f}, "
            f"test loss {model.test_loss:.4f} acc {model.test_acc:.4f}; MLflow run {model.mlflow_run_id}"
        )
    return 0


def _direction_from_args(args: argparse.Namespace, seed: int) -> Any:
    from tracker._landscape import DirectionSpec

    return DirectionSpec(kind="random", seed=seed, normalization=args.norm, ignore=args.ignore,
                         target=args.target or "weights")  # fmt: skip


def cmd_enqueue_surface(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tracker._landscape import (
        DirectionSpec,
        EvalSpec,
        SurfaceSpec,
        add_surface,
        find_model,
        parse_grid,
        surface_tasks,
    )
    from tracker._queue import get_or_create_study
    from tracker._schema import Study

    x = parse_grid(args.x, "--x grid")
    y = parse_grid(args.y, "--y grid") if args.y else None
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    ev = EvalSpec(split=args.split, subset=args.subset, minibatch_size=args.minibatch_size,
                  minibatches=args.minibatches, bn=args.bn, metrics=metrics,
                  precision=args.precision)  # fmt: skip
    if args.interpolate:
        a, b = args.interpolate
        spec = SurfaceSpec(model=a, other_model=b, x=x, y=y, epoch=args.epoch,
                           x_direction=DirectionSpec(kind="interpolation", seed=None,
                                                     normalization="none", ignore="none",
                                                     target=args.target or "states"),
                           y_direction=_direction_from_args(args, args.seed) if y else None,
                           evaluation=ev, tile=_tile(args.tile))  # fmt: skip
    elif args.model is None:
        raise SpecError("give --model ID (or --interpolate A B)")
    elif args.pca:
        spec = SurfaceSpec(model=args.model, x=x, y=y, epoch=args.epoch,
                           x_direction=DirectionSpec(kind="pca", seed=None, normalization="none",
                                                     ignore=args.ignore, target="weights"),
                           evaluation=ev, tile=_tile(args.tile))  # fmt: skip
    else:
        xd = _direction_from_args(args, args.seed)
        yd = (
            replace(xd, seed=args.y_seed if args.y_seed is not None else args.seed + 1)
            if y
            else None
        )
        spec = SurfaceSpec(model=args.model, x=x, y=y, epoch=args.epoch, x_direction=xd,
                           y_direction=yd, evaluation=ev, tile=_tile(args.tile))  # fmt: skip
    db = _open(args)
    with db.session() as session:
        model = find_model(session, spec.model)
        study = (
            get_or_create_study(session, args.study) if args.study
            else session.get(Study, model.study_id)
        )  # fmt: skip
        surface, new = add_surface(session, study, spec)
        sid, tiles = surface.id, len(surface_tasks(session, surface))
    state = f"new, {tiles} tile task(s)" if new else "already queued"
    print(f"surface {sid} ({state}) in study {study.name!r}; run `tracker work` to compute it")
    return 0


def enqueue_study(db: Any, path: str | Path) -> dict[str, Any]:
    """Validate a study file and write all its rows in one transaction."""
    from tracker import _studyfile
    from tracker._landscape import add_model, add_surface, check_model
    from tracker._queue import get_or_create_study

    plan = _studyfile.load(path)
    models = [check_model(m) for m in plan.models]
    counts = {"models": 0, "models_new": 0, "surfaces": 0, "surfaces_new": 0}
    with db.session() as session:
        study = get_or_create_study(session, plan.name, plan.description)
        names: dict[str, Any] = {}
        for i, spec in enumerate(models):
            model, new = add_model(session, study, spec)
            names[spec.name or str(i)] = model
            counts["models"] += 1
            counts["models_new"] += new
        for spec in plan.surfaces:
            _, new = add_surface(session, study, spec, names)
            counts["surfaces"] += 1
            counts["surfaces_new"] += new
        if plan.retrains or plan.topologies:
            from tracker._topology import add_study_topology

            counts.update(add_study_topology(session, study, plan, names))
        counts["study_id"] = study.id
    counts["study"] = plan.name
    return counts


def cmd_enqueue_study(args: argparse.Namespace) -> int:
    db = _open(args)
    c = enqueue_study(db, args.file)
    print(
        f"study {c['study']!r}: {c['models']} model(s) ({c['models_new']} new), "
        f"{c['surfaces']} surface(s) ({c['surfaces_new']} new); run `tracker work`"
    )
    return 0


# --- plots and exports ------------------------------------------------------------------------


def plot_surface_files(
    data: Any, out_dir: Path, kinds: list[str], centre_relative: bool = False
) -> list[Path]:
    from tracker import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"surface-{data.surface.id}"
    paths: list[Path] = []
    title = data.label
    if not data.is_2d:
        acc = data.acc[:, 0, :] if "acc" in (data.surface.metrics or []) else None
        paths += plots.plot_1d(str(stem) + "-1d", data.xs, data.loss[:, 0, :], acc, title=title)
        return [Path(p) for p in paths]
    z = data.loss
    if data.loss.shape[0] > 1:
        paths += plots.plot_panel(
            str(stem) + "-panel", [[z[g] for g in range(z.shape[0])]], data.xs, data.ys,
            centre_relative=centre_relative, row_labels=[f"surface {data.surface.id}"],
            col_labels=[f"minibatch {g}" for g in range(z.shape[0])],
        )  # fmt: skip
    traj = data.trajectory[:, 1:3] if data.trajectory is not None else None
    grid = z.mean(axis=0)
    for kind in kinds:
        paths += plots.plot_2d(str(stem) + f"-{kind}", data.xs, data.ys, grid, kind=kind,
                               title=title, trajectory=traj)  # fmt: skip
    return [Path(p) for p in paths]


def cmd_plot_surface(args: argparse.Namespace) -> int:
    from tracker._results import load_surface
    from tracker._store import ArrayStore

    settings = _settings(args)
    db = _open(args)
    store = ArrayStore(settings.store_url)
    out = Path(args.out or settings.home / "plots")
    kinds = args.kind or ["contour", "contourf", "heatmap", "3d"]
    written: list[Path] = []
    with db.session() as session:
        if args.panel:
            written += _plot_panel(
                session, store, args.ids, out, args.centre_relative, args.contour
            )
        else:
            for sid in args.ids:
                data = load_surface(session, store, sid)
                written += plot_surface_files(data, out, kinds, args.centre_relative)
    for p in written:
        print(p)
    return 0


def _plot_panel(session: Any, store: Any, ids: list[int], out: Path, centre_relative: bool,
                contour: bool) -> list[Path]:  # fmt: skip
    """Seed 001's panel: rows are the surfaces (direction pairs), columns their minibatches."""
    from tracker import plots
    from tracker._results import load_surface

    datas = [load_surface(session, store, sid) for sid in ids]
    if any(not d.is_2d for d in datas):
        raise SpecError("a panel needs 2D surfaces")
    shapes = {d.loss.shape[1:] for d in datas}
    if len(shapes) > 1:
        raise SpecError("the surfaces of a panel must share one grid")
    out.mkdir(parents=True, exist_ok=True)
    grids = [[d.loss[g] for g in range(d.loss.shape[0])] for d in datas]
    rows = [f"pair {i + 1} (surface {d.surface.id})" for i, d in enumerate(datas)]
    cols = [f"minibatch {g + 1}" for g in range(max(d.loss.shape[0] for d in datas))]
    stem = out / ("panel-" + "-".join(str(i) for i in ids))
    return [Path(p) for p in plots.plot_panel(str(stem), grids, datas[0].xs, datas[0].ys,
                                              centre_relative=centre_relative, contour=contour,
                                              row_labels=rows, col_labels=cols)]  # fmt: skip


def cmd_export_surface(args: argparse.Namespace) -> int:
    from tracker import formats
    from tracker._results import direction_tensors, load_surface
    from tracker._schema import Checkpoint
    from tracker._store import ArrayStore

    settings = _settings(args)
    db = _open(args)
    store = ArrayStore(settings.store_url)
    with db.session() as session:
        data = load_surface(session, store, args.id)
        out = Path(args.out or f"surface-{args.id}.{args.format}")
        group = args.group
        if not 0 <= group < data.loss.shape[0]:
            raise SpecError(f"--group {group} is out of range: the surface has {data.loss.shape[0]} group(s)")  # fmt: skip
        if args.format == "h5":
            formats.write_h5(out, data.xs, data.ys, data.loss, data.acc, group=group)
            if data.x_direction is None:  # imported: no directions here
                print(out)
                return 0
            layout = session.get(Checkpoint, data.surface.checkpoint_id).layout
            xdir = direction_tensors(session, store, data.x_direction, layout)
            ydir = (
                direction_tensors(session, store, data.y_direction, layout)
                if data.y_direction
                else None
            )
            dir_path = out.with_name(out.stem + "-directions.h5")
            formats.write_direction_h5(dir_path, xdir, ydir)
            print(f"{out}\n{dir_path}")
            return 0
        if args.format == "vtp":
            if not data.is_2d:
                raise SpecError(f"surface {args.id} is 1D: VTP export needs a 2D surface (use csv or h5)")  # fmt: skip
            formats.write_vtp(out, data.xs, data.ys, data.loss[group], log=args.log, zmax=args.zmax)
        else:
            formats.write_csv(out, data.xs, data.ys, data.loss, data.acc)
    print(out)
    return 0


def cmd_import_h5(args: argparse.Namespace) -> int:
    """Bring a Goldstein surface file in as a surface row with its arrays."""
    from tracker import formats
    from tracker._importer import import_h5

    settings = _settings(args)
    db = _open(args)
    content = formats.read_h5(args.file)
    sid = import_h5(db, settings.store_url, content, study=args.study, source=str(args.file))
    print(f"imported {args.file} as surface {sid} in study {args.study!r}")
    return 0


# --- demo -------------------------------------------------------------------------------------

DEMO_STUDY = """\
study = "demo"
description = "Small- vs large-batch MLPs on digits: filter-normalised 1D and 2D surfaces and the interpolation between them."

[[model]]
name = "mlp-bs{batch_size}"
architecture = "mlp"
arch = { widths = [64, 64], activation = "relu" }
dataset = "digits"
optimizer = "sgd"
lr = 0.05
momentum = 0.9
batch_size = [16, 512]
epochs = 40
seed = 0
checkpoints = [0, 10, 20, 30]

[[surface]]
x = "-1:1:41"
direction = { seed = 0, norm = "filter", ignore = "biasbn" }

[[surface]]
x = "-1:1:25"
y = "-1:1:25"
direction = { seed = 0, norm = "filter", ignore = "biasbn" }

[[interpolation]]
from = "mlp-bs16"
to = "mlp-bs512"
x = "-0.5:1.5:41"
"""


def cmd_demo(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from tracker._cliutil import table as _table
    from tracker._db import open_database
    from tracker._migrate import upgrade
    from tracker._results import load_surface, study_surfaces
    from tracker._schema import Model
    from tracker._store import ArrayStore
    from tracker._work import work

    settings = _settings(args)
    settings.home.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    db = open_database(settings.db_url, check=False)
    upgrade(db, "head")
    spec_path = settings.home / "demo.toml"
    spec_path.write_text(DEMO_STUDY)
    counts = enqueue_study(db, spec_path)
    print(
        f"[demo] study 'demo' from {spec_path}: {counts['models']} models, {counts['surfaces']} surfaces"
    )
    summary = work(settings, workers=args.workers, scheduler=None, cuda=False, forever=False,
                   plugins=[], kinds=None, study="demo", lease_seconds=60.0,
                   progress=not args.no_progress)  # fmt: skip
    if summary.failed:
        raise SpecError(
            f"{summary.failed} demo task(s) failed: `tracker status --study demo` shows why"
        )
    store = ArrayStore(settings.store_url)
    out = settings.home / "plots" / "demo"
    rows = []
    plot_paths: list[Path] = []
    with db.session() as session:
        surfaces = study_surfaces(session, counts["study_id"])
        sharp: dict[int, dict[str, Any]] = {}
        for s in surfaces:
            data = load_surface(session, store, s.id)
            plot_paths += plot_surface_files(data, out, ["contour", "contourf", "heatmap", "3d"])
            if data.x_direction.kind == "random":
                key = "2d" if data.is_2d else "1d"
                sharp.setdefault(data.model.id, {})[key] = s
        models = session.scalars(sa.select(Model).where(Model.study_id == counts["study_id"]).order_by(Model.id)).all()  # fmt: skip
        for m in models:
            s1, s2 = sharp.get(m.id, {}).get("1d"), sharp.get(m.id, {}).get("2d")
            rows.append([
                m.name, m.batch_size, f"{m.train_acc:.3f}", f"{m.test_acc:.3f}",
                f"{m.test_acc - m.train_acc:+.3f}",
                f"{s1.rise_r050:.4f}" if s1 and s1.rise_r050 is not None else "",
                f"{s2.rise_r050:.4f}" if s2 and s2.rise_r050 is not None else "",
                f"{s2.flatness_width:.3f}" if s2 and s2.flatness_width is not None else "",
                m.mlflow_run_id[:12] if m.mlflow_run_id else "",
            ])  # fmt: skip
    print()
    print(_table(["model", "batch", "train acc", "test acc", "gap", "rise@0.5 1D",
                  "rise@0.5 2D", "flat width", "mlflow run"], rows))  # fmt: skip
    print()
    print("sharpness: mean loss rise at filter-normalised radius 0.5 (larger = sharper);")
    print("flat width: radius within which the 2D loss stays below centre + 0.1")
    print(f"plots ({len(plot_paths)} files): {out}")
    print(f"MLflow UI: mlflow ui --backend-store-uri {settings.mlflow_uri}  (then open http://127.0.0.1:5000)")  # fmt: skip
    print(f"SQL: sqlite3 {settings.db_url.removeprefix('sqlite:///')} 'select * from surfaces'")
    print(f"demo finished in {time.monotonic() - t0:.0f} s")
    return 0
