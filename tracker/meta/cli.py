"""`tracker meta --study S [--json]`: which measure ranks generalisation best in a study.

It refreshes the study's ``measures`` rows from its results (one per checkpoint and measure
definition, mean and standard error over direction seeds; the queue's ``measures.refresh``
tasks keep them current too), logs them on each model's MLflow run, and prints Kendall's tau and the granulated tau (Jiang et al. 2020) of every definition
against each target, with seeded bootstrap intervals. Only the standard library is imported at
the top.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from tracker._cliutil import open_db, settings


def add_parsers(
    *, sub: Any, enqueue: Any, plot: Any, export: Any, common: argparse.ArgumentParser
) -> None:
    """Add `meta`."""
    p = sub.add_parser(
        "meta", parents=[common],
        help="rank correlation of each measure with the generalisation gap over a study's models",
    )  # fmt: skip
    p.add_argument("--study", required=True, metavar="NAME")
    p.add_argument("--target", choices=["gap", "loss_gap", "all"], default="all",
                   help="gap = train_acc - test_acc, loss_gap = test_loss - train_loss "
                   "(default: both)")  # fmt: skip
    p.add_argument("--draws", type=int, default=1000, help="bootstrap draws (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--no-mlflow", action="store_true",
                   help="do not log the measures on the models' MLflow runs")  # fmt: skip
    p.set_defaults(func=cmd_meta)


def _fmt(value: float) -> str:
    return "" if value is None or math.isnan(value) else f"{value:+.3f}"


def _interval(low: float, high: float) -> str:
    if math.isnan(low):
        return ""
    return f"[{low:+.2f}, {high:+.2f}]"


def cmd_meta(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from tracker._cli_output import emit, wants_json
    from tracker._cliutil import table
    from tracker._exceptions import NotFound, SpecError
    from tracker._schema import Study
    from tracker._store import ArrayStore
    from tracker.meta.results import TARGETS, meta_table
    from tracker.meta.rows import refresh_measures

    if not 1 <= args.draws <= 100_000:
        raise SpecError(f"--draws must be between 1 and 100000, got {args.draws}")
    settings_ = settings(args)
    db = open_db(args)
    store = ArrayStore(settings_.store_url)
    with db.session() as session:
        study = session.scalar(sa.select(Study).where(Study.name == args.study))
        if study is None:
            names = ", ".join(session.scalars(sa.select(Study.name).order_by(Study.name))) or "none"
            raise NotFound(f"no study {args.study!r}: studies are {names}")
        study_id = study.id
        n = refresh_measures(session, store, study_id)
    with db.session() as session:
        targets = TARGETS if args.target == "all" else (args.target,)
        rows = meta_table(session, study_id, targets=targets, draws=args.draws, seed=args.seed)
        runs = 0
        if not args.no_mlflow and n:
            from tracker.meta.publish import publish_measures

            runs = publish_measures(session, store, settings_.mlflow_uri, study_id)
    if wants_json(args):  # the shared --json: one document, printed by the command line
        emit(args, {"study": args.study, "measures": n, "mlflow_runs": runs,
                    "draws": args.draws, "seed": args.seed,
                    "correlations": [r.as_dict() for r in rows]}, None)  # fmt: skip
        return 0
    print(f"study {args.study!r}: {n} measure rows; logged on {runs} MLflow run(s)")
    if not rows:
        print("no measure has values for 3 or more models with a target yet: run `tracker work`")
        return 0
    rows = sorted(rows, key=lambda r: (r.target, -abs(r.tau) if not math.isnan(r.tau) else 0))
    print(table(
        ["target", "measure", "epoch", "models", "seeds", "tau", "95% CI", "psi", "95% CI",
         "psi per axis", "definition"],
        [[r.target, r.kind, r.epoch, r.n_models, f"{r.mean_seeds:g}", _fmt(r.tau),
          _interval(r.tau_low, r.tau_high), _fmt(r.psi), _interval(r.psi_low, r.psi_high),
          " ".join(f"{a}={_fmt(v)}" for a, v in r.psi_axes.items()), r.definition]
         for r in rows],
    ))  # fmt: skip
    print(f"tau: Kendall's tau of the measure with the target over the models; psi: the "
          f"granulated tau (mean over hyperparameter axes of the tau among models that differ "
          f"only in that axis); intervals: {args.draws} bootstrap draws, seed {args.seed}. "
          f"gap = train_acc - test_acc, loss_gap = test_loss - train_loss.")  # fmt: skip
    return 0
