"""The worker loop: claim a task, run it under a heartbeat, record the outcome.

It runs the same way inside a Dask worker (``tracker work``) or in a plain process
(tests, benchmarks): the loop needs only a database URL and a store URL.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._db import open_database
from tracker._exceptions import LeaseLost, SpecError
from tracker._queue import DEFAULT_LEASE_SECONDS, ClaimedTask, Queue
from tracker._registry import get_kind, load_plugins
from tracker._schema import ArrayRef
from tracker._store import ArraySpec, ArrayStore

log = logging.getLogger("tracker.worker")


@dataclass
class TaskContext:
    """What a task body sees: its payload, the array store, and its lease."""

    task: ClaimedTask
    store: ArrayStore
    lease_lost: threading.Event = field(default_factory=threading.Event)
    arrays: list[ArraySpec] = field(default_factory=list)

    @property
    def id(self) -> int:
        return self.task.id

    @property
    def payload(self) -> dict[str, Any]:
        return self.task.payload

    @property
    def attempt(self) -> int:
        return self.task.attempt

    def check_lease(self) -> None:
        """Stop early (raise LeaseLost) if another worker has taken this task over."""
        if self.lease_lost.is_set():
            raise LeaseLost(f"task {self.task.id} lost its lease")

    def write_array(
        self, path: str, data: np.ndarray, chunks: tuple[int, ...] | None = None
    ) -> ArraySpec:
        """Write a whole array; its row is recorded when the task is marked done."""
        self.check_lease()
        spec = self.store.write(path, data, chunks)
        self.arrays.append(spec)
        return spec


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker loop needs; picklable so Dask can ship it."""

    db_url: str
    store_url: str
    plugins: tuple[str, ...] = ()
    kinds: tuple[str, ...] | None = None
    study_ids: tuple[int, ...] | None = None
    forever: bool = False
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    poll_seconds: float = 0.2
    max_poll_seconds: float = 2.0
    max_tasks: int | None = None
    name: str | None = None


@dataclass
class WorkerStats:
    worker: str
    done: int = 0
    retried: int = 0
    failed: int = 0
    lost: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Heartbeat(threading.Thread):
    """Extends a task's lease every third of the lease time until stopped."""

    def __init__(self, queue: Queue, task: ClaimedTask, lost: threading.Event) -> None:
        super().__init__(name=f"heartbeat-{task.id}", daemon=True)
        self.queue, self.task, self.lost = queue, task, lost
        self.interval = max(queue.lease_seconds / 3.0, 0.05)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                if not self.queue.heartbeat(self.task):
                    self.lost.set()
                    return
            except Exception:  # a database hiccup: the next beat may still make it in time
                log.warning("heartbeat for task %s failed", self.task.id, exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
        self.join()


def _record_arrays(session: Session, ctx: TaskContext) -> None:
    for spec in ctx.arrays:
        ref = session.scalar(sa.select(ArrayRef).where(ArrayRef.path == spec.path))
        if ref is None:
            ref = ArrayRef(path=spec.path)
            session.add(ref)
        ref.shape, ref.dtype, ref.chunks = list(spec.shape), spec.dtype, list(spec.chunks)
        ref.task_id = ctx.task.id
    session.flush()


def worker_name(suffix: str | None = None) -> str:
    base = f"{socket.gethostname()}:{os.getpid()}"
    return f"{base}:{suffix}" if suffix else base


def execute(queue: Queue, store: ArrayStore, task: ClaimedTask, stats: WorkerStats) -> None:
    """Run one claimed task to its outcome: done, retried, failed, or abandoned (lease lost)."""
    kind = get_kind(task.kind)
    ctx = TaskContext(task=task, store=store)
    beat = _Heartbeat(queue, task, ctx.lease_lost)
    beat.start()
    try:
        result = kind.run(ctx)
    except LeaseLost:
        beat.stop()
        stats.lost += 1
        return
    except Exception as err:
        beat.stop()
        text = "".join(traceback.format_exception(err)).strip()
        status = queue.fail(task, text, retry=not isinstance(err, SpecError))
        if status == "pending":
            stats.retried += 1
        elif status == "failed":
            stats.failed += 1
        else:
            stats.lost += 1
        return
    beat.stop()

    def on_commit(session: Session) -> None:
        _record_arrays(session, ctx)
        if kind.finalize is not None:
            kind.finalize(session, ctx, result)

    needs_rows = bool(ctx.arrays) or kind.finalize is not None
    if queue.complete(task, result, on_commit=on_commit if needs_rows else None):
        stats.done += 1
    else:
        stats.lost += 1


def run_worker(cfg: WorkerConfig) -> dict[str, Any]:
    """Claim and run tasks until the queue is drained (or forever); return counts."""
    known = load_plugins(cfg.plugins)
    kinds = [k for k in known if cfg.kinds is None or k in cfg.kinds]
    db = open_database(cfg.db_url)
    store = ArrayStore(cfg.store_url)
    queue = Queue(db, lease_seconds=cfg.lease_seconds)
    name = cfg.name or worker_name(threading.current_thread().name)
    stats = WorkerStats(worker=name)
    studies = list(cfg.study_ids) if cfg.study_ids is not None else None
    pause = cfg.poll_seconds
    handled = 0
    try:
        while cfg.max_tasks is None or handled < cfg.max_tasks:
            task = queue.claim(name, kinds, studies)
            if task is None and not cfg.forever and not queue.active(kinds, studies):
                # Nothing runs anywhere that could unblock more work: one last look, then stop.
                task = queue.claim(name, kinds, studies)
                if task is None:
                    break
            if task is None:
                time.sleep(pause)
                pause = min(pause * 1.5, cfg.max_poll_seconds)
                continue
            pause = cfg.poll_seconds
            execute(queue, store, task, stats)
            handled += 1
    finally:
        db.dispose()
    return stats.as_dict()
