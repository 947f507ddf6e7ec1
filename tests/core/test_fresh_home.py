"""A fresh embedded home: writing commands create the SQLite schema themselves, reading commands
create nothing, and a database that exists but is not at head is still refused (issue 14, 16)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from cli_support import one_line_error as _one_line_error
from cli_support import run_tracker, tracker_env

from tracker._db import SCHEMA_REVISION, Database
from tracker._migrate import head_revision, upgrade
from tracker._schema import Base


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_fresh_home_enqueue_creates_the_schema_and_status_creates_nothing(tmp_path: Path):
    env = tracker_env(tmp_path)  # the defaults: SQLite under TRACKER_HOME, nothing created yet
    db_file = tmp_path / ".tracker" / "tracker.db"
    url = f"sqlite:///{db_file}"
    # A reading command on the fresh home: refused as before, and no schema appears.
    _one_line_error(run_tracker("status", env=env), "no tracker schema", "tracker db upgrade")
    assert not db_file.exists() or _tables(url) == set()

    enq = run_tracker("enqueue", "noop", "--count", "3", "--study", "fresh", env=env)
    assert enq.returncode == 0, enq.stderr
    assert "3 new noop task(s)" in enq.stdout
    db = Database(url)
    try:
        assert db.revision() == SCHEMA_REVISION == head_revision()
    finally:
        db.dispose()
    assert set(Base.metadata.tables) <= _tables(url)
    status = run_tracker("status", env=env)
    assert status.returncode == 0 and "fresh" in status.stdout, status.stderr


def _schema(db_file: Path) -> list[tuple[str, str, str]]:
    import sqlite3

    with sqlite3.connect(db_file) as conn:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE "
                            "'sqlite_%' ORDER BY type, name").fetchall()  # fmt: skip
        version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    # Alembic's table rebuilds list a table's constraints in an order of their own (a set's),
    # which differs between two runs of the same migrations: compare the clauses as a set.
    clauses = [(kind, name, " | ".join(sorted(re.split(r",\s*\n\t|, ",
                                                       (sql or "").removesuffix("\n)")))))
               for kind, name, sql in rows]  # fmt: skip
    return [*clauses, ("version", str(version), "")]


def test_a_new_home_copies_the_prepared_schema_that_the_migrations_make(
    tmp_path: Path, mlflow_template_dir: Path
):
    """A writing command in a new home copies a template made by the migrations (once per
    machine and schema) instead of running them: the same tables, indexes and revision as
    `tracker db upgrade` (Alembic) makes, and the copy takes rows and is in WAL mode."""
    import sqlite3

    migrated = tmp_path / "migrated"
    copied = tmp_path / "copied"
    migrated.mkdir()
    copied.mkdir()
    assert run_tracker("db", "upgrade", env=tracker_env(migrated)).returncode == 0
    for _ in range(2):  # the first may make the template, the second surely copies it
        copied_env = tracker_env(copied)
        enq = run_tracker("enqueue", "noop", "--count", "2", env=copied_env)
        assert enq.returncode == 0, enq.stderr
        db_file = copied / ".tracker" / "tracker.db"
        assert _schema(db_file) == _schema(migrated / ".tracker" / "tracker.db")
        with sqlite3.connect(db_file) as conn:
            assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (2,)
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        import shutil

        shutil.rmtree(copied / ".tracker")
    assert list(mlflow_template_dir.glob(f"tracker-{SCHEMA_REVISION}-*.db"))


@pytest.mark.parametrize(
    "command",
    [
        ["work", "--no-progress"],
        ["train", "--arch", "mlp", "--widths", "8", "--dataset", "iris", "--epochs", "1"],
    ],
    ids=["work", "train"],
)
def test_fresh_home_work_and_train_create_the_schema(tmp_path: Path, command: list[str]):
    env = tracker_env(tmp_path)
    proc = run_tracker(*command, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    db = Database(f"sqlite:///{tmp_path / '.tracker' / 'tracker.db'}")
    try:
        assert db.revision() == SCHEMA_REVISION
    finally:
        db.dispose()


def test_an_old_revision_sqlite_file_is_refused_not_upgraded(tmp_path: Path):
    env = tracker_env(tmp_path)
    url = f"sqlite:///{tmp_path / '.tracker' / 'tracker.db'}"
    (tmp_path / ".tracker").mkdir()
    db = Database(url)
    upgrade(db, "0005_morse")  # a database made by an older tracker
    db.dispose()
    for command in (["enqueue", "noop"], ["work"]):
        _one_line_error(run_tracker(*command, env=env), "revision 0005_morse",
                        "`tracker db upgrade`")  # fmt: skip
    db = Database(url)
    try:
        assert db.revision() == "0005_morse"  # left as it was: upgrading is the user's call
    finally:
        db.dispose()


def test_a_sqlite_file_of_another_program_is_refused(tmp_path: Path):
    db_file = tmp_path / "other.db"
    engine = sa.create_engine(f"sqlite:///{db_file}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)"))
    engine.dispose()
    env = tracker_env(tmp_path, f"sqlite:///{db_file}")
    _one_line_error(run_tracker("enqueue", "noop", env=env), "no tracker schema",
                    "tracker db upgrade")  # fmt: skip
    assert _tables(f"sqlite:///{db_file}") == {"notes"}


def test_postgresql_without_the_schema_is_refused(tmp_path: Path, pg_url: str):
    env = tracker_env(tmp_path, pg_url)
    for command in (["enqueue", "noop"], ["work"]):
        _one_line_error(run_tracker(*command, env=env), "no tracker schema",
                        "`tracker db upgrade`")  # fmt: skip
    assert _tables(pg_url) == set()


def test_train_in_new_homes_gets_mlflow_tables_from_one_template_and_prints_no_info(
    tmp_path: Path,
):
    """MLflow's tables come from a template made once per machine (not its migrations in every
    home), and none of MLflow's INFO lines reach the terminal; each home records its run."""
    import sqlite3

    templates = tmp_path / "templates"
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        env = tracker_env(tmp_path / name)
        env["TRACKER_MLFLOW_TEMPLATE_DIR"] = str(templates)
        proc = run_tracker("train", "--arch", "mlp", "--widths", "8", "--dataset", "iris",
                           "--epochs", "1", env=env)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "INFO" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
        assert len(list(templates.glob("mlflow-*.db"))) == 1
        with sqlite3.connect(tmp_path / name / ".tracker" / "mlflow.db") as conn:
            assert conn.execute("SELECT status FROM runs").fetchall() == [("FINISHED",)]
