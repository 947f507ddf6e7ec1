"""`tracker work` drives real Dask workers (a LocalCluster of processes) over the queue."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from cli_support import run_tracker, tracker_env
from queue_kinds import read_log
from schema_support import migrated

from tracker._db import Database
from tracker._queue import enqueue, get_or_create_study
from tracker._schema import Task


def _home_at_head(tmp_path: Path) -> dict[str, str]:
    """A home whose embedded database is a copy of the suite's migrated template (set-up; the
    `tracker db upgrade` command is test_cli's)."""
    (tmp_path / ".tracker").mkdir()
    db = Database(f"sqlite:///{tmp_path / '.tracker' / 'tracker.db'}")
    migrated(db)
    db.dispose()
    return tracker_env(tmp_path)


def test_work_on_a_local_cluster_of_two_processes_drains_the_queue(
    tmp_path: Path, db_url: str, db: Database
):
    env = tracker_env(tmp_path, db_url)
    log = tmp_path / "ran.log"
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


def test_work_with_nothing_to_do_returns_at_once(tmp_path: Path):
    env = _home_at_head(tmp_path)
    proc = run_tracker("work", env=env)
    assert proc.returncode == 0
    assert "nothing to do" in proc.stderr


def test_work_without_workers_runs_its_loops_in_this_process(
    tmp_path: Path, db_url: str, db: Database
):
    """No --workers/--scheduler: one loop per core in threads of the `tracker work` process
    (no Dask cluster), dependencies still first, every task done."""
    import os

    env = tracker_env(tmp_path, db_url)
    log = tmp_path / "ran.log"
    with db.session() as session:
        st = get_or_create_study(session, "threads")
        first, _ = enqueue(session, st, "test.append", {"log": str(log), "n": -1})
        ids = [first.id] + [
            enqueue(session, st, "test.append", {"log": str(log), "n": i, "seconds": 0.05},
                    depends_on=[first])[0].id
            for i in range(40)
        ]  # fmt: skip
    proc = run_tracker("work", "--plugin", "queue_kinds", env=env)
    assert proc.returncode == 0, proc.stderr
    loops = os.cpu_count() or 1
    assert "done 41, failed 0" in proc.stdout and f"on {loops} worker(s)" in proc.stdout
    ran = read_log(log)
    assert sorted(ran) == sorted(ids) and ran[0] == first.id
    with db.session() as session:
        rows = session.execute(sa.select(Task.status, Task.result, Task.worker)).all()
    assert {status for status, _, _ in rows} == {"done"}
    assert len({result["pid"] for _, result, _ in rows}) == 1  # one process ran them all
    assert {worker.rsplit(":", 1)[1] for _, _, worker in rows} <= {
        f"loop{i}" for i in range(loops)
    }


def test_work_on_an_empty_queue_starts_no_cluster_and_imports_no_torch(tmp_path: Path):
    import subprocess
    import sys

    env = _home_at_head(tmp_path)
    script = (
        "import sys\n"
        "from tracker.cli import main\n"
        "code = main(['work'])\n"
        "print(code, sorted(m for m in ('distributed', 'torch', 'mlflow', 'zarr') "
        "if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert "nothing to do" in proc.stderr, proc.stderr
    assert proc.stdout.strip() == "0 []", proc.stdout
