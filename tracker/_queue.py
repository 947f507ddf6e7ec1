"""The work queue: one claim mechanism for every kind of task.

A task whose dependencies are not all done is ``waiting``; the transaction that completes
its last dependency makes it ``pending``. A claim takes the first pending task in
(priority, id) order straight off an index (lower priority first), or reclaims a running
task whose lease expired, and stamps it with a fresh lease token and an expiry from the
database clock. PostgreSQL
locks the row with ``FOR UPDATE SKIP LOCKED`` so concurrent claimers pass each other; SQLite
serialises claimers with ``BEGIN IMMEDIATE``. Heartbeats, completion and failure are
compare-and-swap updates on the lease token: a worker whose lease was taken over changes
nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, aliased

from tracker._db import Database, utcnow
from tracker._exceptions import NotFound, QueueError, SpecError
from tracker._retry import retrying
from tracker._schema import Study, Task, TaskDependency
from tracker._wake import notify_workers

DEFAULT_LEASE_SECONDS = 60.0
# A task may lose its lease this many times (its worker died) before it fails: a budget of its
# own, larger than the attempts, which count only runs that raised.
DEFAULT_MAX_LEASE_LOSSES = 10
ERROR_TEXT_LIMIT = 20_000

_tasks = cast(sa.Table, Task.__table__)
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
    # Earlier runs of this attempt whose worker died (their lease was taken over).
    lease_losses: int = 0


def spec_hash(*parts: Any) -> str:
    """A stable hash of JSON-serialisable parts: the identity of an enqueued spec."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


STUDY_NAME_LIMIT = 200  # the column's length


def check_study_name(name: str) -> str:
    """``name`` if it can name a study: 1-200 printable characters (no NUL or control codes)."""
    if not isinstance(name, str) or not name.strip():
        raise SpecError("a study name must be a non-empty string")
    if len(name) > STUDY_NAME_LIMIT:
        raise SpecError(
            f"study name of {len(name)} characters is too long: at most {STUDY_NAME_LIMIT}"
        )
    if any(not ch.isprintable() for ch in name):
        raise SpecError(f"study name {name!r} contains control characters: use printable text")
    return name


def get_or_create_study(session: Session, name: str, description: str | None = None) -> Study:
    """The study called ``name``, created if it does not exist yet."""
    check_study_name(name)
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


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None: JSON has no such numbers (PostgreSQL's JSONB
    refuses them), yet a task's summary may hold them, e.g. the accuracy of a regression."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# The task ids an enqueue command touched (made, or found already queued), while it records:
# what `tracker enqueue ... --wait` waits for (tracker._wait).
_touched: ContextVar[list[int] | None] = ContextVar("tracker_touched_tasks", default=None)


@contextmanager
def recording_tasks() -> Iterator[list[int]]:
    """Collect the id of every task ``enqueue`` makes or finds (and of every result row's
    task that ``tracker._rows.get_or_add`` finds) while the block runs."""
    ids: list[int] = []
    token = _touched.set(ids)
    try:
        yield ids
    finally:
        _touched.reset(token)


def note_task(task_id: int | None) -> None:
    """Record ``task_id`` for the enclosing ``recording_tasks`` block, if any."""
    ids = _touched.get()
    if ids is not None and task_id is not None:
        ids.append(int(task_id))


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
    needs_gpu: bool = False,
) -> tuple[Task, bool]:
    """Add a task unless the same spec is queued already; return it and whether it is new.

    The spec hash covers the study, the kind, the payload and an optional ``key``, so
    enqueueing the same spec twice is a no-op: resubmission is how a user resumes.
    ``needs_gpu`` tasks are claimed only by workers started with ``--cuda``.
    """
    digest = spec_hash(study.name, kind, payload, key)
    task = session.scalar(sa.select(Task).where(Task.spec_hash == digest))
    if task is not None:
        note_task(task.id)
        return task, False
    parents = list({p.id: p for p in depends_on}.values())  # each parent once
    status, error = "pending", None
    if parents:
        # Lock the parents (FOR SHARE) so none can finish between this check and our commit
        # unseen: the completing transaction must find this task to release it.
        states = dict(
            session.execute(
                sa.select(_tasks.c.id, _tasks.c.status)
                .where(_tasks.c.id.in_([p.id for p in parents]))
                .with_for_update(read=True)
            ).all()
        )
        failed = sorted(pid for pid, st in states.items() if st == "failed")
        if failed:
            status, error = "failed", f"dependency task {failed[0]} failed"
        elif any(st != "done" for st in states.values()):
            status = "waiting"
    try:
        with session.begin_nested():
            task = Task(
                study_id=study.id,
                kind=kind,
                spec_hash=digest,
                payload=payload,
                priority=priority,
                max_attempts=max_attempts,
                status=status,
                error=error,
                needs_gpu=bool(needs_gpu),
            )
            session.add(task)
            session.flush()
            for parent in parents:
                session.add(TaskDependency(task_id=task.id, depends_on_id=parent.id))
            if status == "pending":
                notify_workers(session.connection())
    except sa_exc.IntegrityError:
        task = session.scalar(sa.select(Task).where(Task.spec_hash == digest))
        assert task is not None
        note_task(task.id)
        return task, False
    note_task(task.id)
    return task, True


# Rebuilds a study's ``measures`` rows (registered by tracker.meta.kinds); asked for whenever
# a task of a kind registered with ``measures=True`` finishes.
MEASURES_REFRESH = "measures.refresh"
# After every other pending task: while a sweep runs, one refresh waits at the back of the
# queue and every result that finishes meanwhile is covered by it.
REFRESH_PRIORITY = 1000


def request_measures_refresh(session: Session, study_id: int, after_task: int) -> bool:
    """Ask for a rebuild of the study's measures, unless one is already pending (it will read
    the results as they are when it runs). Called in the transaction that marks ``after_task``
    done; True if a refresh task was added."""
    pending = session.execute(
        sa.select(_tasks.c.id).where(
            _tasks.c.study_id == study_id, _tasks.c.kind == MEASURES_REFRESH,
            _tasks.c.status == "pending",
        ).limit(1)
    ).first()  # fmt: skip
    if pending is not None:
        return False
    study = session.get(Study, study_id)
    if study is None:
        return False
    task, new = enqueue(session, study, MEASURES_REFRESH, {"study_id": study_id},
                        key=["after", after_task], priority=REFRESH_PRIORITY)  # fmt: skip
    if new or task.status in ("pending", "running", "waiting"):
        return new
    # ``after_task`` ran again (tracker requeue): the refresh it asked for the first time has
    # finished, so the same row goes back to the queue rather than being skipped as a duplicate.
    session.execute(
        _tasks.update()
        .where(_tasks.c.id == task.id)
        .values(
            status="pending", attempts=0, error=None, lease_token=None, lease_expires_at=None,
            finished_at=None,
        ),
        execution_options={"synchronize_session": False},
    )
    return True


# The hot path's statements are built once; each call only binds values.
_t = _tasks.c
_CLAIM_COLUMNS = (_t.id, _t.kind, _t.study_id, _t.payload, _t.status, _t.attempts,
                  _t.max_attempts, _t.worker, _t.lease_losses)  # fmt: skip
_HELD = sa.and_(
    _t.id == sa.bindparam("tid"),
    _t.lease_token == sa.bindparam("token"),
    _t.status == "running",
)
_LEASE_END = utcnow(sa.bindparam("lease", type_=sa.Double()))
_MARK_RUNNING = (
    _tasks.update()
    .where(_t.id.in_(sa.bindparam("tids", expanding=True)))
    .values(
        status="running",
        lease_token=sa.bindparam("token"),
        lease_expires_at=_LEASE_END,
        heartbeat_at=utcnow(),
        started_at=utcnow(),
        finished_at=None,
        worker=sa.bindparam("worker"),
        attempts=_t.attempts + 1,
    )
)
# An expired lease is taken over without using an attempt: the run did not fail, its worker
# died. The loss is counted against the task's lease budget instead.
_MARK_RECLAIMED = (
    _tasks.update()
    .where(_t.id == sa.bindparam("tid"))
    .values(
        status="running",
        lease_token=sa.bindparam("token"),
        lease_expires_at=_LEASE_END,
        heartbeat_at=utcnow(),
        started_at=utcnow(),
        worker=sa.bindparam("worker"),
        lease_losses=_t.lease_losses + 1,
    )
)
_MARK_EXHAUSTED = (
    _tasks.update()
    .where(_t.id == sa.bindparam("tid"))
    .values(
        status="failed",
        error=sa.bindparam("error"),
        lease_token=None,
        lease_expires_at=None,
        finished_at=utcnow(),
    )
)
_HEARTBEAT = (
    _tasks.update()
    .where(
        _t.id.in_(sa.bindparam("tids", expanding=True)),
        _t.lease_token == sa.bindparam("token"),
        _t.status == "running",
    )
    .values(lease_expires_at=_LEASE_END, heartbeat_at=utcnow())
)
_MARK_DONE = (
    _tasks.update()
    .where(_HELD)
    .values(
        status="done",
        result=sa.bindparam("result", type_=_t.result.type),
        lease_token=None,
        lease_expires_at=None,
        finished_at=utcnow(),
    )
)
_MARK_FAILED_OR_RETRY = (
    _tasks.update()
    .where(_HELD)
    .values(
        status=sa.bindparam("status"),
        error=sa.bindparam("error"),
        lease_token=None,
        lease_expires_at=None,
        finished_at=sa.case((sa.bindparam("final", type_=sa.Boolean()), utcnow()), else_=None),
    )
)
# A run interrupted by the database itself (an outage outlasting the retries inside the run):
# back to pending with its attempt refunded; it counts against the lease budget instead.
_MARK_RELEASED = (
    _tasks.update()
    .where(_HELD)
    .values(
        status="pending",
        error=sa.bindparam("error"),
        lease_token=None,
        lease_expires_at=None,
        attempts=sa.case((_t.attempts > 0, _t.attempts - 1), else_=0),
        lease_losses=_t.lease_losses + 1,
    )
)
_parent = _tasks.alias("parent")
_UNFINISHED_PARENT = (
    sa.select(sa.literal(1))
    .select_from(_deps.join(_parent, _parent.c.id == _deps.c.depends_on_id))
    .where(_deps.c.task_id == _t.id, _parent.c.status != "done")
    .exists()
)
_LOCK_WAITING_CHILDREN = (
    sa.select(_t.id)
    .where(
        _t.id.in_(
            sa.select(_deps.c.task_id)
            .where(_deps.c.depends_on_id.in_(sa.bindparam("done_ids", expanding=True)))
            .scalar_subquery()
        ),
        _t.status == "waiting",
    )
    .order_by(_t.id)
    .with_for_update()
)
_RELEASE = (
    _tasks.update()
    .where(
        _t.id.in_(sa.bindparam("ids", expanding=True)),
        _t.status == "waiting",
        ~_UNFINISHED_PARENT,
    )
    .values(status="pending")
)


@functools.lru_cache(maxsize=64)
def _claim_queries(
    kinds: tuple[str, ...] | None, study_ids: tuple[int, ...] | None, gpu: bool = False
) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """(expired leases, pending tasks), each locking at most ``n`` rows, skipping locked ones.

    Without a GPU only tasks that do not need one; a GPU worker takes those first (it is the
    only kind of worker that can), then anything.
    """
    expired = (
        sa.select(*_CLAIM_COLUMNS)
        .where(_t.status == "running", _t.lease_expires_at < utcnow())
        .order_by(_t.lease_expires_at)
    )
    pending = sa.select(*_CLAIM_COLUMNS).where(_t.status == "pending")
    if gpu:
        pending = pending.order_by(_t.needs_gpu.desc(), _t.priority, _t.id)
    else:
        pending = pending.order_by(_t.priority, _t.id)
    queries = []
    for query in (expired, pending):
        if not gpu:
            query = query.where(_t.needs_gpu == sa.false())
        if kinds is not None:
            query = query.where(_t.kind.in_(kinds))
        if study_ids is not None:
            query = query.where(_t.study_id.in_(study_ids))
        queries.append(query.limit(sa.bindparam("n")).with_for_update(skip_locked=True, of=_tasks))
    return queries[0], queries[1]


class Queue:
    """Claim, heartbeat, complete and fail tasks on one database."""

    def __init__(
        self,
        db: Database,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        *,
        max_lease_losses: int = DEFAULT_MAX_LEASE_LOSSES,
        retry_seconds: float | None = None,
        gpu: bool = False,
    ) -> None:
        self.db = db
        # Whether this worker has a GPU: only then does it claim tasks that need one.
        self.gpu = bool(gpu)
        self.lease_seconds = float(lease_seconds)
        self.max_lease_losses = int(max_lease_losses)
        # Transient database errors (a restart, a dropped connection) are retried this long.
        self.retry_seconds = retry_seconds
        # Expired leases are looked for at most every quarter lease (and whenever nothing is
        # pending), so a claim is usually one indexed read and one update.
        self._expired_every = self.lease_seconds / 4.0
        self._next_expired_check = 0.0
        self._relaxed = db.dialect == "postgresql"

    def _relax_durability(self, conn: sa.Connection) -> None:
        """Claims and heartbeats need not wait for the WAL flush (PostgreSQL).

        If the server crashed right after, the lost claim or heartbeat only means the task
        is claimed again; the old holder's compare-and-swap then fails. Completions stay
        durable.
        """
        if self._relaxed:
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")

    def claim(
        self,
        worker: str,
        kinds: Sequence[str] | None = None,
        study_ids: Sequence[int] | None = None,
    ) -> ClaimedTask | None:
        """Lease the next task, or return None when nothing is claimable now."""
        batch = self.claim_batch(worker, 1, kinds, study_ids)
        return batch[0] if batch else None

    def claim_batch(
        self,
        worker: str,
        limit: int,
        kinds: Sequence[str] | None = None,
        study_ids: Sequence[int] | None = None,
    ) -> list[ClaimedTask]:
        """Lease up to ``limit`` tasks in one transaction, under one lease token.

        A running task whose lease expired comes first, alone, and keeps its attempt count
        (its worker died; the task did not fail); one that has lost its lease
        ``max_lease_losses`` times is failed here instead, with the reason stored, and the
        claim moves on. Batches let a worker running short tasks pay for one claim per
        batch, not per task. Transient database errors are retried (``retry_seconds``).
        """
        return retrying(
            lambda: self._claim_batch(worker, limit, kinds, study_ids),
            what="a claim",
            window=self.retry_seconds,
        )

    def _claim_batch(
        self,
        worker: str,
        limit: int,
        kinds: Sequence[str] | None,
        study_ids: Sequence[int] | None,
    ) -> list[ClaimedTask]:
        expired, pending = _claim_queries(
            tuple(kinds) if kinds is not None else None,
            tuple(study_ids) if study_ids is not None else None,
            self.gpu,
        )
        while True:
            with self.db.connection() as conn:
                self._relax_durability(conn)
                rows: Sequence[Any] = []
                looked_for_expired = False
                now = time.monotonic()
                if now >= self._next_expired_check:
                    rows, looked_for_expired = conn.execute(expired, {"n": 1}).all(), True
                    self._next_expired_check = now + self._expired_every
                if not rows:
                    rows = conn.execute(pending, {"n": max(int(limit), 1)}).all()
                if not rows and not looked_for_expired:
                    rows = conn.execute(expired, {"n": 1}).all()
                if not rows:
                    return []
                exhausted = [
                    r
                    for r in rows
                    if r.status == "running" and r.lease_losses >= self.max_lease_losses
                ]
                for row in exhausted:
                    message = (
                        f"lost its lease {row.lease_losses + 1} times (the last worker, "
                        f"{row.worker}, stopped answering): the workers running it keep dying "
                        "(killed, out of memory?); `tracker requeue` retries it"
                    )
                    conn.execute(_MARK_EXHAUSTED, {"tid": row.id, "error": message})
                    _fail_dependents(conn, [row.id])
                if exhausted:
                    continue
                token = uuid.uuid4().hex
                reclaimed = rows[0].status == "running"
                if reclaimed:
                    conn.execute(
                        _MARK_RECLAIMED,
                        {"tid": rows[0].id, "token": token, "lease": self.lease_seconds,
                         "worker": worker[:200]},
                    )  # fmt: skip
                else:
                    conn.execute(
                        _MARK_RUNNING,
                        {"tids": [r.id for r in rows], "token": token,
                         "lease": self.lease_seconds, "worker": worker[:200]},
                    )  # fmt: skip
                return [
                    ClaimedTask(
                        id=row.id,
                        kind=row.kind,
                        study_id=row.study_id,
                        payload=row.payload or {},
                        attempt=max(row.attempts, 1) if reclaimed else row.attempts + 1,
                        max_attempts=row.max_attempts,
                        lease_token=token,
                        lease_losses=row.lease_losses + reclaimed,
                    )
                    for row in rows
                ]

    def heartbeat(self, task: ClaimedTask) -> bool:
        """Extend the lease; False means the lease was lost to another worker."""
        return self.heartbeat_batch([task])

    def heartbeat_batch(self, tasks: Sequence[ClaimedTask]) -> bool:
        """Extend the leases of tasks claimed together; False if any of them was lost."""
        if not tasks:
            return True
        with self.db.connection() as conn:
            self._relax_durability(conn)
            params = {
                "tids": [t.id for t in tasks],
                "token": tasks[0].lease_token,
                "lease": self.lease_seconds,
            }
            return conn.execute(_HEARTBEAT, params).rowcount == len(tasks)

    def complete(
        self,
        task: ClaimedTask,
        result: dict[str, Any] | None = None,
        on_commit: Callable[[Session], None] | None = None,
    ) -> bool:
        """Mark the task done if this worker still holds its lease, and release its dependents.

        ``on_commit`` writes the task's result rows in the same transaction, so the rows and
        the done mark land together or not at all. Returns False (and writes nothing) when
        the lease was lost.
        """
        if on_commit is None:
            return self.complete_batch([(task, result)]) == [True]
        return retrying(
            lambda: self._complete(task, result, on_commit),
            what=f"completing task {task.id}",
            window=self.retry_seconds,
        )

    def _complete(
        self,
        task: ClaimedTask,
        result: dict[str, Any] | None,
        on_commit: Callable[[Session], None],
    ) -> bool:
        # Retried whole after a transient error: the transaction rolled back, and if its
        # commit did land before the connection broke, the compare-and-swap now fails.
        params = {"tid": task.id, "token": task.lease_token, "result": json_safe(result)}
        try:
            with self.db.session() as session:
                conn = session.connection()
                if conn.execute(_MARK_DONE, params).rowcount != 1:
                    raise _LeaseGone
                _release_dependents(conn, [task.id])
                on_commit(session)
        except _LeaseGone:
            return False
        return True

    def complete_batch(
        self, finished: Sequence[tuple[ClaimedTask, dict[str, Any] | None]]
    ) -> list[bool]:
        """Mark several finished tasks done in one durable commit; True where the lease held.

        Each task is still a compare-and-swap on its own lease token: one whose lease was
        lost is left alone while the others are marked.
        """
        if not finished:
            return []
        return retrying(
            lambda: self._complete_batch(finished),
            what=f"completing {len(finished)} task(s)",
            window=self.retry_seconds,
        )

    def _complete_batch(
        self, finished: Sequence[tuple[ClaimedTask, dict[str, Any] | None]]
    ) -> list[bool]:
        with self.db.connection() as conn:
            marked = [
                conn.execute(
                    _MARK_DONE,
                    {"tid": task.id, "token": task.lease_token, "result": json_safe(result)},
                ).rowcount
                == 1
                for task, result in finished
            ]
            done_ids = [task.id for (task, _), ok in zip(finished, marked, strict=True) if ok]
            if done_ids:
                _release_dependents(conn, done_ids)
        return marked

    def fail(self, task: ClaimedTask, error: str, *, retry: bool = True) -> str | None:
        """Record an error; the task goes back to pending, or fails once out of attempts.

        Returns the new status, or None when the lease had been lost already.
        """
        final = (not retry) or task.attempt >= task.max_attempts
        status = "failed" if final else "pending"
        params = {
            "tid": task.id,
            "token": task.lease_token,
            "status": status,
            "final": final,
            "error": f"attempt {task.attempt}/{task.max_attempts}: {error[-ERROR_TEXT_LIMIT:]}",
        }

        def record() -> str | None:
            with self.db.connection() as conn:
                if conn.execute(_MARK_FAILED_OR_RETRY, params).rowcount != 1:
                    return None
                if final:
                    _fail_dependents(conn, [task.id])
                else:
                    notify_workers(conn)
            return status

        return retrying(record, what=f"recording task {task.id}'s error", window=self.retry_seconds)

    def release(self, task: ClaimedTask, error: str) -> bool:
        """Give a task back without using its attempt: the run broke on the database, not on
        its own code. False when the lease had been lost already."""
        params = {"tid": task.id, "token": task.lease_token, "error": error[-ERROR_TEXT_LIMIT:]}

        def record() -> bool:
            with self.db.connection() as conn:
                if conn.execute(_MARK_RELEASED, params).rowcount != 1:
                    return False
                notify_workers(conn)
            return True

        return retrying(record, what=f"releasing task {task.id}", window=self.retry_seconds)

    def active(
        self, kinds: Sequence[str] | None = None, study_ids: Sequence[int] | None = None
    ) -> bool:
        """Whether any task is running under a live lease (it may unblock others)."""
        query = sa.select(_t.id).where(_t.status == "running", _t.lease_expires_at >= utcnow())
        if kinds is not None:
            query = query.where(_t.kind.in_(list(kinds)))
        if study_ids is not None:
            query = query.where(_t.study_id.in_(list(study_ids)))

        def look() -> bool:
            with self.db.engine.connect() as conn:
                return conn.execute(query.limit(1)).first() is not None

        return retrying(look, what="a look at running tasks", window=self.retry_seconds)


def _release_dependents(conn: sa.Connection, done_ids: list[int]) -> None:
    """Make pending every waiting task whose last unfinished dependencies were ``done_ids``.

    The children are locked first (in id order, so two completions cannot deadlock), and
    the readiness check runs after the lock is held: when two parents of one child finish
    at once, the second to get the lock sees the first one's done mark and releases it.
    """
    locked = list(conn.execute(_LOCK_WAITING_CHILDREN, {"done_ids": done_ids}).scalars())
    if locked and conn.execute(_RELEASE, {"ids": locked}).rowcount:
        notify_workers(conn)


def _fail_dependents(conn: sa.Connection, failed_ids: list[int]) -> None:
    """Fail every pending task that (transitively) depends on a failed one."""
    frontier = list(failed_ids)
    while frontier:
        rows = conn.execute(
            sa.select(_deps.c.task_id, _deps.c.depends_on_id)
            .join(_tasks, _tasks.c.id == _deps.c.task_id)
            .where(_deps.c.depends_on_id.in_(frontier), _tasks.c.status == "waiting")
        ).all()
        frontier = []
        for child, parent in rows:
            conn.execute(
                _tasks.update()
                .where(_tasks.c.id == child, _tasks.c.status == "waiting")
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
    # A requeued task waits while any parent is unfinished, requeued parents included.
    parent = aliased(Task)
    unfinished = (
        sa.select(sa.literal(1))
        .select_from(_deps.join(parent, parent.id == _deps.c.depends_on_id))
        .where(_deps.c.task_id == _tasks.c.id, sa.or_(parent.status != "done", parent.id.in_(seen)))
        .exists()
    )
    session.execute(
        _tasks.update()
        .where(_tasks.c.id.in_(seen))
        .values(
            status=sa.case((unfinished, "waiting"), else_="pending"),
            attempts=0,
            lease_token=None,
            lease_expires_at=None,
            finished_at=None,
        ),
        execution_options={"synchronize_session": False},
    )
    notify_workers(session.connection())
    return sorted(seen)
