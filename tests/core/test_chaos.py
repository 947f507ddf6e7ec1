"""Chaos: a surface drained on PostgreSQL while worker processes are SIGKILLed at random and the
database server restarts, with no human action. It must complete, equal an undisturbed run
bit for bit, and finish every task exactly once."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import sqlalchemy as sa
import zarr
from cli_support import run_tracker, tracker_env
from pg_cluster import private_cluster

STUDY = """
study = "chaos"

[[model]]
name = "cnn"
architecture = "cnn"
dataset = "digits"
optimizer = "sgd"
lr = 0.05
batch_size = 64
epochs = 2
seed = 0

[[surface]]
x = "-1:1:20"
y = "-1:1:20"
tile = [4, 4]
direction = { seed = 0 }
"""
KILLS = 4
SEED = 20261130


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _surface_arrays(db_url: str, store: Path) -> dict[str, np.ndarray]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT a.path FROM surfaces s JOIN arrays a "
                "ON a.id IN (s.loss_array_id, s.acc_array_id) ORDER BY a.path")).scalars().all()
    finally:
        engine.dispose()
    root = zarr.open_group(str(store), mode="r")
    return {path.rsplit("/", 1)[-1]: np.asarray(root[path][...]) for path in rows}


def _task_errors(db_url: str) -> list[str]:
    """The stored errors of failed tasks, for the failure message."""
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT id, kind, attempts, lease_losses, error FROM tasks "
                "WHERE status = 'failed' ORDER BY id LIMIT 3")).all()  # fmt: skip
    finally:
        engine.dispose()
    return [f"{r.id} {r.kind} attempts {r.attempts} losses {r.lease_losses}: {(r.error or '')[-1500:]}"
            for r in rows]  # fmt: skip


def _worker_processes(pid: int) -> list[psutil.Process]:
    """The Dask worker processes under `tracker work` (spawned children, not trackers)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


@pytest.mark.chaos
@pytest.mark.slow
@pytest.mark.postgres
def test_surface_survives_worker_kills_and_a_database_restart(tmp_path: Path) -> None:
    (tmp_path / "study.toml").write_text(STUDY)

    # The undisturbed run: SQLite, the same two workers (so the same torch thread count).
    calm = tmp_path / "calm"
    calm.mkdir()
    env = tracker_env(calm)
    _ok(run_tracker("db", "upgrade", env=env))
    _ok(run_tracker("enqueue", str(tmp_path / "study.toml"), env=env))
    _ok(run_tracker("work", "--workers", "2", "--no-progress", env=env))
    expected = _surface_arrays(f"sqlite:///{calm / '.tracker' / 'tracker.db'}",
                               calm / ".tracker" / "store.zarr")  # fmt: skip
    assert set(expected) == {"acc", "loss"}

    with private_cluster() as pg:
        storm = tmp_path / "storm"
        storm.mkdir()
        env = tracker_env(storm, pg.url)
        env["TRACKER_DB_RETRY_SECONDS"] = "90"
        _ok(run_tracker("db", "upgrade", env=env))
        _ok(run_tracker("enqueue", str(tmp_path / "study.toml"), env=env))
        started = time.monotonic()
        work = subprocess.Popen(
            [sys.executable, "-m", "tracker.cli", "work", "--workers", "2", "--lease", "4",
             "--no-progress"],
            env=env, cwd=storm, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        rng = random.Random(SEED)
        events: list[str] = []

        def storm_loop() -> None:
            kills = 0
            restarted = False
            while work.poll() is None and kills < KILLS:
                time.sleep(rng.uniform(2.0, 5.0))
                victims = _worker_processes(work.pid)
                if not victims:
                    continue
                victim = rng.choice(victims)
                try:
                    os.kill(victim.pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                kills += 1
                events.append(f"kill {victim.pid} at {time.monotonic() - started:.1f} s")
                if kills == 2 and not restarted:
                    t0 = time.monotonic()
                    pg.restart()
                    restarted = True
                    events.append(f"database restart ({time.monotonic() - t0:.1f} s outage)")

        chaos = threading.Thread(target=storm_loop, daemon=True)
        chaos.start()
        try:
            _out, err = work.communicate(timeout=420)
        except subprocess.TimeoutExpired:
            work.kill()
            _out, err = work.communicate()
            pytest.fail(f"tracker work did not finish: {events}\n{err[-3000:]}")
        chaos.join(timeout=30)
        elapsed = time.monotonic() - started
        assert work.returncode == 0, (events, err[-3000:], _task_errors(pg.url))
        assert "Traceback" not in err, err[-3000:]
        assert sum(e.startswith("kill") for e in events) >= 2, events
        assert any(e.startswith("database restart") for e in events), events

        got = _surface_arrays(pg.url, storm / ".tracker" / "store.zarr")
        for name, values in expected.items():
            np.testing.assert_array_equal(got[name], values, err_msg=name)  # bitwise

        engine = sa.create_engine(pg.url)
        try:
            with engine.connect() as conn:
                statuses = dict(conn.execute(sa.text(
                    "SELECT status, count(*) FROM tasks GROUP BY status")).all())  # fmt: skip
                tiles = conn.execute(sa.text("SELECT count(*), count(DISTINCT task_id) FROM tiles")).one()
                losses = conn.execute(sa.text("SELECT coalesce(sum(lease_losses), 0) FROM tasks")).scalar()
                attempts = set(conn.execute(sa.text("SELECT attempts FROM tasks")).scalars())
                completed = conn.execute(sa.text(
                    "SELECT count(*) FROM surfaces WHERE completed_at IS NOT NULL")).scalar()  # fmt: skip
        finally:
            engine.dispose()
        with sqlite3.connect(calm / ".tracker" / "tracker.db") as conn:
            calm_tasks = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
        assert statuses == {"done": calm_tasks}, statuses  # none lost, none failed, none extra
        assert tiles[0] == tiles[1] == 25  # each tile recorded once, by its own task
        assert attempts == {1}  # the kills and the restart used no attempt of any task
        assert completed == 1
        print(f"\nchaos: {events}; lease losses {losses}; {calm_tasks} tasks done once; "
              f"completed in {elapsed:.1f} s")  # fmt: skip
