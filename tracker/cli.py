"""The `tracker` command line. Imports stay inside the commands so `--help` is instant."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from tracker._cli_output import Enqueued, emit, jsonable

# The shared helpers keep short local names, so the core commands read as before.
from tracker._cliutil import DEFAULT_STUDY, LISTABLE, Parser, example, lazy_command
from tracker._cliutil import open_db as _open
from tracker._cliutil import settings as _settings
from tracker._cliutil import table as _table
from tracker._cliutil import when as _when

# --- db -------------------------------------------------------------------------------------


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from tracker._db import redact
    from tracker._migrate import upgrade

    db = _open(args, check=False)
    upgrade(db, args.revision)
    print(f"database {redact(db.url)} is at schema revision {db.revision()}")
    return 0


def cmd_db_downgrade(args: argparse.Namespace) -> int:
    from tracker._db import redact
    from tracker._migrate import downgrade

    db = _open(args, check=False)
    downgrade(db, args.revision)
    print(f"database {redact(db.url)} is at schema revision {db.revision() or 'base (empty)'}")
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    from tracker._db import SCHEMA_REVISION, redact

    db = _open(args, check=False)
    current = db.revision()
    state = "up to date" if current == SCHEMA_REVISION else "run `tracker db upgrade`"
    print(
        f"{redact(db.url)}: revision {current or 'none'} (this tracker: {SCHEMA_REVISION}, {state})"
    )
    return 0


def cmd_db_create_reader(args: argparse.Namespace) -> int:
    from tracker._readonly import READER_PASSWORD_ENV, create_reader

    db = _open(args, check=False)  # SQLite is refused with its own reason first
    url = create_reader(db.engine, args.role, os.environ.get(READER_PASSWORD_ENV))
    print(f"role {args.role!r} reads the tracker's tables and nothing else; "
          f"start the dashboard with --db {url}")  # fmt: skip
    return 0


def cmd_db_create_worker(args: argparse.Namespace) -> int:
    from tracker._readonly import WORKER_PASSWORD_ENV, create_worker

    db = _open(args, check=False)
    url = create_worker(db.engine, args.role, os.environ.get(WORKER_PASSWORD_ENV))
    print(f"role {args.role!r} reads and writes the tracker's rows and nothing else (no schema "
          f"changes); start workers with --db {url}")  # fmt: skip
    return 0


# --- work -----------------------------------------------------------------------------------


def cmd_work(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from tracker._exceptions import ConfigError
    from tracker._work import check_cpu_pool, work

    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    check_cpu_pool(args.cuda, args.cpu_workers)
    if not (0 < args.lease < float("inf")):
        raise ConfigError(f"--lease must be a positive number of seconds, got {args.lease}")
    # `docker stop` and schedulers send SIGTERM: exit through the clean-up path so the Dask
    # workers this command started stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Opened here first so a brand-new embedded home gets its schema (see _cliutil.open_db)
    # before work() and its workers open the database and check it.
    _open(args).dispose()
    summary = work(
        _settings(args),
        workers=args.workers,
        scheduler=args.scheduler,
        cuda=args.cuda,
        cpu_workers=args.cpu_workers,
        forever=args.forever,
        plugins=args.plugin,
        kinds=args.kind or None,
        study=args.study,
        lease_seconds=args.lease,
        progress=not args.no_progress,
        quiet=args.quiet,
        tune_malloc=True,
    )
    rate = summary.done / summary.seconds if summary.seconds else 0.0
    restarts = f", {summary.restarts} loop(s) restarted" if summary.restarts else ""
    emit(args, {**asdict(summary), "tasks_per_second": rate},
         f"done {summary.done}, failed {summary.failed} in {summary.seconds:.1f} s "
         f"({rate:.1f} tasks/s) on {summary.workers} worker(s){restarts}"
         if summary.workers else None)  # fmt: skip
    problems = []
    if summary.failed_in_scope:
        earlier = summary.failed_before
        problems.append(
            f"{summary.failed_in_scope} task(s) failed"
            + (f" ({earlier} of them before this run)" if earlier > 0 else "")
            + ": `tracker status` shows why, `tracker requeue --failed` retries them"
        )
    if summary.needs_gpu:
        problems.append(
            f"{summary.needs_gpu} task(s) need a GPU: run `tracker work --cuda` on a machine "
            "with one"
        )
    if summary.unfinished - summary.needs_gpu > 0:
        problems.append(
            f"{summary.unfinished - summary.needs_gpu} task(s) in this scope are not finished: "
            "run `tracker work` again"
        )
    for problem in problems:
        print(f"tracker: {problem}", file=sys.stderr)
    return 1 if problems else 0


# --- status / show ----------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from tracker._queue import find_study
    from tracker._status import expired_leases, queue_counts, recent_errors

    db = _open(args)
    with db.session() as session:
        study_id = find_study(session, args.study).id if args.study else None
        counts = queue_counts(session, study_id)
        errors = recent_errors(session, study_id, limit=args.errors)
        expired = expired_leases(session)
    emit(args, {"counts": [asdict(c) for c in counts], "expired_leases": expired,
                "errors": [asdict(e) for e in errors]},
         lambda: _status_text(counts, errors, expired))  # fmt: skip
    return 0


def _status_text(counts: Sequence[Any], errors: Sequence[Any], expired: int) -> str:
    if not counts:
        return "no tasks yet: `tracker enqueue` adds work"
    rows = [
        (c.study, c.kind, c.waiting, c.pending, c.running, c.done, c.failed,
         _when(c.oldest_running_since), _when(c.oldest_lease_expires))
        for c in counts
    ]  # fmt: skip
    lines = [_table(
        ("study", "kind", "waiting", "pending", "running", "done", "failed", "oldest running since",
         "its lease expires (UTC)"), rows)]  # fmt: skip
    if expired:
        lines.append(f"\n{expired} running task(s) have expired leases: the next claim reclaims them")
    if errors:
        lines.append("\nlast errors:")
        for e in errors:
            retry = " (will retry)" if e.status == "pending" else ""
            lines.append(f"  task {e.task_id} [{e.study}/{e.kind}, attempt {e.attempts}/"
                         f"{e.max_attempts}]{retry}: {e.message}")  # fmt: skip
    return "\n".join(lines)


def cmd_show_task(args: argparse.Namespace) -> int:
    from tracker._queue import find_task
    from tracker._status import task_details

    db = _open(args)
    with db.session() as session:
        details = task_details(find_task(session, args.id))

    def text() -> str:
        times = {"created", "started", "finished", "lease expires"}
        return "\n".join(
            f"{key}:\n{value}" if key == "error" and value
            else f"{key}: {_when(value) if key in times else _plain(value)}"
            for key, value in details.items()
        )  # fmt: skip

    emit(args, details, text)
    return 0


def _plain(value: Any) -> str:
    """A payload or result as JSON text (a script can read it), anything else as itself."""
    import json

    return json.dumps(jsonable(value)) if isinstance(value, (dict, list)) else str(value)


def cmd_show_study(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from tracker._queue import find_study
    from tracker._schema import Checkpoint, Direction, Model, Surface

    args.errors = 10
    if args.json:
        return _show_study_json(args)
    code = cmd_status(args)
    db = _open(args)
    with db.session() as session:
        study = find_study(session, args.study)
        models = session.scalars(
            sa.select(Model).where(Model.study_id == study.id).order_by(Model.id)
        ).all()
        surfaces = session.execute(
            sa.select(Surface, Checkpoint.model_id, Checkpoint.epoch, Direction.kind)
            .outerjoin(Checkpoint, Checkpoint.id == Surface.checkpoint_id)
            .outerjoin(Direction, Direction.id == Surface.x_direction_id)
            .where(Surface.study_id == study.id)
            .order_by(Surface.id)
        ).all()

    def num(v: Any, fmt: str = ".4f") -> str:
        return "" if v is None else format(v, fmt)

    if models:
        print("\nmodels:")
        print(_table(
            ["id", "name", "arch", "dataset", "batch", "lr", "wd", "seed", "epochs",
             "train acc", "test acc", "mlflow run"],
            [[m.id, m.name, m.architecture, m.dataset, m.batch_size, num(m.lr, "g"),
              num(m.weight_decay, "g"), m.seed, m.epochs, num(m.train_acc), num(m.test_acc),
              m.mlflow_run_id] for m in models],
        ))  # fmt: skip
    if surfaces:
        print("\nsurfaces:")
        print(_table(
            ["id", "model", "epoch", "direction", "grid", "eval", "bn", "centre", "rise@0.5",
             "flat width", "complete"],
            # A retrained network's surface: the retrain and save in place of the epoch.
            [[s.id, mid, ep if s.retrain_id is None else f"retrain {s.retrain_id} save {s.save_index}",
              kind or "imported",
              f"{s.nx}" + (f"x{s.ny}" if s.ny else ""),
              s.split + (f"/{s.subset_size}" if s.subset_size else "")
              + (f"/{s.n_minibatches}x{s.minibatch_size}" if s.n_minibatches else ""),
              s.bn_mode, num(s.centre_loss), num(s.rise_r050), num(s.flatness_width, ".3f"),
              "yes" if s.completed_at else "no"] for s, mid, ep, kind in surfaces],
        ))  # fmt: skip
    from tracker.curvature.cli import print_study_spectra
    from tracker.topology.cli import print_study_topology

    print_study_spectra(db, study.id)
    print_study_topology(db, study.id)
    _print_provenance(db, study.id)
    return code


def _print_provenance(db: Any, study_id: int) -> None:
    """Where the study's results were computed: each distinct provenance once, with the kinds
    of task and how many, so fp32 and bf16 or CPU and GPU results are not compared unawares."""
    import sqlalchemy as sa

    from tracker._provenance import describe
    from tracker._schema import Task

    with db.session() as session:
        found = session.execute(
            sa.select(Task.kind, Task.provenance)
            .where(Task.study_id == study_id, Task.provenance.is_not(None))
        ).all()  # fmt: skip
    lines: dict[str, dict[str, int]] = {}
    for kind, prov in found:
        kinds = lines.setdefault(describe(prov), {})
        kinds[kind] = kinds.get(kind, 0) + 1
    if lines:
        print("\ncomputed with:")
        for line, kinds in sorted(lines.items()):
            counts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
            print(f"  {line}  [{counts}]")


def _show_study_json(args: argparse.Namespace) -> int:
    """The study row, its queue counts and last errors, and every row of every kind it holds."""
    from dataclasses import asdict

    from tracker._manage import LISTABLE, list_rows
    from tracker._queue import find_study
    from tracker._status import queue_counts, recent_errors
    from tracker.curvature.results import study_counts

    db = _open(args)
    with db.session() as session:
        study = find_study(session, args.study)
        data: dict[str, Any] = {
            "study": list_rows(session, "studies", args.study)[0],
            "counts": [asdict(c) for c in queue_counts(session, study.id)],
            "errors": [asdict(e) for e in recent_errors(session, study.id, limit=args.errors)],
        }
        for what in LISTABLE:
            if what not in ("studies", "tasks", "arrays"):
                data[what] = list_rows(session, what, args.study)
        data["hessian_counts"] = study_counts(session, study.id)
    emit(args, data, None)
    return 0


# --- requeue / enqueue ------------------------------------------------------------------------


def cmd_requeue(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from tracker._exceptions import ConfigError
    from tracker._queue import find_study, requeue
    from tracker._schema import Task
    from tracker._status import repair_tasks
    from tracker._store import ArrayStore

    if not (args.ids or args.failed or args.broken):
        raise ConfigError("say what to requeue: task ids, --failed or --broken")
    db = _open(args)
    with db.session() as session:
        ids = set(args.ids)
        study_id = find_study(session, args.study).id if args.study else None
        if args.failed:
            query = sa.select(Task.id).where(Task.status == "failed")
            if study_id is not None:
                query = query.where(Task.study_id == study_id)
            ids.update(session.scalars(query))
        if args.broken:
            lines, broken = repair_tasks(session, ArrayStore(_settings(args).store_url))
            for line in lines:
                print(line)
            ids |= broken
        requeued = requeue(session, ids)
    print(
        f"requeued {len(requeued)} task(s)"
        + (f": {', '.join(map(str, requeued))}" if requeued and len(requeued) <= 20 else "")
    )
    return 0


# --- ls / cancel / delete -------------------------------------------------------------------


def cmd_ls(args: argparse.Namespace) -> int:
    from tracker._manage import list_rows, text_columns

    db = _open(args)
    with db.session() as session:
        rows = list_rows(session, args.what, args.study, args.where, args.limit)

    def text() -> str:
        if not rows:
            return f"no {args.what}" + (" match" if args.where else "")
        columns = text_columns(args.what)
        return _table(columns, [[_cell(r.get(c)) for c in columns] for r in rows])

    emit(args, rows, text)
    return 0


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, ".4g")
    if isinstance(value, list):
        return ",".join(map(str, value))
    return _when(value) if hasattr(value, "strftime") else str(value)


def cmd_cancel(args: argparse.Namespace) -> int:
    from tracker._manage import cancel

    db = _open(args)
    with db.session() as session:
        ids = cancel(session, args.ids, args.study)
    shown = f": {', '.join(map(str, ids))}" if ids and len(ids) <= 20 else ""
    emit(args, {"cancelled": ids},
         f"cancelled {len(ids)} pending or waiting task(s){shown}"
         + ("; `tracker requeue ID...` brings them back" if ids else ""))  # fmt: skip
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from tracker._exceptions import ConfigError
    from tracker._manage import delete, plan_deletion
    from tracker._queue import find_study
    from tracker._store import ArrayStore

    what = {"study": "studies"}.get(args.what, args.what)
    db = _open(args)
    with db.session() as session:
        if what == "studies":
            ids = [find_study(session, name).id for name in args.ids]
        else:
            try:
                ids = [int(i) for i in args.ids]
            except ValueError:
                raise ConfigError(f"{args.what} ids are numbers, got {' '.join(args.ids)}") from None
        plan = plan_deletion(session, what, ids)
        if not args.dry_run:
            delete(session, plan)
    if not args.dry_run:
        store = ArrayStore(_settings(args).store_url)
        for path in plan.paths:
            store.delete(path)
    counts = plan.counts()
    summary = ", ".join(f"{n} {table}" for table, n in counts.items()) or "nothing"
    verb = "would delete" if args.dry_run else "deleted"
    emit(args, {"dry_run": args.dry_run, "rows": {t: sorted(i) for t, i in plan.rows.items() if i},
                "arrays": plan.paths},
         f"{verb} {summary} and {len(plan.paths)} array(s)")  # fmt: skip
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    from tracker._manage import retag
    from tracker._queue import find_study
    from tracker.training.rows import find_model

    def labels(texts: list[str]) -> list[str]:
        return [t.strip() for text in texts for t in text.split(",") if t.strip()]

    db = _open(args)
    with db.session() as session:
        row = find_study(session, args.key) if args.what == "study" else find_model(session, args.key)
        result = retag(row, labels(args.add), labels(args.remove), args.note)
    note = f"; note: {result['note']}" if result["note"] else ""
    emit(args, {"what": args.what, **result},
         f"{args.what} {args.key}: tags {', '.join(result['tags']) or '(none)'}{note}")  # fmt: skip
    return 0


NOOP_LIMIT = 1_000_000


def cmd_enqueue_noop(args: argparse.Namespace) -> int:
    from tracker._exceptions import SpecError
    from tracker._queue import enqueue, get_or_create_study

    if not 1 <= args.count <= NOOP_LIMIT:
        raise SpecError(f"--count must be at least 1 and at most {NOOP_LIMIT:,}, got {args.count}")
    if not 0 <= args.seconds <= 86_400:
        raise SpecError(f"--seconds must be between 0 and 86400, got {args.seconds}")
    db = _open(args)
    created, ids = 0, []
    with db.session() as session:
        study = get_or_create_study(session, args.study)
        for i in range(args.count):
            task, new = enqueue(session, study, "noop", {"index": i, "seconds": args.seconds})
            created += new
            ids.append(task.id)
    emit(args, Enqueued(args.study, "tasks", ids, tasks=ids),
         f"study {args.study!r}: {created} new noop task(s), {args.count - created} already queued")  # fmt: skip
    return 0


# --- parser -----------------------------------------------------------------------------------


def _register_examples() -> None:
    """One example under each command's --help (a new command adds its own with example())."""
    example("db upgrade", "tracker db upgrade", "tracker --db postgresql+psycopg://me@db/tracker db upgrade")
    example("db downgrade", "tracker db downgrade 0005_morse")
    example("db current", "tracker db current")
    example("db create-reader", "TRACKER_READER_PASSWORD=secret tracker db create-reader")
    example("db create-worker", "TRACKER_WORKER_PASSWORD=secret tracker db create-worker")
    example("work", "tracker work --workers 2", "tracker work --study sweep -q --json",
            "tracker work --cuda --cpu-workers 4")
    example("status", "tracker status --study sweep", "tracker status --json | jq '.counts'")
    example("show task", "tracker show task 12 --json")
    example("show study", "tracker show study default", "tracker show study default --json")
    example("show morse", "tracker show morse 1")
    example("show surface", "tracker show surface 1", "tracker show surface 1 --json")
    example("requeue", "tracker requeue --failed --study sweep", "tracker requeue 12 13")
    example("enqueue noop", "tracker enqueue noop --count 100 --seconds 0.1",
            "tracker enqueue noop --count 10 --wait -q")
    example("enqueue study", "tracker enqueue examples/demo.toml --json",
            "tracker enqueue examples/demo.toml --wait")
    example("enqueue model", "tracker enqueue model --arch mlp --widths 64,64 --dataset digits "
            "--epochs 20 --lr 0.05 --json")  # fmt: skip
    example("enqueue surface", "tracker enqueue surface --model 1 --x -1:1:51 --y -1:1:51",
            "tracker enqueue surface --interpolate 1 2 --x -0.5:1.5:41",
            "tracker enqueue surface --model 1 --x -1:1:51 --y -1:1:51 --wait  "
            "# with `tracker work --forever` running")  # fmt: skip
    example("enqueue retrain", "tracker enqueue retrain --model 1 --direction-seeds 0-3 "
            "--steps 0.25,0.5 --epochs 10")  # fmt: skip
    example("enqueue topology", "tracker enqueue topology --model 1 --loss test --knn 20")
    example("enqueue levelset", "tracker enqueue levelset --setup MPG_FF --runs 5",
            "tracker enqueue levelset --model all --study sweep --train-subset 500")
    example("enqueue l2-baseline", "tracker enqueue l2-baseline --setup MPG_FF --runs 3")
    example("enqueue ensemble", "tracker enqueue ensemble --setup doodl3-iris --models 100",
            "tracker enqueue ensemble --from-models settings --study sweep --early-epoch 1")
    example("enqueue morse", "tracker enqueue morse --ensemble 1 --subdiv 12")
    example("train", "tracker train --arch mlp --widths 32 --dataset digits --epochs 5 --lr 0.05")
    example("plot surface", "tracker plot surface 3 --plot-kind contour --log",
            "tracker plot surface 3 4 --panel --vmax 2")  # fmt: skip
    example("plot embedding", "tracker plot embedding 1 --color step")
    example("plot persistence", "tracker plot persistence 1")
    example("plot levelset", "tracker plot levelset --setup MPG_FF")
    example("plot morse", "tracker plot morse 1 2")
    example("export surface", "tracker export surface 3 --format vtp --log --zmax 5")
    example("import h5", "tracker import h5 surface.h5 --study goldstein")
    example("import model", "tracker import model resnet56.t7 --arch resnet56 --dataset cifar10 "
            "--metrics-from-eval", "tracker import model ckpts/ --arch my_pkg.nets:make_net "
            "--arch-config '{\"width\": 64}' --dataset my_pkg.data:load")
    example("enqueue hessian", "tracker enqueue hessian --model 1 --epochs all --top-k 5 --trace "
            "--density --per-layer")
    example("show hessian", "tracker show hessian 1", "tracker show hessian --model 1")
    example("plot hessian", "tracker plot hessian 1 2 --model 1")
    example("meta", "tracker meta --study generalisation --json")
    example("demo", "tracker demo --workers 2")
    example("dashboard", "tracker dashboard --port 8501 --headless")


def build_parser() -> argparse.ArgumentParser:
    _register_examples()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print one JSON document instead of text (for scripts)",
    )
    common.add_argument(
        "--db",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="database URL (default: TRACKER_DB_URL, else SQLite under TRACKER_HOME)",
    )
    common.add_argument(
        "--store",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="Zarr store path or fsspec URL (default: TRACKER_STORE, else TRACKER_HOME/store.zarr)",
    )
    common.add_argument("--home", default=argparse.SUPPRESS, metavar="DIR",
                        help="folder of the embedded defaults (default: TRACKER_HOME, else ./.tracker)")  # fmt: skip

    parser = Parser(
        prog="tracker",
        parents=[common],
        description="Track loss-landscape experiments: a SQL schema, a Zarr array store and a "
        "work queue drained by Dask workers.",
    )
    parser.add_argument("--version", action="version", version=f"tracker {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = sub.add_parser("db", help="create, upgrade or inspect the database schema")
    dbsub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    p = dbsub.add_parser("upgrade", parents=[common], help="create or upgrade the schema")
    p.add_argument("revision", nargs="?", default="head")
    p.set_defaults(func=cmd_db_upgrade)
    p = dbsub.add_parser(
        "downgrade", parents=[common], help="downgrade the schema (base drops all)"
    )
    p.add_argument("revision")
    p.set_defaults(func=cmd_db_downgrade)
    p = dbsub.add_parser("current", parents=[common], help="show the schema revision")
    p.set_defaults(func=cmd_db_current)
    p = dbsub.add_parser(
        "create-reader", parents=[common],
        help="make the read-only PostgreSQL role the dashboard connects as",
        description="Create (or reset) a login role with SELECT on the tracker's tables and "
        "nothing else: no superuser, no write, no server files, programs or signals. Its password "
        "comes from $TRACKER_READER_PASSWORD (none: the server's own authentication decides). "
        "Run it as the database owner after `tracker db upgrade`.",
    )  # fmt: skip
    p.add_argument("--role", default="tracker_reader", help="role name (default tracker_reader)")
    p.set_defaults(func=cmd_db_create_reader)
    p = dbsub.add_parser(
        "create-worker", parents=[common],
        help="make the least-privilege PostgreSQL role workers connect as",
        description="Create (or reset) a login role that reads and writes the rows of the "
        "tracker's tables and nothing else: no schema changes (migrations stay with the owner), "
        "no superuser, no server files, programs or signals. Its password comes from "
        "$TRACKER_WORKER_PASSWORD (none: the server's own authentication decides). Run it as the "
        "database owner after `tracker db upgrade`.",
    )  # fmt: skip
    p.add_argument("--role", default="tracker_worker", help="role name (default tracker_worker)")
    p.set_defaults(func=cmd_db_create_worker)

    p = sub.add_parser("work", parents=[common], help="run Dask workers until the queue is drained")
    p.add_argument(
        "--workers", type=int, default=None,
        help="Dask worker processes (default: none, one worker loop per core in threads of "
        "this process)",
    )
    p.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="attach this machine's workers to an existing Dask scheduler",
    )
    p.add_argument("--cuda", action="store_true", help="one dask-cuda worker per GPU")
    p.add_argument(
        "--cpu-workers", type=int, default=0, metavar="N",
        help="with --cuda: also N CPU worker loops (threads of this process) that take the "
        "tasks not needing a GPU, leaving the GPUs to the GPU workers (default 0)",
    )  # fmt: skip
    p.add_argument("--forever", action="store_true", help="keep polling for new work")
    p.add_argument("--study", help="only tasks of this study")
    p.add_argument(
        "--task-kind", "--kind", dest="kind", action="append", default=[],
        help="only tasks of this kind (repeatable)"
    )
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE to register more task kinds (repeatable)",
    )
    p.add_argument(
        "--lease",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="lease length; a silent worker's task is reclaimed after it (default 60)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress output at all")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="a plain progress line every 10 s instead of a live bar")  # fmt: skip
    p.set_defaults(func=cmd_work)

    p = sub.add_parser(
        "status", parents=[common], help="queue counts per study and kind, last errors"
    )
    p.add_argument("--study")
    p.add_argument("--errors", type=int, default=5, metavar="N", help="show the last N errors")
    p.set_defaults(func=cmd_status)

    show = sub.add_parser("show", help="one task or study in detail")
    showsub = show.add_subparsers(dest="show_command", required=True, metavar="WHAT")
    p = showsub.add_parser("task", parents=[common], help="a task: payload, lease, error")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_show_task)
    p = showsub.add_parser("study", parents=[common], help="a study's queue counts and errors")
    p.add_argument("study")
    p.set_defaults(func=cmd_show_study)

    p = sub.add_parser(
        "requeue", parents=[common], help="send failed or broken work back to the queue"
    )
    p.add_argument("ids", nargs="*", type=int, metavar="TASK_ID")
    p.add_argument("--failed", action="store_true", help="every failed task (of --study)")
    p.add_argument("--study")
    p.add_argument("--broken", action="store_true",
                   help="verify every stored array; requeue the tasks whose arrays are missing or damaged")  # fmt: skip
    p.set_defaults(func=cmd_requeue)

    p = sub.add_parser("ls", parents=[common], help="list rows of one kind, filtered")
    p.add_argument("what", metavar="WHAT", help=f"what to list: {', '.join(LISTABLE)}")
    p.add_argument("--study", help="only rows of this study")
    p.add_argument("--where", action="append", default=[], metavar="'COLUMN OP VALUE'",
                   help="keep rows where COLUMN OP VALUE holds (OP: = != < <= > >= ~ for "
                   "contains; VALUE null for NULL); repeatable, all must hold")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="at most N rows")
    p.set_defaults(func=cmd_ls)
    example("ls", "tracker ls models --study sweep --where 'lr<0.1' --where dataset=mnist --json")

    p = sub.add_parser("cancel", parents=[common],
                       help="take pending or waiting tasks off the queue (marked failed)")
    p.add_argument("ids", nargs="*", type=int, metavar="TASK_ID")
    p.add_argument("--study", help="every pending or waiting task of this study")
    p.set_defaults(func=cmd_cancel)
    example("cancel", "tracker cancel --study sweep", "tracker cancel 12 13")

    p = sub.add_parser("delete", parents=[common],
                       help="delete rows with everything that depends on them, and their arrays")
    p.add_argument("what", metavar="WHAT",
                   help="study (by name) or a kind of row that `tracker ls` lists (by id)")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    p.set_defaults(func=cmd_delete)
    example("delete", "tracker delete surfaces 4 --dry-run", "tracker delete study old-sweep")

    p = sub.add_parser("tag", parents=[common], help="tags and a note on a study or a model")
    p.add_argument("what", choices=["study", "model"])
    p.add_argument("key", metavar="NAME_OR_ID", help="the study's name, the model's id or name")
    p.add_argument("--add", action="append", default=[], metavar="TAG[,TAG]",
                   help="tags to add (repeatable)")
    p.add_argument("--remove", action="append", default=[], metavar="TAG[,TAG]",
                   help="tags to remove (repeatable)")
    p.add_argument("--note", help="set the note (an empty string clears it)")
    p.set_defaults(func=cmd_tag)
    example("tag", "tracker tag study sweep --add baseline,bs-sweep --note 'first try'",
            "tracker tag model 3 --remove baseline")

    enq = sub.add_parser("enqueue", help="add work to the queue")
    enqsub = enq.add_subparsers(dest="enqueue_command", required=True, metavar="WHAT")
    p = enqsub.add_parser("noop", parents=[common],
                          help="no-op tasks: check that workers reach the database and store")  # fmt: skip
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--seconds", type=float, default=0.0, help="each task sleeps this long")
    p.add_argument("--study", default=DEFAULT_STUDY, help="study label")
    p.set_defaults(func=cmd_enqueue_noop)
    p = enqsub.add_parser("study", parents=[common],
                          help="a study file (TOML): models x directions x surfaces; "
                          "`tracker enqueue FILE.toml` does the same")  # fmt: skip
    p.add_argument("file", metavar="FILE.toml")
    p.set_defaults(func=lazy_command("tracker.studyfile", "cmd_enqueue_study"))
    groups: dict[str, Any] = {"sub": sub, "enqueue": enqsub, "common": common}
    # Training's `train` comes before the plot and export groups in `tracker --help`.
    importlib.import_module("tracker.training.cli").add_parsers(**groups)
    plot = sub.add_parser("plot", help="draw results (PNG and PDF)")
    groups["plot"] = plot.add_subparsers(dest="plot_command", required=True, metavar="WHAT")
    export = sub.add_parser("export", help="write results in other tools' formats")
    groups["export"] = export.add_subparsers(
        dest="export_command", required=True, metavar="WHAT"
    )
    for module in FEATURE_CLI_MODULES:
        importlib.import_module(module).add_parsers(**groups)
    from tracker._cliutil import add_wait_flags

    for verb in enqsub.choices.values():  # every enqueue verb, a method's too: one --wait
        add_wait_flags(verb)
    importlib.import_module("tracker.surfaces.cli").add_show_parser(showsub, common)
    importlib.import_module("tracker.curvature.cli").add_show_parser(showsub, common)
    return parser


# Each of these modules defines add_parsers(sub, enqueue, plot, export, common): the commands of
# one research method. They import only the standard library and tracker._cliutil at module top
# (`tracker --help` stays fast); tracker.training.cli is added first (see build_parser).
FEATURE_CLI_MODULES: tuple[str, ...] = (
    "tracker.surfaces.cli",
    "tracker.topology.cli",
    "tracker.levelsets.cli",
    "tracker.morse.cli",
    "tracker.curvature.cli",
    "tracker.meta.cli",
    "tracker._cli_dashboard",
)


def _study_file_shortcut(argv: list[str]) -> list[str]:
    """`tracker enqueue FILE.toml` means `tracker enqueue study FILE.toml`."""
    if "enqueue" in argv:
        i = argv.index("enqueue")
        rest = argv[i + 1 :]
        if rest and (rest[0].endswith(".toml") or os.path.isfile(rest[0])):
            return [*argv[: i + 1], "study", *rest]
    return argv


def _glue_negative_grids(argv: list[str]) -> list[str]:
    """`--x -1:1:51` reads as an option to argparse; pass it as `--x=-1:1:51`."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if word in ("--x", "--y") and nxt is not None and nxt.startswith("-") and ":" in nxt:
            out.append(f"{word}={nxt}")
            i += 2
            continue
        out.append(word)
        i += 1
    return out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tracker")
    except PackageNotFoundError:  # run from a source tree without installing
        return "0+unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = _study_file_shortcut(list(sys.argv[1:] if argv is None else argv))
    argv = _glue_negative_grids(argv)
    args = parser.parse_args(argv)
    for name in ("db", "store", "home"):
        if not hasattr(args, name):
            setattr(args, name, None)
    args.json = getattr(args, "json", False)
    if getattr(args, "wait", False):
        from tracker._wait import waiting

        args.func = waiting(args.func)
    from tracker._cli_output import json_mode
    from tracker._exceptions import TrackerError

    try:
        with json_mode(args):
            code = int(args.func(args) or 0)
        return code
    except TrackerError as err:
        if os.environ.get("TRACKER_DEBUG"):
            raise
        print(f"tracker: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(
            "tracker: interrupted; running tasks are reclaimed when their leases expire",
            file=sys.stderr,
        )
        return 130
    except Exception as err:
        sa_exc = sys.modules.get("sqlalchemy.exc")
        if (
            sa_exc is not None
            and isinstance(err, sa_exc.OperationalError)
            and not os.environ.get("TRACKER_DEBUG")
        ):
            reason = str(err.orig or err).strip().splitlines()[0]
            print(
                f"tracker: error: the database failed ({reason}): check that it is up and retry",
                file=sys.stderr,
            )
            return 2
        raise


def console() -> None:
    """The `tracker` command and `python -m tracker.cli`: ``main``, then a quick exit (see
    ``exit_now``). An error the command does not turn into one line still raises here, with
    the interpreter's own exit."""
    from tracker._cliutil import exit_now

    exit_now(main())


if __name__ == "__main__":
    console()
