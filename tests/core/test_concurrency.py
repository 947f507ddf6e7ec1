"""Many worker processes on one queue: every task runs to done exactly once, even after a SIGKILL."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from queue_kinds import read_log

from tracker._queue import enqueue, get_or_create_study
from tracker._schema import ArrayRef, Task
from tracker._store import ArrayStore
from tracker._worker import WorkerConfig, run_worker

# Each worker is its own process, started by a fork server: a clean interpreter (no test-process
# state) that imports the worker code once and forks every worker from there, instead of a
# spawned interpreter importing it again for each (0.7 CPU-s and ~3 s on a busy 2-core box).
SPAWN = mp.get_context("forkserver")
SPAWN.set_forkserver_preload(["tracker._worker", "queue_kinds"])


def _enqueue(db, kind: str, payloads: list[dict]) -> list[int]:
    with db.session() as session:
        st = get_or_create_study(session, "concurrency")
        return [enqueue(session, st, kind, p)[0].id for p in payloads]


def _start_workers(n: int, cfg: WorkerConfig) -> list[mp.Process]:
    procs = [SPAWN.Process(target=run_worker, args=(cfg,), daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    return procs


def _status_counts(db) -> dict[str, int]:
    with db.session() as session:
        return dict(
            session.execute(sa.select(Task.status, sa.func.count()).group_by(Task.status)).all()
        )


@pytest.mark.slow
def test_worker_processes_drain_2000_tasks_each_exactly_once(db, store_url, tmp_path: Path):
    """1,000 independent tasks and 1,000 that each wait for two of them (fan-in, so two
    parents often finish at the same moment); a child stranded in 'waiting' would fail this."""
    n_workers = 4 if db.dialect == "sqlite" else 8
    log = tmp_path / "ran.log"
    rng = random.Random(1234)
    with db.session() as session:
        st = get_or_create_study(session, "concurrency")
        parents = [
            enqueue(session, st, "test.append", {"log": str(log), "p": i})[0] for i in range(1000)
        ]
        pairs = {}
        for i in range(1000):
            a, b = rng.sample(parents, 2)
            child, _ = enqueue(
                session, st, "test.append", {"log": str(log), "c": i}, depends_on=[a, b]
            )
            pairs[child.id] = (a.id, b.id)
        ids = [p.id for p in parents] + list(pairs)
    assert _status_counts(db) == {"pending": 1000, "waiting": 1000}
    cfg = WorkerConfig(db.url, store_url, plugins=("queue_kinds",), lease_seconds=60)
    procs = _start_workers(n_workers, cfg)
    for p in procs:
        p.join(timeout=600)
        assert p.exitcode == 0
    ran = read_log(log)
    assert len(ran) == 2000
    assert sorted(ran) == sorted(ids)  # each task ran once: none lost, none twice
    position = {task_id: i for i, task_id in enumerate(ran)}
    assert all(
        position[c] > position[a] and position[c] > position[b] for c, (a, b) in pairs.items()
    )
    assert _status_counts(db) == {"done": 2000}
    with db.session() as session:
        attempts = set(session.scalars(sa.select(Task.attempts)))
        workers = set(session.scalars(sa.select(Task.worker)))
    assert attempts == {1}
    assert len(workers) > 1  # the work really was shared


@pytest.mark.slow
def test_a_task_whose_worker_is_killed_is_finished_by_another_after_its_lease_expires(
    db, store_url, tmp_path: Path
):
    log, started = tmp_path / "ran.log", tmp_path / "started.log"
    (victim,) = _enqueue(db, "test.hang_once", [{"log": str(log), "started": str(started)}])
    others = _enqueue(db, "test.append", [{"log": str(log), "n": i} for i in range(50)])
    cfg = WorkerConfig(db.url, store_url, plugins=("queue_kinds",), lease_seconds=2.0)
    procs = _start_workers(2, cfg)

    deadline = time.monotonic() + 120
    while not started.exists() or not started.read_text().strip():
        assert time.monotonic() < deadline, "no worker started the hanging task"
        time.sleep(0.05)
    task_id, pid = (int(x) for x in started.read_text().split())
    assert task_id == victim
    os.kill(pid, signal.SIGKILL)

    for p in procs:
        p.join(timeout=300)
    exitcodes = sorted(p.exitcode for p in procs)
    assert exitcodes == [-signal.SIGKILL, 0]

    ran = read_log(log)
    assert sorted(ran) == sorted([victim, *others])  # the killed task's result written once
    assert _status_counts(db) == {"done": 51}
    with db.session() as session:
        row = session.get(Task, victim)
        refs = session.scalars(sa.select(ArrayRef).where(ArrayRef.task_id == victim)).all()
    # Finished by another process; the kill cost a lease, not an attempt.
    assert (row.attempts, row.lease_losses) == (1, 1) and f":{pid}:" not in row.worker
    assert len(refs) == 1
    values = ArrayStore(store_url).read(refs[0].path)
    np.testing.assert_array_equal(values, np.arange(4.0) * victim)
