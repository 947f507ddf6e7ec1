"""The work queue: one claim mechanism for every kind of task.

A claim takes the first ready task (pending, or running with an expired lease, with every
dependency done) and stamps it with a fresh lease token and an expiry from the database
clock. PostgreSQL locks the row with ``FOR UPDATE SKIP LOCKED`` so concurrent claimers pass
each other; SQLite serialises claimers with ``BEGIN IMMEDIATE``. Heartbeats, completion and
failure are compare-and-swap updates on the lease token: a worker whose lease was taken over
changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, aliased

from tracker._db import Database, utcnow, utcnow_plus
from tracker._exceptions import NotFound, QueueError
from tracker._schema import Study, Task, TaskDependency

DEFAULT_LEASE_SECONDS = 60.0
ERROR_TEXT_LIMIT = 20_000

_tasks = Task.__table__
_deps = TaskDependency.__table__


class _LeaseGone(Exception):
    """Internal: the compare-and-swap on the lease token matched no row."""


@dataclass(frozen=True)
class ClaimedTask:
    """A task this worker holds a lease on."""

    id: int
    kind: str
    study_id: int
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    lease_token: str


def spec_hash(*parts: Any) -> str:
    """A stable hash of JSON-serialisable parts: the identity of an enqueued spec."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def get_or_create_study(session: Session, name: str, description: str | None = None) -> Study:
    """The study called ``name``, created if it does not exist yet."""
    study = session.scalar(sa.select(Study).where(Study.name == name))
    if study is not None:
        return study
    try:
        with session.begin_nested():
            study = Study(name=name, description=description)
            session.add(study)
    except sa_exc.IntegrityError:
        study = session.scalar(sa.select(Study).where(Study.name == name))
        assert study is not None
    return study


def find_study(session: Session, name: str) -> Study:
    study = session.scalar(sa.select(Study).where(Study.name == name))
    if study is None:
        known = session.scalars(sa.select(Study.name).order_by(Study.id).limit(10)).all()
        hint = f" (known: {', '.join(known)})" if known else " (the database has no studies yet)"
        raise NotFound(f"unknown study {name!r}{hint}: check `tracker status`")
    return study


def find_task(session: Session, task_id: int) -> Task:
    task = session.get(Task, task_id)
    if task is None:
        raise NotFound(f"unknown task id {task_id}: `tracker status` lists the studies and tasks")
    return task


def enqueue(
    session: Session,
    study: Study,
    kind: str,
    payload: dict[str, Any],
    *,
    depends_on: Iterable[Task] = (),
    priority: int = 0,
    max_attempts: int = 3,
    key: Any = None,
) -> tuple[Task, bool]:
    """Add a task unless the same spec is queued already; return it and whether it is new.

    The spec hash covers the study, the kind, the payload and an optional ``key``, so
    enqueueing the same spec twice is a no-op: resubmission is how a user resumes.
    """
    digest = spec_hash(study.name, kind, payload, key)
    task = session.scalar(sa.select(Task).where(Task.spec_hash == digest))
    if task is not None:
        return task, False
    parents = list(depends_on)
    try:
        with session.begin_nested():
            task = Task(
                study_id=study.id,
                kind=kind,
                spec_hash=digest,
                payload=payload,
                priority=priority,
                max_attempts=max_attempts,
            )
            session.add(task)
            session.flush()
            for parent in parents:
                session.add(TaskDependency(task_id=task.id, depends_on_id=parent.id))
    except sa_exc.IntegrityError:
        task = session.scalar(sa.select(Task).where(Task.spec_hash == digest))
        assert task is not None
        return task, False
    return task, True


class Queue:
    """Claim, heartbeat, complete and fail tasks on one database."""

    def __init__(self, db: Database, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self.db = db
        self.lease_seconds = float(lease_seconds)
        parent = aliased(Task)
        self._unfinished_dependency = (
            sa.select(sa.literal(1))
            .select_from(_deps.join(parent, parent.id == _deps.c.depends_on_id))
            .where(_deps.c.task_id == _tasks.c.id, parent.status != "done")
            .exists()
        )

    def claim(
        self,
        worker: str,
        kinds: Sequence[str] | None = None,
        study_ids: Sequence[int] | None = None,
    ) -> ClaimedTask | None:
        """Lease the first ready task, or return None when nothing is claimable now.

        An expired lease is reclaimed here; one whose task has used all its attempts is
        failed instead, with the reason stored, and the claim moves on.
        """
        expired = sa.and_(_tasks.c.status == "running", _tasks.c.lease_expires_at < utcnow())
        query = (
            sa.select(
                _tasks.c.id,
                _tasks.c.kind,
                _tasks.c.study_id,
                _tasks.c.payload,
                _tasks.c.status,
                _tasks.c.attempts,
                _tasks.c.max_attempts,
                _tasks.c.worker,
            )
            .where(sa.or_(_tasks.c.status == "pending", expired), ~self._unfinished_dependency)
            .order_by(_tasks.c.priority.desc(), _tasks.c.id)
            .limit(1)
            .with_for_update(skip_locked=True, of=_tasks)
        )
        if kinds is not None:
            query = query.where(_tasks.c.kind.in_(list(kinds)))
        if study_ids is not None:
            query = query.where(_tasks.c.study_id.in_(list(study_ids)))
        while True:
            with self.db.connection() as conn:
                row = conn.execute(query).first()
                if row is None:
                    return None
                if row.status == "running" and row.attempts >= row.max_attempts:
                    message = (
                        f"lease expired on attempt {row.attempts} of {row.max_attempts} "
                        f"(worker {row.worker} stopped answering)"
                    )
                    conn.execute(
                        _tasks.update()
                        .where(_tasks.c.id == row.id)
                        .values(
                            status="failed",
                            error=message,
                            lease_token=None,
                            lease_expires_at=None,
                            finished_at=utcnow(),
                        )
                    )
                    _fail_dependents(conn, [row.id])
                    continue
                token = uuid.uuid4().hex
                conn.execute(
                    _tasks.update()
                    .where(_tasks.c.id == row.id)
                    .values(
                        status="running",
                        lease_token=token,
                        lease_expires_at=utcnow_plus(self.lease_seconds),
                        heartbeat_at=utcnow(),
                        started_at=utcnow(),
                        finished_at=None,
                        worker=worker[:200],
                        attempts=_tasks.c.attempts + 1,
                    )
                )
                return ClaimedTask(
                    id=row.id,
                    kind=row.kind,
                    study_id=row.study_id,
                    payload=row.payload or {},
                    attempt=row.attempts + 1,
                    max_attempts=row.max_attempts,
                    lease_token=token,
                )

    def _held(self, task: ClaimedTask) -> sa.ColumnElement[bool]:
        return sa.and_(
            _tasks.c.id == task.id,
            _tasks.c.lease_token == task.lease_token,
            _tasks.c.status == "running",
        )

    def heartbeat(self, task: ClaimedTask) -> bool:
        """Extend the lease; False means the lease was lost to another worker."""
        with self.db.connection() as conn:
            result = conn.execute(
                _tasks.update()
                .where(self._held(task))
                .values(lease_expires_at=utcnow_plus(self.lease_seconds), heartbeat_at=utcnow())
            )
            return result.rowcount == 1

    def complete(
        self,
        task: ClaimedTask,
        result: dict[str, Any] | None = None,
        on_commit: Callable[[Session], None] | None = None,
    ) -> bool:
        """Mark the task done if this worker still holds its lease.

        ``on_commit`` writes the task's result rows in the same transaction, so the rows and
        the done mark land together or not at all. Returns False (and writes nothing) when
        the lease was lost.
        """
        try:
            with self.db.session() as session:
                updated = session.execute(
                    _tasks.update()
                    .where(self._held(task))
                    .values(
                        status="done",
                        result=result,
                        lease_token=None,
                        lease_expires_at=None,
                        finished_at=utcnow(),
                    ),
                    execution_options={"synchronize_session": False},
                )
                if updated.rowcount != 1:
                    raise _LeaseGone
                if on_commit is not None:
                    on_commit(session)
        except _LeaseGone:
            return False
        return True

    def fail(self, task: ClaimedTask, error: str, *, retry: bool = True) -> str | None:
        """Record an error; the task goes back to pending, or fails once out of attempts.

        Returns the new status, or None when the lease had been lost already.
        """
        error = error[-ERROR_TEXT_LIMIT:]
        final = (not retry) or task.attempt >= task.max_attempts
        status = "failed" if final else "pending"
        with self.db.connection() as conn:
            updated = conn.execute(
                _tasks.update()
                .where(self._held(task))
                .values(
                    status=status,
                    error=f"attempt {task.attempt}/{task.max_attempts}: {error}",
                    lease_token=None,
                    lease_expires_at=None,
                    finished_at=utcnow() if final else None,
                )
            )
            if updated.rowcount != 1:
                return None
            if final:
                _fail_dependents(conn, [task.id])
        return status

    def active(
        self, kinds: Sequence[str] | None = None, study_ids: Sequence[int] | None = None
    ) -> bool:
        """Whether any task is running under a live lease (it may unblock others)."""
        query = sa.select(_tasks.c.id).where(
            _tasks.c.status == "running", _tasks.c.lease_expires_at >= utcnow()
        )
        if kinds is not None:
            query = query.where(_tasks.c.kind.in_(list(kinds)))
        if study_ids is not None:
            query = query.where(_tasks.c.study_id.in_(list(study_ids)))
        with self.db.engine.connect() as conn:
            return conn.execute(query.limit(1)).first() is not None


def _fail_dependents(conn: sa.Connection, failed_ids: list[int]) -> None:
    """Fail every pending task that (transitively) depends on a failed one."""
    frontier = list(failed_ids)
    while frontier:
        rows = conn.execute(
            sa.select(_deps.c.task_id, _deps.c.depends_on_id)
            .join(_tasks, _tasks.c.id == _deps.c.task_id)
            .where(_deps.c.depends_on_id.in_(frontier), _tasks.c.status == "pending")
        ).all()
        frontier = []
        for child, parent in rows:
            conn.execute(
                _tasks.update()
                .where(_tasks.c.id == child, _tasks.c.status == "pending")
                .values(
                    status="failed",
                    error=f"dependency task {parent} failed",
                    finished_at=utcnow(),
                )
            )
            frontier.append(child)


def requeue(session: Session, task_ids: Iterable[int]) -> list[int]:
    """Put tasks (and the dependents that failed because of them) back to pending.

    Attempts restart from zero. Returns the ids that were requeued.
    """
    ids = sorted(set(task_ids))
    for task_id in ids:
        task = find_task(session, task_id)
        if task.status == "running":
            raise QueueError(
                f"task {task_id} is running under a live lease: wait for it or for its lease to expire"
            )
    todo = list(ids)
    seen: set[int] = set()
    while todo:
        batch = [t for t in todo if t not in seen]
        seen.update(batch)
        if not batch:
            break
        todo = list(
            session.scalars(
                sa.select(_deps.c.task_id)
                .join(_tasks, _tasks.c.id == _deps.c.task_id)
                .where(_deps.c.depends_on_id.in_(batch), _tasks.c.status == "failed")
            )
        )
    session.execute(
        _tasks.update()
        .where(_tasks.c.id.in_(seen))
        .values(
            status="pending",
            attempts=0,
            lease_token=None,
            lease_expires_at=None,
            finished_at=None,
        ),
        execution_options={"synchronize_session": False},
    )
    return sorted(seen)
