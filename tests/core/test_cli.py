"""The CLI as a user meets it: real processes, real databases, one-line errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from cli_support import one_line_error as _one_line_error
from cli_support import run_tracker, tracker_env
from schema_support import migrated

from tracker._db import Database
from tracker._schema import Task


def _migrated_home(tmp_path: Path, db_url: str | None = None) -> dict[str, str]:
    """The environment of a home whose database (the embedded default unless ``db_url``) is at
    head: a copy of the suite's migrated template. Set-up for the tests below; the `tracker db
    upgrade` command itself is test_upgrade_enqueue_work_status_on_the_embedded_default's."""
    url = db_url or f"sqlite:///{tmp_path / '.tracker' / 'tracker.db'}"
    (tmp_path / ".tracker").mkdir(exist_ok=True)
    db = Database(url)
    migrated(db)
    db.dispose()
    return tracker_env(tmp_path, db_url)


def test_help_does_not_import_torch_or_the_database_stack():
    code = (
        "import sys, contextlib, io\n"
        "import tracker.cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    tracker.cli.main(['--help'])\n"
        "heavy = sorted(m for m in ('torch', 'sqlalchemy', 'zarr', 'dask') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_upgrade_enqueue_work_status_on_the_embedded_default(tmp_path: Path):
    env = tracker_env(tmp_path)
    up = run_tracker("db", "upgrade", env=env)
    assert up.returncode == 0, up.stderr
    assert (tmp_path / ".tracker" / "tracker.db").exists()
    current = run_tracker("db", "current", env=env)
    assert "up to date" in current.stdout
    assert (
        run_tracker("enqueue", "noop", "--count", "25", "--study", "smoke", env=env).returncode == 0
    )
    again = run_tracker("enqueue", "noop", "--count", "25", "--study", "smoke", env=env)
    assert "0 new noop task(s), 25 already queued" in again.stdout
    # Worker loops in this process: a local cluster of processes is test_work's.
    work = run_tracker("work", "--no-progress", env=env)
    assert work.returncode == 0, work.stderr
    assert "done 25, failed 0" in work.stdout
    status = run_tracker("status", env=env)
    row = next(line for line in status.stdout.splitlines() if line.startswith("smoke"))
    assert row.split()[:7] == ["smoke", "noop", "0", "0", "0", "25", "0"]


def test_work_reports_failures_and_status_shows_the_error(tmp_path: Path, sqlite_url: str):
    env = _migrated_home(tmp_path, sqlite_url)
    db = Database(sqlite_url)
    from tracker._queue import enqueue, get_or_create_study

    with db.session() as session:
        st = get_or_create_study(session, "broken")
        bad, _ = enqueue(session, st, "test.fail", {}, max_attempts=2)
    work = run_tracker(
        "work", "--plugin", "queue_kinds", "--no-progress", env=env
    )
    assert work.returncode == 1
    assert "1 task(s) failed: `tracker status` shows why" in work.stderr
    status = run_tracker("status", env=env)
    assert (
        f"task {bad.id} [broken/test.fail, attempt 2/2]: ValueError: task {bad.id} is designed to fail"
        in status.stdout
    )
    shown = run_tracker("show", "task", str(bad.id), env=env)
    assert "Traceback" in shown.stdout and "status: failed" in shown.stdout

    requeued = run_tracker("requeue", "--failed", env=env)
    assert f"requeued 1 task(s): {bad.id}" in requeued.stdout
    with db.session() as session:
        task = session.get(Task, bad.id)
        assert (task.status, task.attempts) == ("pending", 0)


def test_malformed_database_url(tmp_path: Path):
    proc = run_tracker("status", "--db", "postgresql+nosuchdriver:/x:y@", env=tracker_env(tmp_path))
    _one_line_error(proc, "malformed database URL")
    proc = run_tracker("status", env=tracker_env(tmp_path, "not a url"))
    _one_line_error(proc, "malformed database URL", "sqlite:///PATH")


def test_unreachable_postgresql(tmp_path: Path):
    url = "postgresql+psycopg://tracker@127.0.0.1:1/tracker"
    proc = run_tracker("status", env=tracker_env(tmp_path, url))
    _one_line_error(proc, "cannot reach the database at postgresql+psycopg://tracker@127.0.0.1:1/tracker",
                    "TRACKER_DB_URL")  # fmt: skip


def test_out_of_date_schema(tmp_path: Path, db_url: str):
    env = tracker_env(tmp_path, db_url)
    _one_line_error(run_tracker("status", env=env), "no tracker schema", "tracker db upgrade")
    assert run_tracker("db", "upgrade", env=env).returncode == 0
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0000_old'"))
    engine.dispose()
    for command in (["status"], ["work"], ["enqueue", "noop"], ["requeue", "--failed"]):
        _one_line_error(run_tracker(*command, env=env), "revision 0000_old", "`tracker db upgrade`")


def test_cuda_without_a_gpu(tmp_path: Path):
    env = _migrated_home(tmp_path)
    _one_line_error(run_tracker("work", "--cuda", env=env), "--cuda", "run without --cuda")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["status", "--study", "nope"], ["unknown study 'nope'"]),
        (["work", "--study", "nope"], ["unknown study 'nope'"]),
        (["show", "task", "4242"], ["unknown task id 4242"]),
        (["requeue", "4242"], ["unknown task id 4242"]),
        (["work", "--kind", "no.such.kind"], ["no.such.kind", "--plugin"]),
        (["work", "--plugin", "no_such_module"], ["cannot import plugin module 'no_such_module'"]),
        (["work", "--workers", "0"], ["--workers must be at least 1"]),
        (["enqueue", "noop", "--count", "0"], ["--count must be at least 1"]),
        (["requeue"], ["task ids, --failed or --broken"]),
    ],
)
def test_bad_requests_name_the_problem(tmp_path: Path, args: list[str], needles: list[str]):
    env = _migrated_home(tmp_path)
    run_tracker("enqueue", "noop", "--count", "1", "--study", "known", env=env)
    _one_line_error(run_tracker(*args, env=env), *needles)


def test_unknown_kinds_are_left_for_other_workers_with_a_note(tmp_path: Path, sqlite_url: str):
    env = _migrated_home(tmp_path, sqlite_url)
    from tracker._queue import enqueue, get_or_create_study

    db = Database(sqlite_url)
    with db.session() as session:
        st = get_or_create_study(session, "mixed")
        enqueue(session, st, "test.append", {"log": str(tmp_path / "log")})
        enqueue(session, st, "noop", {})
    work = run_tracker("work", "--no-progress", env=env)
    assert work.returncode == 0, work.stderr
    assert "1 pending task(s) of kind 'test.append' have no registered function here" in work.stderr
    with db.session() as session:
        statuses = dict(session.execute(sa.select(Task.kind, Task.status)).all())
    assert statuses == {"test.append": "pending", "noop": "done"}


def test_unreachable_dask_scheduler(tmp_path: Path):
    env = _migrated_home(tmp_path)
    assert run_tracker("enqueue", "noop", "--count", "1", env=env).returncode == 0
    # Dask retries a refused connection until the timeout (10 s by default): the one-line
    # error is the same after one second.
    env["TRACKER_SCHEDULER_TIMEOUT_SECONDS"] = "1"
    proc = run_tracker("work", "--scheduler", "tcp://127.0.0.1:1", env=env)
    _one_line_error(proc, "cannot reach the Dask scheduler at tcp://127.0.0.1:1", "--scheduler")


def test_the_quick_exit_keeps_what_an_exit_does(tmp_path: Path):
    """`tracker` leaves through exit_now (no module teardown): the exit code, a non-daemon
    thread's work, the exit hooks and buffered output all still happen."""
    marker = tmp_path / "thread-done"
    script = (
        "import atexit, threading, time\n"
        "from tracker._cliutil import exit_now\n"
        "atexit.register(lambda: print('hook ran', flush=False))\n"
        "def late():\n"
        "    time.sleep(0.3)\n"
        f"    open({str(marker)!r}, 'w').write('done')\n"
        "threading.Thread(target=late).start()\n"
        "print('buffered', end=' ')\n"
        "exit_now(3)\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert r.returncode == 3, r.stderr
    assert r.stdout == "buffered hook ran\n"
    assert marker.read_text() == "done"
    assert r.stderr == ""


def test_the_console_entry_point_exits_with_the_commands_code(tmp_path: Path):
    """The installed entry point (`tracker.cli:console`) returns the command's own exit code."""
    env = tracker_env(tmp_path)
    r = subprocess.run([sys.executable, "-c", "from tracker.cli import console; console()",
                        "show", "task", "999"], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("tracker: error: the database ") and r.stderr.count("\n") == 1


def test_the_scheduler_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    from tracker._exceptions import ConfigError
    from tracker._work import SCHEDULER_TIMEOUT_ENV, scheduler_timeout

    monkeypatch.delenv(SCHEDULER_TIMEOUT_ENV, raising=False)
    assert scheduler_timeout() == 10.0
    monkeypatch.setenv(SCHEDULER_TIMEOUT_ENV, "2.5")
    assert scheduler_timeout() == 2.5
    for bad in ("0", "-1", "soon", "inf", "nan"):
        monkeypatch.setenv(SCHEDULER_TIMEOUT_ENV, bad)
        with pytest.raises(ConfigError, match=SCHEDULER_TIMEOUT_ENV):
            scheduler_timeout()
