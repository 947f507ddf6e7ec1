"""Command line of loss surfaces: `enqueue surface`, `plot surface`, `export surface`,
`import h5`, and the parser of `demo` (its body is ``tracker.demo``).

Only the standard library and ``tracker._cliutil`` are imported at module top (`tracker
--help` builds these parsers); each command imports what it needs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracker._cli_output import Enqueued, emit
from tracker._cliutil import DEFAULT_STUDY, lazy_command, open_db, settings
from tracker.training.cli import add_import_model_parser

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from tracker._store import ArrayStore
    from tracker.surfaces.results import SurfaceData
    from tracker.training.rows import DirectionSpec


def add_parsers(
    *, sub: Any, enqueue: Any, plot: Any, export: Any, common: argparse.ArgumentParser
) -> None:
    """Add `enqueue surface`, `plot surface`, `export surface`, `import h5` and `demo`."""
    p = enqueue.add_parser("surface", parents=[common],
                           help="a 1D or 2D loss surface around a model, or an interpolation")  # fmt: skip
    add_surface_flags(p)
    p.set_defaults(func=lazy_command(__name__, "cmd_enqueue_surface"))

    p = plot.add_parser("surface", parents=[common],
                        help="1D curve, or 2D contour/filled contour/heatmap/3D; --panel for "
                        "seed 001's pairs x minibatches panel")  # fmt: skip
    p.add_argument("ids", nargs="+", type=int, metavar="SURFACE_ID")
    p.add_argument("--plot-kind", "--kind", dest="kind", action="append", choices=["contour", "contourf", "heatmap", "3d"],
                   help="2D plot kinds (repeatable; default all)")  # fmt: skip
    p.add_argument("--panel", action="store_true",
                   help="one panel: a row per surface (direction pair), a column per minibatch")  # fmt: skip
    p.add_argument("--centre-relative", action="store_true", help="panel: loss minus the centre")
    p.add_argument("--contour", action="store_true", help="panel: contours instead of heatmaps")
    p.add_argument("--out", metavar="DIR", help="folder for the files (default TRACKER_HOME/plots)")
    p.add_argument("--log", action="store_true", help="logarithmic colour scale and levels")
    p.add_argument("--vmin", type=float, help="bottom of the colour range (default: the minimum)")
    p.add_argument("--vmax", type=float, help="top of the colour range (default: the maximum)")
    p.add_argument("--levels", metavar="N|V1,V2,...",
                   help="contour levels: a count (evenly spaced) or the values (default: 20 "
                   "log-spaced above the minimum, which show the basin)")  # fmt: skip
    p.add_argument("--vlevel", type=float, metavar="STEP",
                   help="Goldstein's levels: every STEP from --vmin to --vmax")
    p.set_defaults(func=lazy_command(__name__, "cmd_plot_surface"))

    p = export.add_parser("surface", parents=[common],
                          help="h5 (Goldstein's names), vtp (ParaView) or csv")  # fmt: skip
    p.add_argument("id", type=int, metavar="SURFACE_ID")
    p.add_argument("--format", choices=["h5", "vtp", "csv"], default="h5")
    p.add_argument("--out", metavar="FILE")
    p.add_argument("--group", type=int, default=0, help="which minibatch grid (default 0)")
    p.add_argument("--log", action="store_true", help="vtp: log(loss + 0.1)")
    p.add_argument("--zmax", type=float, default=None, help="vtp: clip values above this")
    p.add_argument("--interp", type=int, default=None, metavar="N",
                   help="vtp: resample to N x N points (bilinear), as h52vtp's --interp")
    p.set_defaults(func=lazy_command(__name__, "cmd_export_surface"))

    imp = sub.add_parser("import", help="bring results from other tools into the database")
    impsub = imp.add_subparsers(dest="import_command", required=True, metavar="WHAT")
    p = impsub.add_parser("h5", parents=[common], help="a Goldstein loss-landscape surface file")
    p.add_argument("file", metavar="FILE.h5")
    p.add_argument("--study", default=DEFAULT_STUDY, help="study label")
    p.add_argument("--split", default="train", choices=["train", "test"],
                   help="whose grids to import: train_loss/train_acc or test_loss/test_acc")  # fmt: skip
    p.set_defaults(func=lazy_command(__name__, "cmd_import_h5"))
    add_import_model_parser(impsub, common)

    p = sub.add_parser("demo", parents=[common],
                       help="train two MLPs on digits, compute their surfaces, plot, summarise")  # fmt: skip
    p.add_argument("--workers", type=int, default=None,
                   help="Dask worker processes (default: none, one worker loop per core in "
                   "threads of this process, as `tracker work`)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true")
    # The demo enqueues a study file (training and surfaces), so its body is in the top layer.
    p.set_defaults(func=lazy_command("tracker.demo", "cmd_demo"))


def add_surface_flags(p: argparse.ArgumentParser) -> None:
    """The flags of `enqueue surface`: centre, directions, grid, evaluation, tiles."""
    p.add_argument("--study", help="study label (default: the model's study)")
    p.add_argument("--model", metavar="ID", help="centre model (id or name)")
    p.add_argument("--epoch", type=int, default=None,
                   help="centre checkpoint epoch (default: the last)")  # fmt: skip
    p.add_argument("--retrain", type=int, default=None, metavar="R",
                   help="centre on retrain R of the model (`tracker enqueue retrain`), along "
                   "its Hessian eigenvectors (--x-direction hessian:I)")  # fmt: skip
    p.add_argument("--save", type=int, default=None, metavar="S",
                   help="with --retrain: the trajectory save to centre on (default: the last)")
    p.add_argument("--interpolate", nargs=2, metavar=("A", "B"),
                   help="the line theta_A + x (theta_B - theta_A) between two models")  # fmt: skip
    p.add_argument("--pca", action="store_true",
                   help="the plane of the first two PCA directions of the model's checkpoints")  # fmt: skip
    p.add_argument("--x", metavar="MIN:MAX:N",
                   help="x grid, e.g. -1:1:51 (with --pca, leave --x and --y out for a 21x21 "
                   "grid around the projected path)")  # fmt: skip
    p.add_argument("--y", metavar="MIN:MAX:N", help="y grid for a 2D surface")
    p.add_argument("--direction-seed", "--seed", dest="seed", type=int, default=0,
                   help="seed of the x direction (default 0)")
    p.add_argument("--y-direction-seed", "--y-seed", dest="y_seed", type=int, default=None,
                   help="seed of the y direction (default: the x direction's seed + 1)")  # fmt: skip
    p.add_argument("--direction-seeds", "--seeds", dest="seeds", metavar="LIST", default=None,
                   help="one surface per x-direction seed, e.g. 0-4 (a 2D surface's y direction "
                   "uses seed+1, so 2D seeds must be two apart: 0,2,4,6,8); the measures "
                   "average over them with a standard error")  # fmt: skip
    p.add_argument("--y-model", metavar="C",
                   help="with --interpolate A B: the y direction theta_C - theta_A (Goldstein's "
                   "model_file3)")  # fmt: skip
    norms = ["filter", "layer", "model", "none", "filter-std"]
    p.add_argument("--norm", default="filter", choices=norms)
    p.add_argument("--ignore", default="biasbn", choices=["biasbn", "none"])
    p.add_argument("--xnorm", choices=norms, help="the x direction's normalisation (default --norm)")
    p.add_argument("--ynorm", choices=norms, help="the y direction's normalisation (default --norm)")
    p.add_argument("--xignore", choices=["biasbn", "none"], help="x direction (default --ignore)")
    p.add_argument("--yignore", choices=["biasbn", "none"], help="y direction (default --ignore)")
    p.add_argument("--same-dir", action="store_true",
                   help="the y direction is the x direction (Goldstein's --same_dir)")  # fmt: skip
    p.add_argument("--loss", choices=["cross-entropy", "mse"], default=None,
                   help="the loss (default: the data set's; mse on classes compares the softmax "
                   "with the one-hot label, as Goldstein's --loss_name mse)")  # fmt: skip
    p.add_argument("--target", default=None, choices=["weights", "states"],
                   help="what directions move: weights, or states (BN statistics too; default "
                   "weights, states for --interpolate)")  # fmt: skip
    p.add_argument("--split", default="train", choices=["train", "test", "val"])
    p.add_argument("--subset", type=int, default=None, metavar="N",
                   help="evaluate on a fixed seeded subset of N samples")  # fmt: skip
    p.add_argument("--minibatches", type=int, default=None, metavar="K",
                   help="one grid per minibatch: the first K minibatches of the split")  # fmt: skip
    p.add_argument("--minibatch-size", type=int, default=None, metavar="B")
    p.add_argument("--bn", default="eval", choices=["eval", "train", "recompute"],
                   help="BatchNorm: stored running statistics (eval), batch statistics (train), "
                   "or running statistics re-estimated at each point (recompute)")  # fmt: skip
    p.add_argument("--bn-batches", type=int, default=None, metavar="K",
                   help="--bn recompute: training batches (of the model's batch size) per point "
                   "(default 10)")  # fmt: skip
    p.add_argument("--metrics", default="loss,acc", help="loss and/or acc (default loss,acc)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"],
                   help="reduced precision (opt-in): the tiles then wait for a GPU worker")  # fmt: skip
    p.add_argument("--gpu", action="store_true",
                   help="run the tiles on GPU workers only (`tracker work --cuda`)")  # fmt: skip
    p.add_argument("--compile", default="none",
                   choices=["none", "default", "reduce-overhead", "max-autotune"],
                   help="torch.compile the evaluation forward once per worker (default none)")  # fmt: skip
    p.add_argument("--tile", metavar="NXxNY", help="points per tile task (default 16x16; 32 in 1D)")
    p.add_argument("--x-direction", metavar="random|hessian:I", default=None,
                   help="hessian:I: the centre's Hessian eigenvector I (unit length, not "
                   "normalised; made by `tracker enqueue hessian`); default random")  # fmt: skip
    p.add_argument("--y-direction", metavar="random|hessian:I", default=None,
                   help="the y direction likewise (hessian:I needs a Hessian x direction)")  # fmt: skip
    p.add_argument("--curvature", action="store_true",
                   help="also map lambda_min, lambda_max and |lambda_min/lambda_max| of the "
                   "Hessian per grid point (Goldstein; Lanczos per point: expensive)")  # fmt: skip
    p.add_argument("--curvature-tol", type=float, default=None, metavar="TOL",
                   help="Lanczos relative residual per point (default 1e-3)")  # fmt: skip
    p.add_argument("--curvature-max-iter", type=int, default=None, metavar="N",
                   help="Lanczos steps per point and end of the spectrum (default 100)")  # fmt: skip

def add_show_parser(show: Any, common: argparse.ArgumentParser) -> None:
    """Add `show surface`."""
    p = show.add_parser("surface", parents=[common],
                        help="a surface: centre, directions, grid, loss, BatchNorm, curvature, "
                        "centre gradient, summaries")  # fmt: skip
    p.add_argument("id", type=int, metavar="SURFACE_ID")
    p.set_defaults(func=lazy_command(__name__, "cmd_show_surface"))


def cmd_show_surface(args: argparse.Namespace) -> int:
    from tracker.surfaces.results import describe_surface

    db = open_db(args)
    with db.session() as session:
        d = describe_surface(session, args.id)
    emit(args, d, lambda: surface_text(d))
    return 0


def surface_text(d: dict[str, Any]) -> str:
    """`tracker show surface` for a person."""

    def num(v: Any) -> str:
        return "-" if v is None else format(v, ".6g")

    if d["model_id"] is not None:
        name = f" {d['model_name']!r}" if d["model_name"] else ""
        centre = f"model {d['model_id']}{name}, {d['centre']}"
    else:
        centre = f"imported from {d['source']}"
    grid = d["grid"]
    lines = [f"surface {d['id']} ({d['status']}): {centre}",
             f"  grid: x {grid['x']}" + (f", y {grid['y']}" if grid["y"] else "")
             + f" (tiles {grid['tile'][0]}" + (f"x{grid['tile'][1]}" if grid["y"] else "") + ")",
             f"  x direction: {d['x_direction'] or '-'}"]  # fmt: skip
    if d["y_direction"]:
        lines.append(f"  y direction: {d['y_direction']}")
    data = d["split"]
    if d["subset"]:
        data += f", subset {d['subset']} (seed {d['subset_seed']})"
    if d["minibatches"]:
        data += f", {d['minibatches']} minibatches of {d['minibatch_size']}"
    lines.append(f"  data: {data}; metrics {', '.join(d['metrics'])}")
    lines.append(f"  loss: {d['loss'] or '-'} ({d['loss_from']})")
    bn = d["bn"]
    text = bn["mode"]
    if bn["mode"] == "recompute":
        text += (f": running statistics re-estimated at each point from {bn['batches']} "
                 f"training batches of {bn['batch_size']}")  # fmt: skip
    lines.append(f"  BatchNorm: {text}")
    lines.append(f"  precision: {d['precision'] or 'fp32'}, compile: {d['compile'] or 'none'}"
                 + (", GPU workers only" if d["gpu"] else ""))  # fmt: skip
    if d["curvature"]:
        c = d["curvature_settings"] or {}
        lines.append(f"  curvature: lambda_min/lambda_max map (tol {c.get('tol')}, max_iter "
                     f"{c.get('max_iter')}, seed {c.get('seed')}); `tracker plot hessian "
                     f"--surface {d['id']}` draws it")  # fmt: skip
    else:
        lines.append("  curvature: no (enqueue with --curvature for the lambda_min/max map)")
    g = d["centre_gradient"]
    if g["stored"]:
        rows = "; ".join(", ".join(num(v) for v in row) for row in g["values"])
        lines.append(f"  centre gradient (per grid, on each direction): {rows}")
    else:
        lines.append(f"  centre gradient: none ({g['why']})")
    sm = d["summary"]
    if d["completed_at"] is not None:
        at = f"({num(sm['min_x'])}" + (f", {num(sm['min_y'])})" if grid["y"] else ")")
        lines.append(f"  centre loss {num(sm['centre_loss'])}, minimum {num(sm['min_loss'])} at "
                     f"{at}, rise@0.25/0.5/1.0 {num(sm['rise_r025'])}/{num(sm['rise_r050'])}/"
                     f"{num(sm['rise_r100'])}, flat width {num(sm['flatness_width'])}")  # fmt: skip
    if d["provenance"]:
        lines.append(f"  computed with: {d['provenance']}")
    return "\n".join(lines)


# --- argument helpers -------------------------------------------------------------------------


def parse_tile(text: str | None) -> tuple[int, int] | None:
    from tracker._exceptions import SpecError

    if text is None:
        return None
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or not all(1 <= v <= 4096 for v in values):
        raise SpecError(f"--tile {text!r} is not NX or NXxNY with 1..4096 points each (e.g. 16x16)")
    return (values[0], values[-1])


# --- enqueue ----------------------------------------------------------------------------------


def _direction_from_args(args: argparse.Namespace, seed: int, axis: str = "x") -> DirectionSpec:
    """A random direction; ``axis`` picks the per-axis --xnorm/--xignore (or y) over the
    shared --norm/--ignore."""
    from tracker.training.rows import DirectionSpec

    norm = getattr(args, f"{axis}norm") or args.norm
    ignore = getattr(args, f"{axis}ignore") or args.ignore
    return DirectionSpec(kind="random", seed=seed, normalization=norm, ignore=ignore,
                         target=args.target or "weights")  # fmt: skip


def cmd_enqueue_surface(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tracker._exceptions import SpecError
    from tracker._schema import Study
    from tracker.surfaces.rows import (
        PATH_POINTS,
        CurvatureSpec,
        EvalSpec,
        Grid,
        SurfaceSpec,
        add_surface,
        parse_direction_choice,
        parse_grid,
        surface_tasks,
    )
    from tracker.training.rows import DirectionSpec, find_model

    x_hessian = parse_direction_choice(args.x_direction, "--x-direction")
    y_hessian = parse_direction_choice(args.y_direction, "--y-direction")
    if (x_hessian is not None or y_hessian is not None) and (args.interpolate or args.pca):
        raise SpecError("--x-direction/--y-direction hessian:I go with --model, not --interpolate or --pca")  # fmt: skip
    if (args.retrain is not None or args.save is not None) and (args.interpolate or args.pca):
        raise SpecError("--retrain centres a surface on a retrained network, along its Hessian "
                        "eigenvectors: drop --interpolate/--pca")  # fmt: skip
    if y_hessian is not None and not args.y:
        raise SpecError("--y-direction needs a 2D surface: give --y MIN:MAX:N too")
    given = [f for f, v in (("--curvature-tol", args.curvature_tol),
                            ("--curvature-max-iter", args.curvature_max_iter)) if v is not None]  # fmt: skip
    if given and not args.curvature:
        raise SpecError(f"{given[0]} sets up the curvature map: add --curvature")
    base = CurvatureSpec()  # its defaults stand for the flags left out
    curvature = (
        CurvatureSpec(tol=base.tol if args.curvature_tol is None else args.curvature_tol,
                      max_iter=base.max_iter if args.curvature_max_iter is None
                      else args.curvature_max_iter, seed=args.seed)
        if args.curvature else None
    )  # fmt: skip
    around_path = bool(args.pca) and args.x is None and args.y is None
    y: Grid | None
    if around_path:
        x = y = Grid(-1.0, 1.0, PATH_POINTS)
    elif args.x is None:
        raise SpecError("give --x MIN:MAX:N (a --pca surface may leave out both --x and --y)")
    else:
        x = parse_grid(args.x, "--x grid")
        y = parse_grid(args.y, "--y grid") if args.y else None
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    ev = EvalSpec(split=args.split, subset=args.subset, minibatch_size=args.minibatch_size,
                  minibatches=args.minibatches, bn=args.bn, metrics=metrics,
                  precision=args.precision, gpu=args.gpu, compile=args.compile,
                  loss=args.loss.replace("-", "_") if args.loss else None,
                  bn_batches=args.bn_batches)  # fmt: skip
    if args.seeds is not None and (args.interpolate or args.pca):
        raise SpecError("--seeds draws random directions: drop it for --pca and --interpolate")
    if args.same_dir and (args.interpolate or args.pca):
        raise SpecError("--same-dir applies to random directions: drop it, or drop --interpolate/--pca")  # fmt: skip
    if args.y_model is not None and not args.interpolate:
        raise SpecError("--y-model C gives the y direction of an interpolation: add --interpolate A B")  # fmt: skip
    if args.interpolate:
        a, b = args.interpolate
        spec = SurfaceSpec(model=a, other_model=b, x=x, y=y, epoch=args.epoch,
                           x_direction=DirectionSpec(kind="interpolation", seed=None,
                                                     normalization="none", ignore="none",
                                                     target=args.target or "states"),
                           y_direction=_direction_from_args(args, args.seed, "y") if y else None,
                           y_model=args.y_model, evaluation=ev,
                           tile=parse_tile(args.tile))  # fmt: skip
    elif args.model is None:
        raise SpecError("give --model ID (or --interpolate A B)")
    elif args.pca:
        spec = SurfaceSpec(model=args.model, x=x, y=y, epoch=args.epoch,
                           x_direction=DirectionSpec(kind="pca", seed=None, normalization="none",
                                                     ignore=args.ignore, target="weights"),
                           path_range=around_path, evaluation=ev,
                           tile=parse_tile(args.tile))  # fmt: skip
    else:
        specs = []
        seeds = _x_seeds(args, two_d=y is not None)
        if len(seeds) > 1 and x_hessian is not None and (y is None or y_hessian is not None or args.same_dir):  # fmt: skip
            raise SpecError(f"--seeds {args.seeds}: seeds do not change an eigenvector surface "
                            "(no random direction to draw): drop --seeds")  # fmt: skip
        for seed in seeds:
            xd = _direction_from_args(args, seed)
            yd = (
                _direction_from_args(
                    args, args.y_seed if args.y_seed is not None else seed + 1, "y"
                )
                if y and not args.same_dir
                else None
            )
            specs.append(SurfaceSpec(model=args.model, x=x, y=y, epoch=args.epoch,
                                     x_direction=xd, y_direction=yd, same_dir=args.same_dir,
                                     evaluation=ev, tile=parse_tile(args.tile),
                                     x_hessian=x_hessian, y_hessian=y_hessian,
                                     curvature=curvature, retrain=args.retrain,
                                     save=args.save))  # fmt: skip
        spec = specs[0]
    spec = replace(spec, curvature=curvature)
    db = open_db(args)
    with db.session() as session:
        model = find_model(session, spec.model)
        home = Study.find_or_raise_by_id(session, model.study_id)
        if args.study and args.study != home.name:
            raise SpecError(
                f"model {model.id} belongs to study {home.name!r}, not {args.study!r}: its "
                f"surfaces go in its own study (drop --study, or use --study {home.name})"
            )
        study = home
        done = []
        for one in specs if args.seeds is not None else [spec]:  # one surface per seed
            surface, new = add_surface(session, study, one)
            done.append((surface.id, surface_tasks(session, surface), new))
        name = study.name

    def text() -> str:
        return "\n".join(
            f"surface {sid} ({f'new, {len(tasks)} tile task(s)' if new else 'already queued'}) "
            f"in study {name!r}; run `tracker work` to compute it"
            for sid, tasks, new in done
        )

    emit(args, Enqueued(name, "surfaces", [sid for sid, _, _ in done],
                        tasks=[t for _, tasks, _ in done for t in tasks]), text)  # fmt: skip
    return 0


def _x_seeds(args: argparse.Namespace, *, two_d: bool) -> tuple[int, ...]:
    """The x-direction seeds: --seeds, else --seed alone."""
    from tracker._cliutil import parse_seeds
    from tracker._exceptions import SpecError

    if args.seeds is None:
        return (args.seed,)
    seeds = parse_seeds(args.seeds)
    if two_d and args.y_seed is not None:
        raise SpecError("--y-seed with --seeds would give every surface the same y direction: drop --y-seed")
    if two_d and set(seeds) & {s + 1 for s in seeds}:
        raise SpecError(f"--seeds {args.seeds}: a 2D surface's y direction uses seed+1, so the "
                        "seeds must be two apart (e.g. 0,2,4,6,8)")  # fmt: skip
    return seeds


# --- plots and exports ------------------------------------------------------------------------


def plot_options(args: argparse.Namespace) -> dict[str, Any]:
    """The colour-scale and level flags of `plot surface` as ``figure_2d`` keywords."""
    import numpy as np

    from tracker._exceptions import SpecError

    levels: Any = None
    if args.levels and args.vlevel:
        raise SpecError("give --levels or --vlevel, not both")
    if args.levels:
        try:
            values = [float(v) for v in args.levels.split(",") if v.strip()]
        except ValueError:
            raise SpecError(f"--levels {args.levels!r} is a count or comma-separated numbers") from None
        levels = int(values[0]) if len(values) == 1 else values
    if args.vlevel:
        if args.vlevel <= 0 or args.vmin is None or args.vmax is None:
            raise SpecError("--vlevel STEP needs a positive STEP and --vmin and --vmax")
        levels = list(np.arange(args.vmin, args.vmax, args.vlevel))
    return {"levels": levels, "vmin": args.vmin, "vmax": args.vmax, "log": args.log}


def interpolation_ends(data: SurfaceData) -> tuple[str, str] | None:
    """The names of the two models an interpolation surface runs between (None otherwise)."""
    from sqlalchemy.orm import object_session

    from tracker._schema import Checkpoint, Model

    direction = data.x_direction
    session = object_session(data.surface)
    if direction is None or direction.kind != "interpolation" or session is None:
        return None

    def name(checkpoint_id: int | None) -> str:
        ckpt = session.get(Checkpoint, checkpoint_id) if checkpoint_id else None
        model = session.get(Model, ckpt.model_id) if ckpt else None
        if ckpt is None or model is None:
            return "?"
        return f"{model.name or f'model {model.id}'} (epoch {ckpt.epoch})"

    return name(direction.checkpoint_a_id), name(direction.checkpoint_b_id)


def surface_figures(
    data: SurfaceData, kinds: list[str], centre_relative: bool = False,
    options: dict[str, Any] | None = None,
) -> list[tuple[str, Any]]:
    """A surface's figures, each with the suffix of its file name: the 1D curve (``1d``); for
    a 2D surface one per kind, after a panel (``panel``) for minibatch grids.

    An interpolation names both models in the title and labels its axis alpha (0 at the
    first model, 1 at the second)."""
    from tracker.surfaces import plots

    title, xlabel = data.label, "x"
    ends = interpolation_ends(data)
    if ends is not None:
        title = f"surface {data.surface.id}: {ends[0]} (alpha = 0) to {ends[1]} (alpha = 1)"
        xlabel = f"alpha: (1 - alpha) {ends[0]} + alpha {ends[1]}"
    if not data.is_2d:
        acc = data.acc[:, 0, :] if "acc" in (data.surface.metrics or []) else None
        axis: dict[str, Any] = {"xlabel": xlabel} if ends else {}
        fig = plots.figure_1d(data.xs, data.loss[:, 0, :], acc, title=title, **axis)
        return [("1d", fig)]
    figures: list[tuple[str, Any]] = []
    z = data.loss
    if data.loss.shape[0] > 1:
        fig = plots.figure_panel(
            [[z[g] for g in range(z.shape[0])]], data.xs, data.ys,
            centre_relative=centre_relative, row_labels=[f"surface {data.surface.id}"],
            col_labels=[f"minibatch {g}" for g in range(z.shape[0])],
        )  # fmt: skip
        draw_arrows(fig.axes, [data], data.xs, data.ys)
        figures.append(("panel", fig))
    grid = z.mean(axis=0)
    labels = _pca_options(data)
    if ends is not None:
        labels["xlabel"] = xlabel
    for kind in kinds:
        # The projected path is drawn on the flat kinds; the 3D view shows the surface alone.
        shown = labels if kind != "3d" else {k: labels[k] for k in ("xlabel", "ylabel")}
        fig = plots.figure_2d(data.xs, data.ys, grid, kind=kind, title=title,
                              **{**shown, **(options or {})})  # fmt: skip
        if kind != "3d":
            draw_arrows(fig.axes, [data], data.xs, data.ys, mean=True)
        figures.append((kind, fig))
    return figures


def plot_surface_files(
    data: SurfaceData, out_dir: Path, kinds: list[str], centre_relative: bool = False,
    options: dict[str, Any] | None = None,
) -> list[Path]:
    """Write a surface's figures (see surface_figures) as ``surface-ID-SUFFIX.png/.pdf``."""
    from tracker.surfaces import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"surface-{data.surface.id}"
    paths: list[Path] = []
    for suffix, fig in surface_figures(data, kinds, centre_relative, options):
        paths += [Path(p) for p in plots.save_figure(fig, f"{stem}-{suffix}")]
    return paths


def draw_arrows(
    axes: list[Any], datas: list[SurfaceData], xs: Any, ys: Any, mean: bool = False
) -> None:
    """Seed 001's arrow at the centre of each panel: the SGD step, minus the stored gradient
    on the two directions (``centre_gradient``), one per minibatch grid (``mean``: one for the
    grids' mean), all scaled alike so the longest spans a quarter of the plot, as its figures
    draw them. Surfaces without a stored gradient get none."""
    import numpy as np

    arrows: list[tuple[int, np.ndarray]] = []
    index = 0
    for d in datas:
        stored = d.surface.centre_gradient
        groups = d.loss.shape[0]
        if stored is not None and all(v is not None for row in stored for v in row):
            g = -np.asarray(stored, dtype=np.float64)
            for k, step in enumerate([g.mean(axis=0)] if mean else list(g)):
                arrows.append((index + k, step))
        index += 1 if mean else groups
    longest = max((float(np.linalg.norm(a)) for _, a in arrows), default=0.0)
    if longest == 0.0:
        return
    span = 0.25 * min(float(np.ptp(xs)), float(np.ptp(ys)))
    for i, (dx, dy) in ((i, a * span / longest) for i, a in arrows):
        axes[i].annotate("", xy=(dx, dy), xytext=(0.0, 0.0), zorder=6,
                         arrowprops={"arrowstyle": "-|>", "color": "black", "lw": 1.4})  # fmt: skip


def _pca_options(data: SurfaceData) -> dict[str, Any]:
    """Axis labels with the explained variance ("PC1 (62.1%)") and the projected path, for a
    PCA surface; plain x/y labels otherwise."""
    xd, yd = data.x_direction, data.y_direction
    if xd is None or xd.kind != "pca" or yd is None:
        return {"xlabel": "x", "ylabel": "y"}
    options: dict[str, Any] = {}
    for key, d, n in (("xlabel", xd, 1), ("ylabel", yd, 2)):
        ratio = d.explained_variance
        options[key] = f"PC{n} ({100 * ratio:.1f}%)" if ratio is not None else f"PC{n}"
    if data.trajectory is not None:
        options["trajectory"] = data.trajectory[:, 1:3]
        options["trajectory_labels"] = [int(e) for e in data.trajectory[:, 0]]
    return options


def cmd_plot_surface(args: argparse.Namespace) -> int:
    from tracker._store import ArrayStore
    from tracker.surfaces.results import load_surface

    cfg = settings(args)
    db = open_db(args)
    store = ArrayStore(cfg.store_url)
    out = Path(args.out or cfg.home / "plots")
    kinds = args.kind or ["contour", "contourf", "heatmap", "3d"]
    options = plot_options(args)  # bad flags are refused before anything is read or written
    written: list[Path] = []
    with db.session() as session:
        if args.panel:
            written += plot_panel_files(
                session, store, args.ids, out, args.centre_relative, args.contour
            )
        else:
            for sid in args.ids:
                data = load_surface(session, store, sid)
                written += plot_surface_files(data, out, kinds, args.centre_relative,
                                              options)  # fmt: skip
    for p in written:
        print(p)
    return 0


def plot_panel_files(session: Session, store: ArrayStore, ids: list[int], out: Path,
                     centre_relative: bool, contour: bool) -> list[Path]:  # fmt: skip
    """Seed 001's panel: rows are the surfaces (direction pairs), columns their minibatches."""
    from tracker._exceptions import SpecError
    from tracker.surfaces import plots
    from tracker.surfaces.results import load_surface

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
    fig = plots.figure_panel(grids, datas[0].xs, datas[0].ys, centre_relative=centre_relative,
                             contour=contour, row_labels=rows, col_labels=cols)  # fmt: skip
    draw_arrows(fig.axes, datas, datas[0].xs, datas[0].ys)
    return [Path(p) for p in plots.save_figure(fig, str(stem))]


def cmd_export_surface(args: argparse.Namespace) -> int:
    from tracker._exceptions import ConfigError, SpecError
    from tracker._store import ArrayStore
    from tracker.surfaces import formats
    from tracker.surfaces.results import load_surface

    db = open_db(args)
    store = ArrayStore(settings(args).store_url)
    with db.session() as session:
        data = load_surface(session, store, args.id)
        out = Path(args.out or f"surface-{args.id}.{args.format}")
        if not out.parent.is_dir():
            raise ConfigError(f"--out {out}: the folder {out.parent} does not exist (or is a file)")
        group = args.group
        if not 0 <= group < data.loss.shape[0]:
            raise SpecError(f"--group {group} is out of range: the surface has {data.loss.shape[0]} group(s)")  # fmt: skip
        if args.format == "h5":
            print("\n".join(str(p) for p in _export_h5(session, store, data, out, group)))
            return 0
        if args.format == "vtp":
            if not data.is_2d:
                raise SpecError(f"surface {args.id} is 1D: VTP export needs a 2D surface (use csv or h5)")  # fmt: skip
            formats.write_vtp(out, data.xs, data.ys, data.loss[group], log=args.log, zmax=args.zmax,
                              interpolate=args.interp)  # fmt: skip
        else:
            formats.write_csv(out, data.xs, data.ys, data.loss, data.acc)
    print(out)
    return 0


def _export_h5(
    session: Session, store: ArrayStore, data: SurfaceData, out: Path, group: int
) -> list[Path]:
    """Goldstein's files: the surface (its split's names, ``dir_file`` naming the direction
    file), the direction file (PCA ratios too) and, for a PCA surface, the projected path in
    his projection-file layout (``proj_xcoord``/``proj_ycoord``)."""
    from tracker._schema import Checkpoint
    from tracker.surfaces import formats
    from tracker.surfaces.results import direction_tensors

    split = data.surface.split or "train"
    if data.x_direction is None:  # imported: no directions here
        formats.write_h5(out, data.xs, data.ys, data.loss, data.acc, group=group, split=split)
        return [out]
    layout = Checkpoint.find_or_raise_by_id(session, data.surface.checkpoint_id).layout
    xdir = direction_tensors(session, store, data.x_direction, layout)
    yd = data.y_direction
    ydir = direction_tensors(session, store, yd, layout) if yd else None
    ratios = None
    if data.x_direction.kind == "pca" and yd is not None:
        ratios = [data.x_direction.explained_variance, yd.explained_variance]
    dir_path = out.with_name(out.stem + "-directions.h5")
    formats.write_direction_h5(dir_path, xdir, ydir, explained_variance_ratio=ratios)
    formats.write_h5(out, data.xs, data.ys, data.loss, data.acc, group=group, split=split,
                     directions=dir_path)  # fmt: skip
    written = [out, dir_path]
    if data.trajectory is not None:
        proj = out.with_name(out.stem + "-projection.h5")
        written.append(formats.write_projection_h5(proj, data.trajectory[:, 1:3]))
    return written


def cmd_import_h5(args: argparse.Namespace) -> int:
    """Bring a Goldstein surface file in as a surface row with its arrays."""
    from tracker.surfaces import formats
    from tracker.surfaces.rows import import_h5

    db = open_db(args)
    content = formats.read_h5(args.file, split=args.split)
    sid = import_h5(db, settings(args).store_url, content, study=args.study, source=str(args.file))
    print(f"imported {args.file} as surface {sid} in study {args.study!r}")
    return 0
