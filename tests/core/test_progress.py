"""Progress of one `tracker work`: this run's tasks only, failures as they happen, plain lines
when the output is not a terminal, third-party chatter in the log file and not the terminal."""

from __future__ import annotations

import io
from pathlib import Path

import sqlalchemy as sa
from cli_support import run_tracker, tracker_env
from schema_support import migrated

from tracker._db import Database
from tracker._progress import Progress, Scope, clock
from tracker._queue import Queue, enqueue, get_or_create_study
from tracker._schema import Task
from tracker._work import scope_counts


def _set(db: Database, ids: list[int], **values) -> None:
    with db.session() as session:
        session.execute(sa.update(Task).where(Task.id.in_(ids)).values(**values))


def test_progress_counts_this_runs_tasks_and_announces_failures(db):
    with db.session() as session:
        study = get_or_create_study(session, "p")
        old = [enqueue(session, study, "noop", {"i": i})[0].id for i in range(20)]
        new = [enqueue(session, study, "noop", {"i": 100 + i})[0].id for i in range(4)]
    _set(db, old, status="done")  # finished by an earlier run
    scope = Scope(db, ["noop"], None)
    stream = io.StringIO()  # not a terminal: plain lines
    bar = Progress(stream, scope_counts(db, ["noop"], None), True, scope=scope, interval=0.0)
    bar.update(scope_counts(db, ["noop"], None))
    assert stream.getvalue().splitlines()[-1].startswith("0/4 tasks, starting workers")
    _set(db, new[:2], status="done")
    _set(db, new[2:3], status="failed", error="Traceback...\nValueError: bad input 7")
    bar.update(scope_counts(db, ["noop"], None), final=True)
    lines = stream.getvalue().splitlines()
    assert f"task {new[2]} [p/noop] failed: ValueError: bad input 7" in lines
    last = lines[-1]
    assert last.startswith("3/4 tasks, ") and "tasks/s" in last and "failed 1" in last
    assert "elapsed 0:00:0" in last and "ETA" in last


def test_quiet_lines_come_once_per_interval():
    stream = io.StringIO()
    start = {"waiting": 0, "pending": 5, "running": 0, "done": 0, "failed": 0}
    bar = Progress(stream, start, True, quiet=True, interval=3600.0)
    for done in range(5):
        bar.update({**start, "pending": 5 - done, "done": done})
    assert len(stream.getvalue().splitlines()) == 1  # the first; the next is due in an hour
    bar.update({**start, "pending": 0, "done": 5}, final=True)
    assert stream.getvalue().splitlines()[-1].startswith("5/5 tasks")


def test_clock():
    assert (clock(0), clock(61.4), clock(3725), clock(None)) == ("0:00:00", "0:01:01", "1:02:05",
                                                                 "--:--")  # fmt: skip


def test_third_party_chatter_goes_to_the_log_file_not_the_terminal(tmp_path: Path, sqlite_url):
    env = tracker_env(tmp_path, sqlite_url)
    db = Database(sqlite_url)
    migrated(db)  # set-up: a copy of the suite's migrated template, not an upgrade process
    with db.session() as session:
        study = get_or_create_study(session, "chatty")
        ids = [enqueue(session, study, "test.chatty", {"i": i})[0].id for i in range(2)]
    db.dispose()
    work = run_tracker("work", "--workers", "1", "--plugin", "chatty_kinds", "-q", env=env)
    assert work.returncode == 0, work.stderr[-2000:]
    terminal = work.stdout + work.stderr
    assert "CHATTER" not in terminal
    assert "2/2 tasks" in work.stderr  # the quiet progress line is still there
    log = (tmp_path / ".tracker" / "logs" / "work.log").read_text()
    for i in ids:
        assert f"MLFLOW-CHATTER {i}" in log and f"PHATE-CHATTER {i}" in log


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_live_bar_with_failures_printed_above_it():
    stream = _Terminal()
    start = {"waiting": 0, "pending": 3, "running": 0, "done": 7, "failed": 0}
    bar = Progress(stream, start, True)
    assert bar.live is not None
    bar.note_dashboard("http://127.0.0.1:8787/status")
    bar.note_dashboard("http://127.0.0.1:8787/status")
    bar.update({**start, "pending": 1, "running": 1, "done": 8})
    bar.update({**start, "pending": 0, "running": 0, "done": 10}, final=True)
    text = stream.getvalue()
    assert text.count("Dask dashboard: http://127.0.0.1:8787/status") == 1
    assert "3/3" in text and "tasks/s" in text


def test_a_local_cluster_serves_its_dask_dashboard_and_prints_the_address_once(
    tmp_path: Path, sqlite_url
):
    """Issue 19: `tracker work --workers N` prints the Dask dashboard's address once, the
    address answers while the work runs, and Dask's 'port 8787 in use' never reaches the
    terminal (the dashboard takes a free port of this machine)."""
    import re
    import subprocess
    import sys
    import threading
    import urllib.request

    env = tracker_env(tmp_path, sqlite_url)
    db = Database(sqlite_url)
    migrated(db)
    # Eight tasks wait for a gate task that this test holds: the work cannot end before its
    # dashboard has been read, however slowly the cluster starts (no sleeping tasks to time).
    with db.session() as session:
        study = get_or_create_study(session, "default")
        gate, _ = enqueue(session, study, "noop", {"gate": True})
        for i in range(8):
            enqueue(session, study, "noop", {"i": i}, depends_on=[gate])
    gate_queue = Queue(db, lease_seconds=600)
    held = gate_queue.claim("progress-test", kinds=["noop"])
    assert held is not None and held.id == gate.id
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker.cli", "work", "--workers", "1"], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip
    try:
        lines: list[str] = []
        seen = threading.Event()

        def read() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.append(line)
                if line.startswith("Dask dashboard: "):
                    seen.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert seen.wait(timeout=240), "".join(lines)
        url = next(line for line in lines if line.startswith("Dask dashboard: ")).split(": ", 1)[1]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/status", url.strip()), url
        running = proc.poll() is None
        with urllib.request.urlopen(url.strip(), timeout=30) as response:
            assert response.status == 200
        assert running, "the work ended before its dashboard was read"
        assert gate_queue.complete(held)  # now the eight can run
        # stdout read here, stderr only by the reader thread (communicate() would read stderr too,
        # and the lines the thread missed went to it).
        assert proc.stdout is not None
        stdout = proc.stdout.read()
        proc.wait(timeout=300)
        reader.join(timeout=30)
        assert proc.returncode == 0, "".join(lines)
    finally:  # a failed look above must not leave the work waiting for the gate
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: `tracker work` stops its cluster on the way out
            proc.wait(timeout=60)
    terminal = stdout + "".join(lines)
    assert terminal.count("Dask dashboard: ") == 1
    assert "8787" not in terminal and "in use" not in terminal
    assert "9/9 tasks" in terminal  # the gate and the eight, all this run's
    db.dispose()

    # Without progress nothing would show the address: no dashboard is served or printed.
    assert run_tracker("enqueue", "noop", "--count", "1", "--study", "q", env=env).returncode == 0
    quiet = run_tracker("work", "--workers", "1", "--no-progress", env=env)
    assert quiet.returncode == 0 and "Dask dashboard" not in quiet.stdout + quiet.stderr
