"""The dashboard cannot change anything: its engine and its SQL box on SQLite and PostgreSQL,
its store and MLflow readers, and `tracker dashboard` refusing a database it cannot show."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from cli_support import run_tracker, tracker_env
from dashboard_support import count

from dashboard import data

CHANGES = [
    "INSERT INTO studies (name) VALUES ('sneaky')",
    "UPDATE studies SET name = 'renamed'",
    "DELETE FROM studies",
    "DROP TABLE studies",
    "CREATE TABLE extra (x integer)",
]


@pytest.fixture
def one_study(db) -> str:
    from tracker._queue import get_or_create_study

    with db.session() as session:
        get_or_create_study(session, "kept")
    return db.url


def test_sql_box_rejects_every_change(one_study: str) -> None:
    engine = data.readonly_engine(one_study)
    try:
        for sql in CHANGES:
            with pytest.raises(data.QueryRejected, match="read-only") as err:
                data.run_readonly_sql(engine, sql)
            assert "\n" not in str(err.value), sql
    finally:
        engine.dispose()
    assert count(one_study, "studies") == 1
    assert _names(one_study) == ["kept"]


def _names(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT name FROM studies")).scalars())
    finally:
        engine.dispose()


def test_sql_box_runs_one_query_and_nothing_else(one_study: str) -> None:
    engine = data.readonly_engine(one_study)
    try:
        result = data.run_readonly_sql(engine, "SELECT name, 1 + 1 AS two FROM studies;")
        assert result.to_dict("records") == [{"name": "kept", "two": 2}]
        with pytest.raises(data.QueryRejected):
            data.run_readonly_sql(engine, "SELECT 1; DELETE FROM studies")
        with pytest.raises(data.QueryRejected, match="empty"):
            data.run_readonly_sql(engine, "  ;  ")
        with pytest.raises(data.QueryRejected, match=r"no such table|does not exist"):
            data.run_readonly_sql(engine, "SELECT * FROM no_such_table")
    finally:
        engine.dispose()

    # Nor can a user switch the session back to read-write.
    engine = data.readonly_engine(one_study)
    try:
        if engine.dialect.name == "postgresql":
            reset = "SET default_transaction_read_only = off"
        else:
            reset = "PRAGMA query_only = OFF"
        with pytest.raises(data.QueryRejected):
            data.run_readonly_sql(engine, reset)  # returns no rows: refused as not a query
        with pytest.raises(data.QueryRejected, match="read-only"):
            data.run_readonly_sql(engine, "DELETE FROM studies")
    finally:
        engine.dispose()
    assert _names(one_study) == ["kept"]


def test_sqlite_attach_is_denied(tmp_path, sqlite_url: str) -> None:
    from tracker._db import Database
    from tracker._migrate import upgrade

    upgrade(Database(sqlite_url))
    engine = data.readonly_engine(sqlite_url)
    try:
        with pytest.raises(data.QueryRejected, match=r"read-only|not authorized"):
            data.run_readonly_sql(engine, f"ATTACH DATABASE '{tmp_path / 'other.db'}' AS other")
    finally:
        engine.dispose()
    assert not (tmp_path / "other.db").exists()


def test_missing_sqlite_file_and_store_are_not_created(tmp_path) -> None:
    engine = data.readonly_engine(f"sqlite:///{tmp_path / 'none.db'}")
    assert "cannot read the database" in (data.schema_problem(engine) or "")
    engine.dispose()
    with pytest.raises(data.StoreError, match="TRACKER_STORE"):
        data.ReadOnlyStore(str(tmp_path / "none.zarr"))
    assert data.mlflow_available(f"sqlite:///{tmp_path / 'mlflow.db'}") is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_dashboard_command_refuses_a_database_without_schema(tmp_path) -> None:
    env = tracker_env(tmp_path, f"sqlite:///{tmp_path / 'empty.db'}")
    result = run_tracker("dashboard", "--port", "1", "--headless", env=env)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "--port must be between 1 and 65535" not in result.stderr
    assert "tracker db upgrade" in result.stderr


def test_dashboard_command_reports_an_unreachable_server_in_one_line(tmp_path) -> None:
    env = tracker_env(tmp_path, "postgresql+psycopg://nobody@127.0.0.1:1/none")
    result = run_tracker("dashboard", "--headless", env=env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "cannot reach the database" in result.stderr
