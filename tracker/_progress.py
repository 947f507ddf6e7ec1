"""The progress of one `tracker work`: this invocation's tasks, rate, elapsed, ETA, grid points/s.

Counts are of the tasks this run has to do (those unfinished in its scope when it started, and
any enqueued while it runs), not of every task in the database. On a terminal a live bar (rich)
is redrawn; with ``quiet`` or when the stream is not a terminal (a log file, CI) one plain line
is printed every ``interval`` seconds, and always at the end. Failed tasks are announced as they
fail, with their error's last line; the Dask dashboard's address is printed once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

import sqlalchemy as sa

from tracker._db import Database
from tracker._schema import Study, Task, Tile
from tracker._status import error_summary

LINE_INTERVAL = 10.0  # seconds between plain progress lines


# At most this many id ranges in one query's OR (SQLite parses an OR chain as a deep tree).
RANGES_PER_QUERY = 200


def id_ranges(ids: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Distinct ids as (first, last) runs of consecutive ids: an enqueue's tasks are mostly one
    run, so a million no-ops are one BETWEEN rather than a million-item IN list."""
    runs: list[tuple[int, int]] = []
    for i in sorted(set(ids)):
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return tuple(runs)


@dataclass(frozen=True)
class Scope:
    """The tasks a `tracker work` serves (its kinds and, optionally, studies), or the tasks an
    `enqueue --wait` waits for (``task_ids``: runs of ids from ``id_ranges``)."""

    db: Database
    kinds: Sequence[str] | None
    study_ids: Sequence[int] | None
    task_ids: tuple[tuple[int, int], ...] | None = None

    def _wheres(self, query: Any) -> list[Any]:
        """``query`` restricted to the scope: one query, or one per chunk of id runs."""
        if self.kinds is not None:
            query = query.where(Task.kind.in_(list(self.kinds)))
        if self.study_ids is not None:
            query = query.where(Task.study_id.in_(list(self.study_ids)))
        if self.task_ids is None:
            return [query]
        runs = self.task_ids
        return [
            query.where(sa.or_(*(Task.id.between(lo, hi)
                                 for lo, hi in runs[i : i + RANGES_PER_QUERY])))
            for i in range(0, len(runs), RANGES_PER_QUERY)
        ]  # fmt: skip

    def rows(self, query: Any) -> list[Any]:
        """The rows of ``query`` (a select on tasks) over the scope."""
        with self.db.engine.connect() as conn:
            return [row for q in self._wheres(query) for row in conn.execute(q)]

    def failed(self) -> list[tuple[int, str, str, str]]:
        """(id, study, kind, error's last line) of the failed tasks in scope."""
        rows = self.rows(
            sa.select(Task.id, Study.name, Task.kind, Task.error)
            .join(Study, Study.id == Task.study_id)
            .where(Task.status == "failed")
            .order_by(Task.id)
        )
        return sorted((i, s, k, error_summary(e)) for i, s, k, e in rows)

    def grid_points_done(self) -> int:
        """Grid points of the surface tiles in scope that are done."""
        rows = sa.case((Tile.iy1 > Tile.iy0, Tile.iy1 - Tile.iy0), else_=1)
        found = self.rows(
            sa.select(sa.func.coalesce(sa.func.sum((Tile.ix1 - Tile.ix0) * rows), 0))
            .join(Task, Task.id == Tile.task_id)
            .where(Task.status == "done")
        )
        return sum(int(n or 0) for (n,) in found)

    def statuses(self) -> list[tuple[int, str, str]]:
        """(id, kind, status) of every task in scope, by id."""
        return sorted(tuple(r) for r in self.rows(sa.select(Task.id, Task.kind, Task.status)))

    def counts(self) -> dict[str, int]:
        """Tasks in scope by status (every status present, zero when none)."""
        counts = dict.fromkeys(("waiting", "pending", "running", "done", "failed"), 0)
        for status, n in self.rows(sa.select(Task.status, sa.func.count()).group_by(Task.status)):
            counts[status] += int(n)
        return counts


def clock(seconds: float | None) -> str:
    """Seconds as H:MM:SS (``--:--`` when unknown)."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """Progress of this invocation's tasks, drawn on ``stream``."""

    def __init__(
        self,
        stream: IO[str],
        start: dict[str, int],
        enabled: bool,
        *,
        quiet: bool = False,
        scope: Scope | None = None,
        interval: float = LINE_INTERVAL,
        idle: str = "starting workers",
    ) -> None:
        self.stream, self.enabled, self.scope, self.interval = stream, enabled, scope, interval
        self.idle = idle  # what the line says before the first task finishes
        self.start_finished = start["done"] + start["failed"]
        self.start_total = sum(start.values())
        self.start_unfinished = self.start_total - self.start_finished
        self.t0 = time.monotonic()
        self.t_work: float | None = None  # when the first task was seen running or finished
        self.last_line: float | None = None  # the first update prints at once
        self.failed_start = self.failed_seen = start["failed"]
        self.reported: set[int] = set()
        if scope is not None and enabled:
            self.reported = {row[0] for row in scope.failed()}
        self.points_start = scope.grid_points_done() if scope is not None and enabled else 0
        self.points = self.points_start
        self.done_seen = start["done"]
        self.live = _rich_bar(stream) if enabled and not quiet and _isatty(stream) else None
        self.dashboard_shown = False

    # --- what is shown ---------------------------------------------------------------------

    def numbers(self, counts: dict[str, int], now: float) -> dict[str, Any]:
        """This run's done/total, rate (tasks/s), elapsed, ETA (s) and grid points/s."""
        finished = counts["done"] + counts["failed"] - self.start_finished
        total = self.start_unfinished + max(0, sum(counts.values()) - self.start_total)
        if self.t_work is None and (counts["running"] or finished > 0):
            self.t_work = now
        working = now - self.t_work if self.t_work is not None else 0.0
        rate = finished / working if finished > 0 and working > 0 else None
        eta = (total - finished) / rate if rate else None
        points = self.points - self.points_start
        return {
            "finished": finished, "total": total, "rate": rate, "elapsed": now - self.t0,
            "eta": eta, "points_per_s": points / working if points and working > 0 else None,
            "running": counts["running"], "failed": counts["failed"] - self.failed_start,
        }  # fmt: skip

    def line(self, n: dict[str, Any]) -> str:
        rate = self.idle if n["rate"] is None and n["finished"] == 0 else (
            f"{n['rate']:.2f} tasks/s" if n["rate"] else "0 tasks/s"
        )  # fmt: skip
        points = f", {n['points_per_s']:,.0f} points/s" if n["points_per_s"] else ""
        return (
            f"{n['finished']}/{n['total']} tasks, {rate}{points}, elapsed {clock(n['elapsed'])}, "
            f"ETA {clock(n['eta'])}, running {n['running']}, failed {n['failed']}"
        )

    # --- updates ---------------------------------------------------------------------------

    def update(self, counts: dict[str, int], final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.scope is not None and counts["done"] != self.done_seen:
            self.done_seen = counts["done"]
            self.points = self.scope.grid_points_done()
        if self.scope is not None and counts["failed"] != self.failed_seen:
            self.failed_seen = counts["failed"]
            self._report_failures()
        n = self.numbers(counts, now)
        if self.live is not None:
            self.live.show(n, self.line(n), final)
        elif final or self.last_line is None or now - self.last_line >= self.interval:
            self.last_line = now
            self._print(self.line(n))

    def _report_failures(self) -> None:
        assert self.scope is not None
        for task_id, study, kind, message in self.scope.failed():
            if task_id not in self.reported:
                self.reported.add(task_id)
                self._print(f"task {task_id} [{study}/{kind}] failed: {message}")

    def note_dashboard(self, link: str | None) -> None:
        """Print the Dask dashboard's address, once."""
        if self.enabled and link and not self.dashboard_shown:
            self.dashboard_shown = True
            self._print(f"Dask dashboard: {link}")

    def note(self, text: str) -> None:
        """Print one line even with progress off (a hint the user must see), above the bar."""
        if self.live is not None:
            self.live.print(text)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Stop the live bar (an interrupted wait must not leave it drawing)."""
        if self.live is not None:
            self.live.progress.stop()

    def _print(self, text: str) -> None:
        if self.live is not None:
            self.live.print(text)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()


def _isatty(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class _RichBar:
    """A live bar on a terminal; lines printed through it appear above the bar."""

    def __init__(self, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
        from rich.progress import Progress as RichProgress

        self.progress = RichProgress(
            BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[text]}"),
            console=Console(file=stream), transient=False, auto_refresh=False,
        )  # fmt: skip
        self.task = self.progress.add_task("work", total=None, text="starting workers")
        self.progress.start()

    def show(self, n: dict[str, Any], text: str, final: bool) -> None:
        detail = text.split(", ", 1)[1] if ", " in text else text
        self.progress.update(self.task, total=n["total"] or None, completed=n["finished"],
                             text=detail)  # fmt: skip
        self.progress.refresh()
        if final:
            self.progress.stop()

    def print(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False)


def _rich_bar(stream: IO[str]) -> _RichBar | None:
    try:
        return _RichBar(stream)
    except ImportError:  # no rich: plain lines, redrawn every interval
        return None
