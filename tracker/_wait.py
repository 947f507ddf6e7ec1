"""`tracker enqueue ... --wait`: enqueue, then wait for the result with `tracker work`'s progress.

Every enqueue verb (and a study file) gets ``--wait``, ``--no-progress`` and ``-q`` from
``tracker._cliutil.add_wait_flags``; ``main`` runs the verb through ``run_waiting``. The tasks waited for are
those the verb touched: every task ``tracker._queue.enqueue`` made or found already queued,
the task of every result row ``tracker._rows.get_or_add`` found (an existing surface that is
still being computed), and the tasks the verb reported. Follow-ups
(``tracker._registry.FOLLOW_UP_KINDS``: a surface's figures on its MLflow run, the study's
measures) are left to the workers: a user waiting for a surface wants the surface.

The wait does no work itself: a worker does, typically ``tracker work --forever`` kept running
in another terminal (its start-up is then paid once, not per command). When no worker claims
anything for a few seconds one hint line says so. The wait wakes on the queue's waker
(tracker._wake): on SQLite at the next commit to the file (a finished tile, a heartbeat); on
PostgreSQL at the NOTIFY of tasks becoming pending, and by reading the counts every
``POSTGRES_POLL`` seconds, because a finishing task sends no NOTIFY (a NOTIFY serialises the
commits of every worker that sends one, which the queue's throughput cannot afford).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

HINT_SECONDS_ENV = "TRACKER_WAIT_HINT_SECONDS"
DEFAULT_HINT_SECONDS = 5.0  # nothing running and nothing changed this long: the hint line
POSTGRES_POLL = 0.2  # seconds between counts on PostgreSQL (finishing sends no NOTIFY)
SQLITE_POLL = 1.0  # the SQLite waker wakes at every commit; this only refreshes the clock
HINT = ("tracker: no worker is claiming these tasks: start `tracker work --forever` in another "
        "terminal (or run `tracker work`)")  # fmt: skip
GPU_HINT = ("tracker: no worker is claiming these tasks and some need a GPU: start "
            "`tracker work --cuda --forever` on a machine with one")  # fmt: skip


def waiting(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """The enqueue command ``func``, followed by the wait for what it enqueued."""

    def run(args: argparse.Namespace) -> int:
        return run_waiting(func, args)

    return run


@dataclass(frozen=True)
class Outcome:
    statuses: list[tuple[int, str, str]]  # (id, kind, status) of each task waited for
    interrupted: bool = False

    def failed(self) -> list[int]:
        return [i for i, _, status in self.statuses if status == "failed"]

    def unfinished(self) -> list[int]:
        return [i for i, _, status in self.statuses if status not in ("done", "failed")]


def run_waiting(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    from tracker._cliutil import open_db, settings
    from tracker._queue import recording_tasks

    with recording_tasks() as touched:
        code = int(func(args) or 0)
    if code:
        return code
    ids = set(touched)
    enqueued = getattr(args, "enqueued", None)
    db = open_db(args)
    try:
        if enqueued is not None:
            ids.update(enqueued.tasks)
            ids.update(_row_tasks(db, enqueued.what, enqueued.ids))
        outcome = wait_for_tasks(
            db, settings(args).db_url, _results(db, ids), progress=not args.no_progress,
            quiet=args.quiet, hint_after=hint_seconds(),
        )  # fmt: skip
    finally:
        db.dispose()
    failed = outcome.failed()
    args.json_extra = {"wait": {
        "tasks": [{"id": i, "kind": k, "status": s} for i, k, s in outcome.statuses],
        "failed": failed, "interrupted": outcome.interrupted,
    }}  # fmt: skip
    if outcome.interrupted:
        print(f"tracker: stopped waiting; {len(outcome.unfinished())} unfinished task(s) stay "
              "queued: `tracker status` shows them", file=sys.stderr)  # fmt: skip
        return 130
    if failed:
        shown = ", ".join(map(str, failed[:10])) + (f" and {len(failed) - 10} more"
                                                    if len(failed) > 10 else "")  # fmt: skip
        print(f"tracker: {len(failed)} task(s) failed: {shown}; `tracker show task {failed[0]}` "
              "says why", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def hint_seconds() -> float:
    """How long nothing may run before the no-worker hint ($TRACKER_WAIT_HINT_SECONDS)."""
    from tracker._config import env_seconds

    return env_seconds(HINT_SECONDS_ENV, DEFAULT_HINT_SECONDS, zero_ok=True)


def _row_tasks(db: Any, table_name: str, row_ids: Sequence[int]) -> set[int]:
    """The tasks of the result rows an enqueue reported (the rows' ``task_id``)."""
    import sqlalchemy as sa

    from tracker._schema import Base

    table = Base.metadata.tables.get(table_name)
    if table is None or "task_id" not in table.c or table_name == "tasks" or not row_ids:
        return set()
    found: set[int] = set()
    ids = sorted(set(row_ids))
    with db.engine.connect() as conn:
        for i in range(0, len(ids), 500):
            query = sa.select(table.c.task_id).where(table.c.id.in_(ids[i : i + 500]))
            found.update(t for (t,) in conn.execute(query) if t is not None)
    return found


def _results(db: Any, ids: set[int]) -> list[int]:
    """``ids`` less the follow-up tasks."""
    from tracker._progress import Scope, id_ranges
    from tracker._registry import FOLLOW_UP_KINDS

    if not ids:
        return []
    rows = Scope(db, None, None, id_ranges(sorted(ids))).statuses()
    return [i for i, kind, _ in rows if kind not in FOLLOW_UP_KINDS]


def wait_for_tasks(
    db: Any,
    db_url: str,
    task_ids: Sequence[int],
    *,
    progress: bool = True,
    quiet: bool = False,
    hint_after: float = DEFAULT_HINT_SECONDS,
    stream: IO[str] | None = None,
) -> Outcome:
    """Block until every task in ``task_ids`` is done or failed (or Ctrl-C), drawing progress."""
    from tracker._progress import Progress, Scope, id_ranges
    from tracker._wake import open_waker

    if not task_ids:
        return Outcome([])
    stream = stream if stream is not None else sys.stderr
    scope = Scope(db, None, None, id_ranges(task_ids))
    counts = scope.counts()
    bar = Progress(stream, dict.fromkeys(counts, 0), progress, quiet=quiet, scope=scope,
                   idle="waiting for a worker")  # fmt: skip
    period = POSTGRES_POLL if db.dialect == "postgresql" else SQLITE_POLL
    waker = open_waker(db_url)
    interrupted = False
    seen = (counts, time.monotonic())  # the counts and when they last changed
    hinted = False
    try:
        while True:
            unfinished = counts["waiting"] + counts["pending"] + counts["running"]
            bar.update(counts, final=unfinished == 0)
            if unfinished == 0:
                break
            now = time.monotonic()
            if counts != seen[0] or counts["running"] or _live_leases(db):
                seen = (counts, now)
            elif not hinted and now - seen[1] >= hint_after:
                hinted = True
                bar.note(GPU_HINT if _need_gpu(db, scope) else HINT)
            waker.wait(period)
            counts = scope.counts()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        waker.close()
        bar.close()
    return Outcome(scope.statuses(), interrupted)


def _live_leases(db: Any) -> bool:
    """Whether any worker holds an unexpired lease on any task: someone is working."""
    import sqlalchemy as sa

    from tracker._db import utcnow
    from tracker._schema import Task

    query = sa.select(Task.id).where(Task.status == "running", Task.lease_expires_at > utcnow())
    with db.engine.connect() as conn:
        return conn.execute(query.limit(1)).first() is not None


def _need_gpu(db: Any, scope: Any) -> bool:
    """Whether some pending task waited for needs a GPU (CPU workers never claim it)."""
    import sqlalchemy as sa

    from tracker._schema import Task

    return bool(scope.rows(sa.select(Task.id).where(Task.status == "pending", Task.needs_gpu)))
