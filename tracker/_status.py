"""What `tracker status` and `tracker show` report, as plain data."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._db import utcnow
from tracker._exceptions import CorruptArray
from tracker._provenance import describe
from tracker._schema import ArrayRef, Study, Task, TaskBlock

# The store (and Zarr) only for the array checks: `tracker work` and the progress line read
# the queue counts here without loading Zarr.
if TYPE_CHECKING:
    from tracker._store import ArrayStore


@dataclass(frozen=True)
class KindCounts:
    study: str
    kind: str
    waiting: int
    pending: int
    running: int
    done: int
    failed: int
    oldest_running_since: datetime | None
    oldest_lease_expires: datetime | None


@dataclass(frozen=True)
class TaskError:
    task_id: int
    study: str
    kind: str
    status: str
    attempts: int
    max_attempts: int
    message: str


def error_summary(text: str | None) -> str:
    """The line of an error text that says what went wrong (a traceback's last line)."""
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return re.sub(r"^attempt \d+/\d+: ", "", lines[-1]) if lines else ""


def queue_counts(session: Session, study_id: int | None = None) -> list[KindCounts]:
    status_count = {
        status: sa.func.sum(sa.case((Task.status == status, 1), else_=0))
        for status in ("waiting", "pending", "running", "done", "failed")
    }
    running = Task.status == "running"
    query = (
        sa.select(
            Study.name,
            Task.kind,
            *status_count.values(),
            sa.func.min(sa.case((running, Task.started_at))),
            sa.func.min(sa.case((running, Task.lease_expires_at))),
        )
        .join(Study, Study.id == Task.study_id)
        .group_by(Study.id, Study.name, Task.kind)
        .order_by(Study.id, Task.kind)
    )
    if study_id is not None:
        query = query.where(Task.study_id == study_id)
    out = []
    for name, kind, *counts, since, expires in session.execute(query):
        waiting, pending, running_, done, failed = (int(n or 0) for n in counts)
        out.append(KindCounts(name, kind, waiting, pending, running_, done, failed, since, expires))
    return out


def recent_errors(session: Session, study_id: int | None = None, limit: int = 5) -> list[TaskError]:
    """The latest tasks with an error: failed ones, and pending ones that will be retried."""
    query = (
        sa.select(Task, Study.name)
        .join(Study, Study.id == Task.study_id)
        .where(Task.error.is_not(None), Task.status.in_(("failed", "pending")))
        .order_by(sa.func.coalesce(Task.finished_at, Task.started_at).desc(), Task.id.desc())
        .limit(limit)
    )
    if study_id is not None:
        query = query.where(Task.study_id == study_id)
    return [
        TaskError(t.id, name, t.kind, t.status, t.attempts, t.max_attempts, error_summary(t.error))
        for t, name in session.execute(query)
    ]


def expired_leases(session: Session) -> int:
    return int(
        session.scalar(
            sa.select(sa.func.count()).where(
                Task.status == "running", Task.lease_expires_at < utcnow()
            )
        )
        or 0
    )


def broken_arrays(session: Session, store: ArrayStore) -> list[tuple[ArrayRef, str]]:
    """Every referenced array that is missing, damaged or incomplete, with the reason."""
    broken = []
    for ref in session.scalars(sa.select(ArrayRef).order_by(ArrayRef.id)):
        from tracker._store import ArraySpec

        spec = ArraySpec(ref.path, tuple(ref.shape), ref.dtype, tuple(ref.chunks))
        try:
            store.verify(spec)
        except CorruptArray as err:
            broken.append((ref, str(err)))
    return broken


def _overlaps(start: list[int], stop: list[int], lo: tuple[int, ...], hi: tuple[int, ...]) -> bool:
    return all(
        a < h and (b < 0 or b > lo_) for a, b, lo_, h in zip(start, stop, lo, hi, strict=False)
    )


def repair_tasks(session: Session, store: ArrayStore) -> tuple[list[str], set[int]]:
    """What `requeue --broken` says and recomputes: for every damaged array, the tasks that
    wrote its damaged chunks (by their recorded blocks) and the task that recorded the array.

    An array written whole by one task is recomputed by that task.
    """
    lines: list[str] = []
    ids: set[int] = set()
    for ref, why in broken_arrays(session, store):
        lines.append(why)
        from tracker._store import ArraySpec

        spec = ArraySpec(ref.path, tuple(ref.shape), ref.dtype, tuple(ref.chunks))
        damaged = store.damaged_blocks(spec)
        writers = session.scalars(sa.select(TaskBlock).where(TaskBlock.path == ref.path)).all()
        hit = {
            b.task_id
            for b in writers
            for lo, hi, _ in damaged
            if _overlaps(list(b.start), list(b.stop), lo, hi)
        }
        if hit:
            lines.append(
                f"  {len(damaged)} damaged chunk(s); recomputing the task(s) that wrote them: "
                + ", ".join(map(str, sorted(hit)))
            )
        ids |= hit
        if ref.task_id is not None:
            ids.add(ref.task_id)
    return lines, ids


def task_details(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "study": task.study.name,
        "kind": task.kind,
        "status": task.status,
        "attempts": f"{task.attempts}/{task.max_attempts}",
        "worker": task.worker,
        "created": task.created_at,
        "started": task.started_at,
        "finished": task.finished_at,
        "lease expires": task.lease_expires_at,
        "payload": task.payload,
        "result": task.result,
        "provenance": describe(task.provenance),
        "error": task.error,
    }
