"""The worker loop: claim a task, run it under a heartbeat, record the outcome.

It runs the same way inside a Dask worker (``tracker work``) or in a plain process
(tests, benchmarks): the loop needs only a database URL and a store URL.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._db import open_database
from tracker._device import set_cpu_only
from tracker._exceptions import LeaseLost, SpecError, UserCodeError
from tracker._provenance import provenance
from tracker._queue import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_LEASE_LOSSES,
    ClaimedTask,
    Queue,
    request_measures_refresh,
)
from tracker._registry import BUILTIN_KINDS, get_kind, known_kinds, runnable_here
from tracker._retry import is_transient, retrying
from tracker._schema import Task, TaskBlock
from tracker._wake import open_waker

# The store (zarr, numpy) and the task context are imported when the first task runs: a
# worker claims before paying for them (and a kind's own module, torch, comes with get_kind).
if TYPE_CHECKING:
    from tracker._context import TaskContext
    from tracker._store import ArrayStore

log = logging.getLogger("tracker.worker")


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
    max_poll_seconds: float = 0.5
    max_tasks: int | None = None
    max_batch: int = 32
    name: str | None = None
    mlflow_uri: str | None = None
    max_lease_losses: int = DEFAULT_MAX_LEASE_LOSSES
    # Seconds to ride out a database outage (None: TRACKER_DB_RETRY_SECONDS or 120).
    retry_seconds: float | None = None
    # A worker of `tracker work --cuda`: it also claims the tasks that need a GPU.
    gpu: bool = False
    # A loop of the CPU pool beside `tracker work --cuda`: computes on the CPU even where
    # the process sees GPUs (and, like every non-GPU worker, never claims GPU tasks).
    cpu_only: bool = False


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
    """Extends the leases of the tasks still held every third of the lease time."""

    def __init__(self, queue: Queue, held: list[ClaimedTask], lost: threading.Event) -> None:
        super().__init__(name="tracker-heartbeat", daemon=True)
        self.queue, self.held, self.lost = queue, held, lost
        self.interval = max(queue.lease_seconds / 3.0, 0.05)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                if not self.queue.heartbeat_batch(list(self.held)):
                    self.lost.set()
                    return
            except Exception:  # a database hiccup: the next beat may still make it in time
                log.warning("heartbeat failed", exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
        self.join()


def _record_arrays(session: Session, ctx: TaskContext) -> None:
    from tracker._arrays import add_array

    for spec in ctx.arrays:
        add_array(session, spec, task_id=ctx.task.id)
    if ctx.blocks:  # a re-run writes the same blocks: replace, never duplicate
        session.execute(sa.delete(TaskBlock).where(TaskBlock.task_id == ctx.task.id))
        session.add_all(
            TaskBlock(task_id=ctx.task.id, path=path, start=start, stop=stop)
            for path, start, stop in ctx.blocks
        )
        session.flush()


def _dask_worker_address() -> str | None:
    """The address of the Dask worker running this loop (tasks record who ran them), if any."""
    host = _host_worker()
    return None if host is None else str(host.address)


def _host_worker() -> Any:
    """The Dask worker running this loop, or None outside one."""
    if "distributed" not in sys.modules:
        return None
    from distributed import get_worker

    try:
        return get_worker()
    except ValueError:  # not inside a Dask task
        return None


def _host_closing(host: Any) -> bool:
    """Whether the Dask worker hosting this loop is shutting down (its cluster is closing).

    A loop serving forever then returns between tasks; otherwise it held its worker open until
    the nanny killed the process, ~4 s of every `tracker work --forever` stop (Ctrl-C, SIGTERM,
    `docker stop`)."""
    return host is not None and host.status.name in ("closing", "closing_gracefully", "closed", "failed")


def worker_name(suffix: str | None = None) -> str:
    base = f"{socket.gethostname()}:{os.getpid()}"
    return f"{base}:{suffix}" if suffix else base


def execute_batch(
    queue: Queue,
    store: ArrayStore,
    tasks: list[ClaimedTask],
    stats: WorkerStats,
    *,
    mlflow_uri: str | None = None,
) -> None:
    """Run tasks claimed together, each to its outcome: done, retried, failed or abandoned.

    Tasks that write no rows are marked done together at the end of the batch (one commit);
    the others commit their rows and done mark one by one, as each finishes.
    """
    from tracker._context import TaskContext

    held = list(tasks)
    lost = threading.Event()
    beat = _Heartbeat(queue, held, lost)
    beat.start()
    finished: list[tuple[ClaimedTask, dict[str, Any] | None]] = []
    try:
        for task in tasks:
            kind = get_kind(task.kind)
            ctx = TaskContext(
                task=task, store=store, lease_lost=lost, db=queue.db, mlflow_uri=mlflow_uri
            )
            try:
                ctx.check_lease()
                result = kind.run(ctx)
            except LeaseLost:
                held.remove(task)
                stats.lost += 1
                continue
            except Exception as err:
                held.remove(task)
                # The user's code failing to import or run: its one line names the fix.
                text = (
                    str(err)
                    if isinstance(err, UserCodeError)
                    else "".join(traceback.format_exception(err)).strip()
                )
                if is_transient(err):  # the database failed the run, not the task's code
                    log.warning("task %s interrupted by the database; released", task.id)
                    if queue.release(task, f"interrupted by the database: {text}"):
                        stats.retried += 1
                    else:
                        stats.lost += 1
                    continue
                status = queue.fail(task, text, retry=not isinstance(err, SpecError))
                if status == "pending":
                    stats.retried += 1
                elif status == "failed":
                    stats.failed += 1
                else:
                    stats.lost += 1
                continue
            if not ctx.arrays and not ctx.blocks and kind.finalize is None and not kind.measures:
                finished.append((task, result))
                continue

            def on_commit(session: Session, ctx: TaskContext = ctx, kind: Any = kind,
                          result: Any = result) -> None:  # fmt: skip
                _record_arrays(session, ctx)
                session.execute(
                    sa.update(Task).where(Task.id == ctx.id).values(provenance=provenance(result))
                )
                if kind.finalize is not None:
                    kind.finalize(session, ctx, result)
                if kind.measures:  # the meta-analysis reads these rows: refresh its measures
                    request_measures_refresh(session, ctx.task.study_id, ctx.id)

            ok = queue.complete(task, result, on_commit=on_commit)
            held.remove(task)
            stats.done += ok
            stats.lost += not ok
        marked = queue.complete_batch(finished)
        stats.done += sum(marked)
        stats.lost += len(marked) - sum(marked)
    finally:
        beat.stop()


class _BatchSize:
    """How many tasks to claim at once: about ``target`` seconds of work, from recent tasks.

    Long tasks (training, big tiles) are claimed one at a time; no-op-sized ones in batches,
    so the claim's round trips and commit are shared.
    """

    def __init__(self, maximum: int, target: float = 0.25) -> None:
        self.maximum, self.target = max(int(maximum), 1), target
        self.mean: float | None = None

    def observe(self, seconds: float, n: int) -> None:
        per_task = seconds / max(n, 1)
        self.mean = per_task if self.mean is None else 0.7 * self.mean + 0.3 * per_task

    def next(self) -> int:
        if self.mean is None:
            return 1
        return max(1, min(self.maximum, int(self.target / max(self.mean, 1e-6))))


def _claim(
    queue: Queue,
    name: str,
    limit: int,
    kinds: list[str],
    batchable: list[str],
    studies: list[int] | None,
) -> list[ClaimedTask]:
    """Claim a batch of short tasks if there are any, else one task of any kind.

    Long kinds (training, tiles) are never claimed several at a time: a worker holding two
    tiles would leave another idle while the second waits.
    """
    if limit > 1 and batchable:
        batch = queue.claim_batch(name, limit, batchable, studies)
        if batch:
            return batch
    return queue.claim_batch(name, 1, kinds, studies)


def _open_store(queue: Queue, url: str, batch: list[ClaimedTask]) -> ArrayStore:
    """The array store, opened once the first tasks are claimed; if it cannot be opened they
    go back to the queue at once (no attempt used) and the StoreError names the fix."""
    from tracker._store import ArrayStore

    try:
        return ArrayStore(url)
    except Exception as err:
        for task in batch:
            queue.release(task, f"the worker could not open the array store: {err}")
        raise


def warm_imports(kinds: list[str]) -> threading.Thread:
    """Import the modules of the built-in ``kinds`` (and torch with them) in a daemon thread.

    A worker serving forever starts this the first time it finds nothing to do: its first task
    then does not pay seconds of imports (torch's alone is ~2 s on 2 cores), and a worker that
    drains a queue and exits never pays them for nothing. An import that fails is left to the
    task that needs the module, which reports it with its own error.
    """
    modules = sorted({BUILTIN_KINDS[k][0] for k in kinds if k in BUILTIN_KINDS})

    def run() -> None:
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception as err:
                log.debug("warm import of %s failed: %s", module, err)

    thread = threading.Thread(target=run, name="tracker-warm-imports", daemon=True)
    thread.start()
    return thread


def run_worker(cfg: WorkerConfig) -> dict[str, Any]:
    """Claim and run tasks until the queue is drained (or forever); return counts."""
    known = known_kinds(cfg.plugins)
    # Checked where the loop runs (a Dask worker may be another machine than `tracker work`).
    kinds = runnable_here(k for k in known if cfg.kinds is None or k in cfg.kinds)
    db = retrying(lambda: open_database(cfg.db_url), what="a worker's start",
                  window=cfg.retry_seconds)  # fmt: skip
    store: ArrayStore | None = None
    queue = Queue(db, lease_seconds=cfg.lease_seconds, max_lease_losses=cfg.max_lease_losses,
                  retry_seconds=cfg.retry_seconds, gpu=cfg.gpu)  # fmt: skip
    name = cfg.name or _dask_worker_address() or worker_name(threading.current_thread().name)
    stats = WorkerStats(worker=name)
    studies = list(cfg.study_ids) if cfg.study_ids is not None else None
    pause = cfg.poll_seconds
    handled = 0
    sizer = _BatchSize(cfg.max_batch)
    batchable = [k for k in kinds if known[k]]
    waker = open_waker(cfg.db_url)
    set_cpu_only(cfg.cpu_only)
    warming: threading.Thread | None = None
    host = _host_worker()
    try:
        while cfg.max_tasks is None or handled < cfg.max_tasks:
            limit = sizer.next()
            if cfg.max_tasks is not None:
                limit = min(limit, cfg.max_tasks - handled)
            batch = _claim(queue, name, limit, kinds, batchable, studies)
            if not batch and not cfg.forever and not queue.active(kinds, studies):
                # Nothing runs anywhere that could unblock more work: one last look, then stop.
                batch = _claim(queue, name, limit, kinds, batchable, studies)
                if not batch:
                    break
            if not batch:
                if _host_closing(host):
                    break
                if cfg.forever and warming is None:
                    warming = warm_imports(kinds)
                # Woken early when the queue may have changed; else back off to the next look.
                if not waker.wait(pause):
                    pause = min(pause * 1.5, cfg.max_poll_seconds)
                continue
            pause = cfg.poll_seconds
            started = time.monotonic()
            if store is None:
                store = _open_store(queue, cfg.store_url, batch)
            execute_batch(queue, store, batch, stats, mlflow_uri=cfg.mlflow_uri)
            if batch[0].kind in batchable:
                sizer.observe(time.monotonic() - started, len(batch))
            handled += len(batch)
    finally:
        set_cpu_only(False)
        waker.close()
        db.dispose()
    return stats.as_dict()
