"""`tracker enqueue ... --wait` as a user runs it: `tracker work --forever` in another process,
real SQLite (and PostgreSQL), real Zarr and MLflow; the wait returns when the result is there."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cli_support import run_tracker, tracker_env


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return proc.stdout


@contextmanager
def _worker(env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`tracker work --forever` in the background, stopped (SIGTERM) afterwards. One Dask
    worker process: these tests are about the wait, not the cluster's size (a cluster of one
    process per core spent ~20 s starting on a loaded 2-core machine)."""
    log = (cwd / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker.cli", "work", "--forever", "--workers", "1",
         "--no-progress"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.slow
def test_wait_returns_once_a_running_worker_has_computed_the_surface(tmp_path: Path) -> None:
    env = tracker_env(tmp_path)
    _ok(run_tracker("train", "--arch", "mlp", "--widths", "8", "--dataset", "iris", "--epochs",
                    "1", "--batch-size", "32", env=env))  # fmt: skip
    with _worker(env, tmp_path):
        done = run_tracker("enqueue", "surface", "--model", "1", "--x", "-1:1:9", "--y", "-1:1:9",
                           "--wait", "--json", env=env)  # fmt: skip
    report = json.loads(_ok(done))
    statuses = report["wait"]["tasks"]
    assert statuses and all(t["status"] == "done" for t in statuses), statuses
    assert report["wait"]["failed"] == [] and not report["wait"]["interrupted"]
    kinds = {t["kind"] for t in statuses}
    assert "surface.complete" in kinds and "surface.tile" in kinds
    assert "surface.artifacts" not in kinds  # a follow-up: not waited for
    with sqlite3.connect(tmp_path / ".tracker" / "tracker.db") as conn:
        (completed,) = conn.execute("SELECT completed_at FROM surfaces WHERE id = 1").fetchone()
    assert completed is not None
    shown = json.loads(_ok(run_tracker("show", "surface", "1", "--json", env=env)))
    assert "1" in json.dumps(shown)
    # Asking again for what is done returns at once, with nothing to wait for.
    again = run_tracker("enqueue", "surface", "--model", "1", "--x", "-1:1:9", "--y", "-1:1:9",
                        "--wait", "--no-progress", env=env)  # fmt: skip
    assert "already queued" in _ok(again)


@pytest.mark.slow
def test_wait_with_a_worker_on_each_backend(tmp_path: Path, db_url: str, db) -> None:
    env = tracker_env(tmp_path, db_url, str(tmp_path / "store.zarr"))  # `db`: migrated
    with _worker(env, tmp_path):
        done = run_tracker("enqueue", "noop", "--count", "3", "--wait", "-q", "--json", env=env)
    report = json.loads(_ok(done))
    assert sorted(t["id"] for t in report["wait"]["tasks"]) == sorted(report["tasks"])
    assert {t["status"] for t in report["wait"]["tasks"]} == {"done"}


BROKEN_NETS = textwrap.dedent('''
    """A network that cannot be built where TRACKER_TEST_BREAK_NET is set (the worker)."""
    import os
    import torch
    from torch import nn

    def make_net(width=4, classes=3):
        if os.environ.get("TRACKER_TEST_BREAK_NET"):
            raise RuntimeError("this network is broken on purpose")
        return nn.Sequential(nn.Flatten(), nn.Linear(4, width), nn.Tanh(), nn.Linear(width, classes))

    def load(n=60, seed=0):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 4, generator=g)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
        return (x[:40], y[:40]), (x[40:], y[40:])
''')


@pytest.mark.slow
def test_a_failed_task_ends_the_wait_with_exit_1_and_one_line_naming_it(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "broken_nets.py").write_text(BROKEN_NETS)
    env = tracker_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(code), env["PYTHONPATH"]])
    worker_env = {**env, "TRACKER_TEST_BREAK_NET": "1"}
    with _worker(worker_env, tmp_path):
        done = run_tracker("enqueue", "model", "--arch", "broken_nets:make_net", "--dataset",
                           "broken_nets:load", "--epochs", "1", "--wait", "--no-progress",
                           env=env)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    with sqlite3.connect(tmp_path / ".tracker" / "tracker.db") as conn:
        failed = [i for (i,) in conn.execute("SELECT id FROM tasks WHERE status = 'failed'")]
    assert failed
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("tracker: ") and "failed" in last, done.stderr
    assert f"`tracker show task {failed[0]}`" in last and str(failed[0]) in last
    assert "Traceback" not in done.stderr


def test_no_worker_gives_one_hint_and_ctrl_c_leaves_the_tasks_queued(tmp_path: Path) -> None:
    env = {**tracker_env(tmp_path), "TRACKER_WAIT_HINT_SECONDS": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker.cli", "enqueue", "noop", "--count", "2", "--wait",
         "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
        # a shell's background job ignores SIGINT; Ctrl-C on a terminal does not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.stderr is not None
    lines = []
    deadline = time.monotonic() + 120  # a guard against hanging, not a measured time
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        assert line, f"the wait ended before its hint: {lines} {proc.wait()}"
        lines.append(line)
        if "no worker" in line:
            break
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    lines += err.splitlines(keepends=True)
    assert proc.returncode == 130, lines
    hints = [line for line in lines if "no worker" in line]
    assert len(hints) == 1 and "`tracker work --forever`" in hints[0], lines
    assert lines[-1].startswith("tracker: stopped waiting; 2 unfinished task(s) stay queued"), lines
    assert "Traceback" not in "".join(lines)
    status = json.loads(_ok(run_tracker("status", "--json", env=env)))
    assert sum(c["pending"] for c in status["counts"]) == 2
