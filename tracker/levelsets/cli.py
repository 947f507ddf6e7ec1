"""Level-set commands (seed 002): enqueue traversals and the L2 baseline, plot the figures.

    tracker enqueue levelset --setup IRIS_FF --runs 5 [--max-predictor-steps N]
    tracker enqueue levelset --model all --study S [--epoch E] [--train-subset N]
    tracker enqueue l2-baseline --setup IRIS_FF --lambdas 0,1e-6,...,1e6 --runs 15
    tracker plot levelset --setup IRIS_FF [--out DIR]

Every request is validated whole before the first row is written, and all its rows are
written in one transaction; the same request twice finds the rows it made the first time.
Only the standard library (and the stdlib-only tracker._cliutil) is imported at the top:
torch, numpy and SQLAlchemy load inside the commands, so `tracker --help` stays fast.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Any

from tracker._cli_output import Enqueued, emit
from tracker._cliutil import DEFAULT_STUDY, open_db, settings, table

SETUP_NAMES = ("MNIST_FF", "MNIST_CONV", "CIFAR10_CONV", "IRIS_FF", "MPG_FF")


# --- parsers ----------------------------------------------------------------------------------


def _data_flags(p: argparse.ArgumentParser, *, setup_required: bool = True) -> None:
    p.add_argument("--setup", required=setup_required, metavar="NAME",
                   help=f"one of {', '.join(SETUP_NAMES)}")  # fmt: skip
    p.add_argument("--study", default=DEFAULT_STUDY, help="study label")
    p.add_argument("--run-seed", "--seed", dest="seed", type=int, default=0,
                   help="seed of the run seeds (run i gets the i-th of a seeded permutation of 0..999)")  # fmt: skip
    p.add_argument("--data-seed", type=int, default=0,
                   help="seed of the train/test split and of the 1000-example subsets")  # fmt: skip
    p.add_argument("--data-root", help="folder of user data (CIFAR-10: ROOT/cifar-10-batches-py)")


def add_parsers(
    *, sub: Any, enqueue: Any, plot: Any, export: Any, common: argparse.ArgumentParser
) -> None:
    """Add `enqueue levelset`, `enqueue l2-baseline` and `plot levelset`."""
    p = enqueue.add_parser("levelset", parents=[common],
                           help="level-set traversals (Tahir & Katz): phase 1 + predictor/corrector, "
                           "or from a trained model's checkpoint (--model)")  # fmt: skip
    _data_flags(p, setup_required=False)
    p.add_argument("--model", metavar="REF[,REF...]|all",
                   help="walk from these tracker models' checkpoints instead of a setup's own "
                   "network (no phase 1): ids or names, or 'all' (every model of --study); "
                   "the endpoints become measures in `tracker meta`")  # fmt: skip
    p.add_argument("--epoch", type=int, default=None,
                   help="with --model: the checkpoint epoch (default: the final one)")
    p.add_argument("--train-subset", type=int, default=None, metavar="N",
                   help="with --model: the level set of the loss on N training rows drawn with "
                   "--data-seed (default: the whole training split)")  # fmt: skip
    p.add_argument("--runs", type=int, default=None, help="runs (default: 5, 10 for MPG_FF)")
    p.add_argument("--max-predictor-steps", type=int, default=None, metavar="N",
                   help="predictor step cap (default: the setup's, 5k-30k; 1000 from a checkpoint)")  # fmt: skip
    p.add_argument("--max-corrector-steps", type=int, default=20_000, metavar="N",
                   help="corrector steps allowed between two predictor steps (default 20000)")  # fmt: skip
    p.add_argument("--phase1-epochs", type=int, default=None,
                   help="Adam epochs before the walk (default 100)")  # fmt: skip
    p.set_defaults(func=cmd_enqueue_levelset)

    p = enqueue.add_parser("l2-baseline", parents=[common],
                           help="the level-set setup trained with an L2 penalty on kernels")  # fmt: skip
    _data_flags(p)
    p.add_argument("--lambdas", default=None, metavar="L1,L2,...",
                   help="penalty strengths; A,...,B fills in the decades (default 0,1e-6,...,1e6)")  # fmt: skip
    p.add_argument("--runs", type=int, default=15, help="runs per lambda (default 15)")
    p.add_argument("--epochs", type=int, default=None,
                   help="Adam epochs (default: 200 MNIST/CIFAR, 500 IRIS/MPG)")  # fmt: skip
    p.set_defaults(func=cmd_enqueue_l2)

    p = plot.add_parser("levelset", parents=[common],
                        help="Figure 2 curves, Table 1 (CSV + printed), Figure 7 PCA of snapshots")  # fmt: skip
    p.add_argument(
        "--setup", required=True, metavar="NAME", help=f"one of {', '.join(SETUP_NAMES)}"
    )
    p.add_argument("--study", default=DEFAULT_STUDY,
                   help="study of the runs (default: %(default)s; '' for every study)")  # fmt: skip
    p.add_argument("--out", metavar="DIR", help="folder for the files (default TRACKER_HOME/plots)")
    p.set_defaults(func=cmd_plot_levelset)


# --- enqueue ----------------------------------------------------------------------------------


def _data_root(args: argparse.Namespace) -> str | None:
    return str(Path(args.data_root).absolute()) if args.data_root else None


def _positive(value: int | None, flag: str) -> None:
    from tracker._exceptions import SpecError

    if value is not None and value < 1:
        raise SpecError(f"{flag} must be at least 1, got {value}")


def levelset_configs(args: argparse.Namespace) -> list[Any]:
    """The run configs of an ``enqueue levelset`` request, validated (data included)."""
    from compute import levelset as ls
    from tracker._exceptions import SpecError

    setup = ls.get_setup(args.setup)
    if args.epoch is not None or args.train_subset is not None:
        raise SpecError("--epoch and --train-subset go with --model: a setup's run trains its own network")  # fmt: skip
    _positive(args.runs, "--runs")
    runs = args.runs or setup.runs
    seeds = ls.run_seeds(args.seed, runs)
    configs = [
        ls.LevelSetConfig(
            setup=setup.name, seed=s, max_predictor_steps=args.max_predictor_steps,
            max_corrector_steps=args.max_corrector_steps,
            phase1_epochs=100 if args.phase1_epochs is None else args.phase1_epochs,
            data_seed=args.data_seed, data_root=_data_root(args),
        ).resolved()
        for s in seeds
    ]  # fmt: skip
    ls.load_setup_data(setup, args.data_seed, _data_root(args))  # missing data fails here
    return configs


def checkpoint_config(args: argparse.Namespace) -> Any:
    """The config of an ``enqueue levelset --model`` request (one run per checkpoint)."""
    from compute import levelset as ls
    from tracker._exceptions import SpecError

    given = [flag for flag, value in (("--setup", args.setup), ("--runs", args.runs),
                                      ("--phase1-epochs", args.phase1_epochs),
                                      ("--data-root", args.data_root)) if value is not None]  # fmt: skip
    if given:
        raise SpecError(f"{given[0]} does not go with --model: a traversal from a checkpoint walks "
                        "the model's own network on its own data, without phase 1")  # fmt: skip
    _positive(args.train_subset, "--train-subset")
    return ls.LevelSetConfig(
        setup=ls.CHECKPOINT, seed=0, phase1_epochs=0, max_predictor_steps=args.max_predictor_steps,
        max_corrector_steps=args.max_corrector_steps, data_seed=args.data_seed,
        train_subset=args.train_subset,
    ).resolved()  # fmt: skip


def _enqueue_from_models(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from tracker._exceptions import SpecError
    from tracker._queue import find_study, get_or_create_study
    from tracker._schema import Model
    from tracker.levelsets.rows import add_checkpoint_levelset
    from tracker.training.rows import find_checkpoint, find_model

    cfg = checkpoint_config(args)
    db = open_db(args)
    ids: list[int] = []
    new_rows = 0
    with db.session() as session:
        if args.model.strip() == "all":
            models = list(session.scalars(sa.select(Model).where(
                Model.study_id == find_study(session, args.study).id).order_by(Model.id)))  # fmt: skip
            if not models:
                raise SpecError(f"study {args.study!r} has no models: enqueue them first")
        else:
            refs = [r.strip() for r in args.model.split(",") if r.strip()]
            if not refs:
                raise SpecError("--model names no model: give ids or names, comma-separated")
            models = [find_model(session, ref) for ref in refs]
        study = get_or_create_study(session, args.study)
        for model in models:
            ckpt = find_checkpoint(session, model, args.epoch)
            row, new = add_checkpoint_levelset(session, study, model, ckpt, cfg)
            new_rows += new
            ids.append(row.id)
    emit(args, Enqueued(args.study, "levelset_runs", ids),
         f"levelset: {len(ids)} traversal(s) from model checkpoints ({new_rows} new) in study "
         f"{args.study!r}; run `tracker work` to compute them")  # fmt: skip
    return 0


def cmd_enqueue_levelset(args: argparse.Namespace) -> int:
    from tracker._exceptions import SpecError
    from tracker._queue import get_or_create_study
    from tracker.levelsets.rows import add_levelset_run

    if args.model is not None:
        return _enqueue_from_models(args)
    if args.setup is None:
        raise SpecError("give --setup NAME (a paper setup) or --model REF (a trained model's checkpoint)")  # fmt: skip
    configs = levelset_configs(args)
    db = open_db(args)
    new_rows, ids = 0, []
    with db.session() as session:
        study = get_or_create_study(session, args.study)
        for i, cfg in enumerate(configs):
            row, new = add_levelset_run(session, study, i, cfg)
            new_rows += new
            ids.append(row.id)
    emit(args, Enqueued(args.study, "levelset_runs", ids),
         f"levelset: {len(configs)} run(s) of {configs[0].setup} ({new_rows} new) in study "
          f"{args.study!r}; run `tracker work` to compute them")  # fmt: skip
    return 0


def l2_configs(args: argparse.Namespace) -> list[tuple[int, Any]]:
    """(run index, config) of an ``enqueue l2-baseline`` request, validated."""
    from compute import levelset as ls

    setup = ls.get_setup(args.setup)
    lambdas = ls.parse_lambdas(args.lambdas) if args.lambdas else list(ls.DEFAULT_LAMBDAS)
    _positive(args.runs, "--runs")
    _positive(args.epochs, "--epochs")
    seeds = ls.run_seeds(args.seed, args.runs)
    out = [
        (i, ls.L2Config(setup=setup.name, seed=s, l2=lam, epochs=args.epochs,
                        data_seed=args.data_seed, data_root=_data_root(args)).resolved())
        for lam in lambdas
        for i, s in enumerate(seeds)
    ]  # fmt: skip
    ls.load_setup_data(setup, args.data_seed, _data_root(args))
    return out


def cmd_enqueue_l2(args: argparse.Namespace) -> int:
    from tracker._queue import get_or_create_study
    from tracker.levelsets.rows import add_l2_run

    configs = l2_configs(args)
    db = open_db(args)
    new_rows, ids = 0, []
    with db.session() as session:
        study = get_or_create_study(session, args.study)
        for i, cfg in configs:
            row, new = add_l2_run(session, study, i, cfg)
            new_rows += new
            ids.append(row.id)
    n_lambdas = len({cfg.l2 for _, cfg in configs})
    emit(args, Enqueued(args.study, "l2_baseline_runs", ids),
         f"l2-baseline: {len(configs)} run(s) of {configs[0][1].setup} ({n_lambdas} lambdas, "
          f"{new_rows} new) in study {args.study!r}; run `tracker work` to compute them")  # fmt: skip
    return 0


# --- plot -------------------------------------------------------------------------------------


def cmd_plot_levelset(args: argparse.Namespace) -> int:
    from tracker._exceptions import NotFound, SpecError
    from tracker._store import ArrayStore
    from tracker.levelsets import plots
    from tracker.levelsets.results import figure2_series, read_setup, snapshot_pca

    setup = args.setup
    if setup not in SETUP_NAMES:  # checked here without importing torch: plotting needs none
        raise SpecError(
            f"unknown level-set setup {setup!r}: choose one of {', '.join(SETUP_NAMES)}"
        )
    conf = settings(args)
    db = open_db(args)
    store = ArrayStore(conf.store_url)
    out = Path(args.out or conf.home / "plots")
    with db.session() as session:
        res = read_setup(session, store, setup, args.study)
    if not res.table:
        where = f" in study {args.study!r}" if args.study else ""
        raise NotFound(f"no finished level-set or L2 baseline runs of {setup}{where}: "
                       f"enqueue them (`tracker enqueue levelset --setup {setup}`) and run "
                       "`tracker work`")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    written = [_write_table(res.table, out / f"levelset-{setup}-table1.csv")]
    if res.traces:
        written += plots.plot_figure2(figure2_series(res.traces, res.fields), setup, out)
        written += plots.plot_figure7(snapshot_pca(res.snapshots, res.steps, res.l2_ends),
                                      setup, out)  # fmt: skip
    print(_format_table(res.table))
    for path in written:
        print(path)
    return 0


def _write_table(rows: list[dict[str, Any]], path: Path) -> Path:
    from tracker.levelsets.results import TABLE1_FIELDS

    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=TABLE1_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row[k] is None else row[k] for k in TABLE1_FIELDS})
    return path


def _format_table(table1: list[dict[str, Any]]) -> str:
    def pm(mean: float, std: float) -> str:
        return "n/a" if math.isnan(mean) else f"{mean:.4f} +- {std:.4f}"

    rows = [[r["method"], "" if r["l2_lambda"] is None else f"{r['l2_lambda']:g}", r["n_runs"],
             pm(r["test_loss_mean"], r["test_loss_std"]), pm(r["test_acc_mean"], r["test_acc_std"])]
            for r in table1]  # fmt: skip
    return table(["method", "lambda", "runs", "test loss", "test accuracy"], rows)
