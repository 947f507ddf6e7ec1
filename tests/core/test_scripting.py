"""The workflow driven by a script: --json everywhere, ls with safe filters, cancel, delete, tags.

Real processes on real SQLite and PostgreSQL databases and a real Zarr store; outputs are
read with json.loads only, never by parsing prose.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from cli_support import one_line_error, run_tracker, tracker_env

from tracker._db import Database
from tracker._schema import ArrayRef, Study, Task
from tracker._store import ArrayStore


def _json(*args: str, env: dict[str, str]) -> object:
    proc = run_tracker(*args, "--json", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture
def env(tmp_path: Path, db_url: str, db: Database) -> dict[str, str]:
    """The environment of a home on a migrated database (the suite's `db`: a copy of a
    migrated template, not a `tracker db upgrade` process per test; test_cli covers that)."""
    return tracker_env(tmp_path, db_url, str(tmp_path / "store.zarr"))


def _noop(db: Database, count: int, study: str = "default") -> list[int]:
    """Set-up: the rows `tracker enqueue noop --count COUNT --study STUDY` writes, written here
    (the command itself is test_enqueue_status_show_and_ls_answer_in_json's)."""
    from tracker._queue import enqueue, get_or_create_study

    with db.session() as session:
        st = get_or_create_study(session, study)
        return [enqueue(session, st, "noop", {"index": i, "seconds": 0.0})[0].id
                for i in range(count)]  # fmt: skip


def test_enqueue_status_show_and_ls_answer_in_json(env: dict[str, str]):
    made = _json("enqueue", "noop", "--count", "3", "--study", "s1", env=env)
    assert made["study"] == "s1" and made["what"] == "tasks"
    assert len(made["ids"]) == 3 and made["new"] == made["ids"] and made["already_queued"] == []
    again = _json("enqueue", "noop", "--count", "3", "--study", "s1", env=env)
    assert again["ids"] == made["ids"] and again["new"] == [] and again["created"] == {}

    status = _json("status", env=env)
    assert [(c["study"], c["kind"], c["pending"]) for c in status["counts"]] == [("s1", "noop", 3)]
    task = _json("show", "task", str(made["ids"][1]), env=env)
    assert task["payload"] == {"index": 1, "seconds": 0.0} and task["status"] == "pending"

    listed = _json("ls", "tasks", "--study", "s1", "--where", f"id>{made['ids'][0]}", env=env)
    assert [t["id"] for t in listed] == made["ids"][1:]
    studies = _json("ls", "studies", env=env)
    assert [s["name"] for s in studies] == ["s1"]


def test_work_summary_in_json(env: dict[str, str], db: Database):
    _noop(db, 4, "w")
    summary = _json("work", "--no-progress", env=env)
    assert (summary["done"], summary["failed"], summary["unfinished"]) == (4, 0, 0)


@pytest.mark.parametrize(
    ("where", "needles"),
    [
        ("id=1; DROP TABLE tasks", ["is not an integer"]),
        ("1=1 OR id", ["is not COLUMN OP VALUE"]),
        ("secret>0", ["no column 'secret'", "its columns"]),
        ("payload=1", ["holds JSON"]),
        ("started_at<yesterday", ["is not a date-time"]),
        ("finished_at>null", ["only by = or !="]),
    ],
)
def test_where_takes_only_known_columns_and_typed_values(
    env: dict[str, str], db: Database, where: str, needles: list[str]
):
    _noop(db, 2)
    one_line_error(run_tracker("ls", "tasks", "--where", where, env=env), *needles, code=2)
    assert len(_json("ls", "tasks", env=env)) == 2  # nothing was dropped


def test_where_values_are_parameters_not_sql(env: dict[str, str], db: Database):
    _noop(db, 1, "plain")
    _noop(db, 1, "100%_sure")
    assert _json("ls", "studies", "--where", "name=x' OR '1'='1", env=env) == []
    # ~ is "contains" with % and _ taken literally, not as LIKE wildcards.
    assert [s["name"] for s in _json("ls", "studies", "--where", "name~%_", env=env)] == [
        "100%_sure"
    ]
    assert len(_json("ls", "tasks", "--where", "finished_at=null", env=env)) == 2
    assert _json("ls", "tasks", "--where", "finished_at!=null", env=env) == []


def test_cancel_takes_pending_work_off_the_queue_and_requeue_brings_it_back(
    env: dict[str, str], db: Database
):
    a = _noop(db, 3, "a")
    b = _noop(db, 2, "b")
    cancelled = _json("cancel", "--study", "a", env=env)
    assert cancelled["cancelled"] == a
    assert _json("cancel", str(b[0]), env=env)["cancelled"] == [b[0]]
    with db.session() as session:
        states = dict(session.execute(sa.select(Task.id, Task.status)).all())
    assert [states[i] for i in a] == ["failed"] * 3
    assert [states[i] for i in b] == ["failed", "pending"]
    summary = _json("work", "--no-progress", env=env)
    assert summary["done"] == 1  # only b's uncancelled task ran
    assert run_tracker("requeue", *map(str, a), env=env).returncode == 0
    assert _json("work", "--no-progress", env=env)["done"] == 3
    one_line_error(run_tracker("cancel", env=env), "task ids or --study", code=2)


def _study_with_arrays(env: dict[str, str], db_url: str, name: str, n: int) -> list[int]:
    from tracker._queue import enqueue, get_or_create_study

    db = Database(db_url)
    with db.session() as session:
        study = get_or_create_study(session, name)
        ids = [enqueue(session, study, "test.array", {"value": i})[0].id for i in range(n)]
    db.dispose()
    work = run_tracker("work", "--plugin", "queue_kinds", "--no-progress",
                       "--study", name, env=env)  # fmt: skip
    assert work.returncode == 0, work.stderr[-2000:]
    return ids


def test_delete_a_study_takes_its_rows_and_arrays_and_nothing_else(
    env: dict[str, str], db_url: str, tmp_path: Path
):
    gone = _study_with_arrays(env, db_url, "old", 2)
    kept = _study_with_arrays(env, db_url, "new", 1)
    store = ArrayStore(str(tmp_path / "store.zarr"))
    paths = {i: f"test/{i}/values" for i in gone + kept}
    assert all(store.exists(p) for p in paths.values())

    dry = _json("delete", "study", "old", "--dry-run", env=env)
    assert dry["dry_run"] and sorted(dry["rows"]["tasks"]) == gone
    assert sorted(dry["arrays"]) == sorted(paths[i] for i in gone)
    assert all(store.exists(p) for p in paths.values())  # a dry run changes nothing

    done = _json("delete", "study", "old", env=env)
    assert sorted(done["rows"]["tasks"]) == gone
    db = Database(db_url)
    with db.session() as session:
        assert session.scalars(sa.select(Study.name)).all() == ["new"]
        assert sorted(session.scalars(sa.select(Task.id))) == kept
        assert sorted(session.scalars(sa.select(ArrayRef.path))) == [paths[kept[0]]]
    db.dispose()
    assert not any(store.exists(paths[i]) for i in gone) and store.exists(paths[kept[0]])
    one_line_error(run_tracker("delete", "study", "old", env=env), "unknown study 'old'", code=2)


def test_delete_is_refused_while_a_task_runs(env: dict[str, str], db: Database):
    made = _noop(db, 2, "busy")
    with db.session() as session:
        session.execute(sa.update(Task).where(Task.id == made[0]).values(status="running"))
    one_line_error(run_tracker("delete", "study", "busy", env=env), "is running", code=2)
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Task)) == 2


def test_tags_and_notes_on_studies_and_models(env: dict[str, str]):
    made = _json("enqueue", "model", "--arch", "mlp", "--dataset", "digits", "--study", "t",
                 "--name", "small", env=env)  # fmt: skip
    assert made["what"] == "models" and made["new"] == made["ids"] and len(made["tasks"]) == 1
    tagged = _json("tag", "study", "t", "--add", "sweep,baseline", "--note", "first try", env=env)
    assert tagged["tags"] == ["sweep", "baseline"] and tagged["note"] == "first try"
    _json("tag", "study", "t", "--remove", "sweep", env=env)
    _json("tag", "model", "small", "--add", "keep", env=env)
    studies = _json("ls", "studies", env=env)
    assert (studies[0]["tags"], studies[0]["note"]) == (["baseline"], "first try")
    models = _json("ls", "models", "--study", "t", env=env)
    assert models[0]["tags"] == ["keep"] and models[0]["name"] == "small"
    one_line_error(run_tracker("tag", "study", "t", "--add", "a" * 65, env=env), "tag", code=2)
    text = run_tracker("ls", "studies", env=env).stdout
    assert "baseline" in text and "first try" in text
    shown = _json("show", "study", "t", env=env)
    assert shown["study"]["tags"] == ["baseline"] and shown["models"][0]["id"] == made["ids"][0]
    assert [(c["kind"], c["pending"]) for c in shown["counts"]] == [("train", 1)]


def test_a_command_without_its_own_json_still_answers_in_json(env: dict[str, str], tmp_path):
    """A verb that knows nothing of --json reports the rows it created and its lines."""
    proc = run_tracker("db", "current", "--json", env=env)
    out = json.loads(proc.stdout)
    assert out["created"] == {} and "up to date" in out["output"][0]


def test_reading_commands_create_no_file_or_folder(tmp_path: Path):
    env = tracker_env(tmp_path)
    target = tmp_path / "new" / "dir" / "x.db"
    for args in (["status"], ["ls", "models"], ["show", "task", "1"], ["db", "current"]):
        proc = run_tracker("--db", f"sqlite:///{target}", *args, env=env)
        one_line_error(proc, "does not exist", "tracker db upgrade", code=2)
    assert not (tmp_path / "new").exists()
    assert not (tmp_path / ".tracker").exists()


def _on_terminal(*args: str, env: dict[str, str], columns: int = 160) -> str:
    """`tracker ARGS` with its standard output on a pseudo-terminal ``columns`` wide."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    main_fd, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {**env, "TERM": "xterm-256color", "COLUMNS": str(columns)}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "tracker.cli", *args], stdout=terminal,
                            stderr=subprocess.PIPE, env=env)  # fmt: skip
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main_fd)
    assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_tables_are_drawn_by_rich_on_a_terminal_and_stay_plain_for_scripts(
    env: dict[str, str], db: Database
):
    """Issue 19: the tables of ls and status use the progress bar's library on a terminal;
    piped, they are the plain columns scripts read, and --json is unchanged."""
    import re

    ids = _noop(db, 2, "s1")
    plain = run_tracker("ls", "tasks", env=env).stdout.splitlines()
    assert plain[0].split()[:4] == ["id", "study_id", "kind", "status"]
    assert "─" not in "\n".join(plain) and "\x1b" not in "\n".join(plain)
    assert [int(line.split()[0]) for line in plain[1:]] == ids
    assert plain[1].split()[2:4] == ["noop", "pending"] and "  noop  pending  " in plain[1]

    for args in (["ls", "tasks"], ["status"]):
        drawn = _on_terminal(*args, env=env)
        text = re.sub(r"\x1b\[[0-9;]*m", "", drawn)  # without rich's colours and bold
        lines = text.strip("\n").splitlines()
        assert "\x1b[" in drawn, drawn  # styled for the terminal
        assert set(lines[1].strip()) == {"─"}, text  # rich's rule under the header
        assert "pending" in text and "noop" in text
        piped = run_tracker(*args, env=env).stdout
        assert piped.splitlines()[0].split() == lines[0].split()  # the same columns
    assert _json("ls", "tasks", env=env)[0]["id"] == ids[0]  # --json untouched
