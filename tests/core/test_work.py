"""`tracker work` drives real Dask workers (a LocalCluster of processes) over the queue."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from cli_support import run_tracker, tracker_env
from queue_kinds import read_log

from tracker._db import Database
from tracker._queue import enqueue, get_or_create_study
from tracker._schema import Task


def test_work_on_a_local_cluster_of_two_processes_drains_the_queue(tmp_path: Path, db_url: str):
    env = tracker_env(tmp_path, db_url)
    assert run_tracker("db", "upgrade", env=env).returncode == 0
    log = tmp_path / "ran.log"
    db = Database(db_url)
    with db.session() as session:
        st = get_or_create_study(session, "dask")
        first, _ = enqueue(session, st, "test.append", {"log": str(log), "n": -1})
        ids = [first.id] + [
            enqueue(session, st, "test.append", {"log": str(log), "n": i, "seconds": 0.05},
                    depends_on=[first])[0].id
            for i in range(120)
        ]  # fmt: skip
    proc = run_tracker("work", "--workers", "2", "--plugin", "queue_kinds", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "done 121, failed 0" in proc.stdout and "on 2 worker(s)" in proc.stdout
    assert "121/121 tasks" in proc.stderr  # the progress bar's final line
    ran = read_log(log)
    assert sorted(ran) == sorted(ids) and ran[0] == first.id  # the dependency ran first
    with db.session() as session:
        workers = set(session.scalars(sa.select(Task.worker)))
        statuses = set(session.scalars(sa.select(Task.status)))
    assert statuses == {"done"}
    assert len(workers) == 2  # both Dask workers claimed tasks
    db.dispose()


def test_work_with_nothing_to_do_returns_at_once(tmp_path: Path):
    env = tracker_env(tmp_path)
    assert run_tracker("db", "upgrade", env=env).returncode == 0
    proc = run_tracker("work", env=env)
    assert proc.returncode == 0
    assert "nothing to do" in proc.stderr
