"""A tiny real study, run once per session, for the dashboard tests.

`tracker enqueue` two iris MLPs (batch sizes 16 and 64) with a 2D and a 1D surface each and a
two-minibatch surface of the first, one task designed to fail, two short IRIS_FF level-set
traversals and a two-lambda L2 baseline (seed 002), then `tracker work`: the rows, Zarr arrays
and MLflow runs the pages read are all real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import run_tracker, tracker_env
from dashboard_support import Seeded, free_port
from schema_support import migrated

STUDY = """
study = "iris-sweep"
description = "two batch sizes, small surfaces"

[[model]]
name = "mlp-bs{batch_size}"
architecture = "mlp"
arch = { widths = [8], activation = "tanh" }
dataset = "iris"
optimizer = "sgd"
lr = 0.1
batch_size = [16, 64]
epochs = 3
seed = 0

[[surface]]
x = "-1:1:7"
y = "-1:1:5"

[[surface]]
x = "-1:1:9"

[[surface]]
models = ["mlp-bs16"]
x = "-1:1:3"
y = "-1:1:3"
minibatches = 2
minibatch_size = 32
bn = "train"
"""


def _run(*args: str, env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = run_tracker(*args, env=env)
    if ok:
        assert result.returncode == 0, f"tracker {' '.join(args)}:\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    from tracker._db import Database
    from tracker._queue import enqueue, get_or_create_study
    from tracker.cli import main as tracker_main

    root = tmp_path_factory.mktemp("dashboard")
    env = tracker_env(root)
    home = root / ".tracker"
    db_url = f"sqlite:///{home / 'tracker.db'}"
    home.mkdir()
    template_copy = Database(db_url)
    migrated(template_copy)  # the schema at head, as `tracker db upgrade` leaves it
    template_copy.dispose()
    (root / "study.toml").write_text(STUDY)
    _run("enqueue", str(root / "study.toml"), env=env)
    # In-process (one torch import instead of one per command): the same commands a user types.
    where = ["--home", str(home), "--db", db_url, "--store", str(home / "store.zarr"),
             "--study", "iris-sweep", "--setup", "IRIS_FF"]  # fmt: skip
    assert tracker_main(["enqueue", "levelset", *where, "--runs", "2",
                         "--max-predictor-steps", "20", "--phase1-epochs", "3"]) == 0  # fmt: skip
    assert tracker_main(["enqueue", "l2-baseline", *where, "--lambdas", "0,1e-3", "--runs", "1",
                         "--epochs", "3"]) == 0  # fmt: skip
    db = Database(db_url)
    with db.session() as session:
        study = get_or_create_study(session, "iris-sweep")
        enqueue(session, study, "test.fail", {"why": "dashboard failure row"}, max_attempts=1)
    db.dispose()
    work = _run("work", "--plugin", "queue_kinds", "--no-progress",
                env=env, ok=False)  # fmt: skip
    assert work.returncode == 1 and "1 task(s) failed" in work.stderr, work.stderr[-3000:]
    _run("meta", "--study", "iris-sweep", "--no-mlflow", "--draws", "20", env=env)
    return Seeded(root, env, db_url, str(home / "store.zarr"), f"sqlite:///{home / 'mlflow.db'}")


@pytest.fixture
def dashboard_env(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> Seeded:
    """The seeded locations in this process's environment (AppTest runs pages in-process)."""
    for name in ("TRACKER_HOME", "TRACKER_DB_URL", "TRACKER_STORE", "MLFLOW_TRACKING_URI",
                 "TRACKER_MLFLOW_UI"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRACKER_HOME", str(seeded.root / ".tracker"))
    monkeypatch.setenv("TRACKER_DB_URL", seeded.db_url)
    monkeypatch.setenv("TRACKER_STORE", seeded.store_url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", seeded.mlflow_uri)
    return seeded


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        message = "Chromium is not installed (Debian package chromium) for the browser tests"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def served(seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`tracker dashboard --headless` on a free port, as a user starts it; its base URL."""
    import urllib.request

    port = free_port()
    log = tmp_path_factory.mktemp("served") / "dashboard.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tracker.cli", "dashboard", "--port", str(port), "--headless"],
            env=seeded.env, cwd=seeded.root, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"`tracker dashboard` exited ({proc.returncode}):\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the dashboard did not answer in 60 s:\n{log.read_text()}")
            time.sleep(0.3)
        yield base
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
