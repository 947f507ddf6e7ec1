"""The dashboard cannot change anything: its engine and its SQL box on SQLite and PostgreSQL,
its store and MLflow readers, and `tracker dashboard` refusing a database it cannot show."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from cli_support import run_tracker, tracker_env
from dashboard_support import count, reader_role

from dashboard import data
from tracker._exceptions import QueryRejected

CHANGES = [
    "INSERT INTO studies (name) VALUES ('sneaky')",
    "UPDATE studies SET name = 'renamed'",
    "DELETE FROM studies",
    "DROP TABLE studies",
    "CREATE TABLE extra (x integer)",
]


@pytest.fixture
def one_study(db) -> Iterator[str]:
    """A database with one study, as the URL the dashboard would use: on PostgreSQL the
    read-only role that `tracker db create-reader` makes (the owner's URL gets no SQL box)."""
    from tracker._queue import get_or_create_study

    with db.session() as session:
        get_or_create_study(session, "kept")
    if db.engine.dialect.name != "postgresql":
        yield db.url
        return
    with reader_role(db) as url:
        yield url


def test_sql_box_rejects_every_change(one_study: str) -> None:
    engine = data.readonly_engine(one_study)
    try:
        assert data.sql_box_problem(engine) is None
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
        data.readonly_store(str(tmp_path / "none.zarr"))
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


HOSTILE = [
    "COPY (SELECT 1) TO PROGRAM 'id > {probe}'",
    "COPY (SELECT 1) TO '{probe}'",
    "SELECT pg_read_file('/etc/hostname')",
    "SELECT pg_catalog.pg_ls_dir('.')",
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
    "SELECT pg_advisory_lock(42)",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT query_to_xml('DELETE FROM studies', true, true, '')",
    "SELECT nextval('studies_id_seq')",
    "DO $$ BEGIN DELETE FROM studies; END $$",
    "WITH gone AS (DELETE FROM studies RETURNING *) SELECT * FROM gone",
    "SELECT * INTO copied FROM studies",
    "SELECT * FROM studies FOR UPDATE",
    "EXPLAIN ANALYZE DELETE FROM studies",
    "EXPLAIN (ANALYZE) SELECT 1",
    "SELECT 1; SELECT 2",
]


@pytest.mark.postgres
@pytest.mark.parametrize("template", HOSTILE)
def test_statement_allow_list_refuses_what_reaches_beyond_the_tables(
    template: str, pg_admin_url: str, tmp_path
) -> None:
    """Layer 1: parsed with PostgreSQL's grammar, refused before the server sees it, even
    when the dashboard's role could run it. (No database of its own: nothing reaches one.)"""
    from tracker._readonly import check_statement

    probe = tmp_path / "probe.txt"
    sql = template.format(probe=probe)
    with pytest.raises(QueryRejected, match="refused") as err:
        check_statement(sql, "postgresql")
    assert "\n" not in str(err.value)
    assert not probe.exists()


@pytest.fixture
def pg_db(pg_url: str):
    from schema_support import migrated

    from tracker._db import Database

    database = Database(pg_url)
    migrated(database)  # a copy of the suite's migrated template
    yield database
    database.dispose()


@pytest.mark.postgres
def test_reader_role_cannot_read_files_run_programs_or_write(pg_db, tmp_path) -> None:
    """Layer 2: the role made by create-reader, with the allow-list bypassed."""
    db = pg_db
    from tracker._readonly import role_problem

    with db.engine.connect() as conn:
        assert "superuser" in (role_problem(conn) or "")
        assert "create-reader" in (role_problem(conn) or "")
    probe = tmp_path / "probe.txt"
    with reader_role(db) as url:
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                assert role_problem(conn) is None
            for sql in (
                "SELECT pg_read_file('/etc/hostname')",
                f"COPY (SELECT 1) TO PROGRAM 'id > {probe}'",
                f"COPY (SELECT 1) TO '{probe}'",
                "INSERT INTO studies (name) VALUES ('sneaky')",
                "SET default_transaction_read_only = off; INSERT INTO studies (name) VALUES ('x')",
                "CREATE TABLE extra (x integer)",
            ):
                with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError):
                    conn.exec_driver_sql(sql)
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT count(*) FROM studies").scalar() == 0
        finally:
            engine.dispose()
    assert not probe.exists()


@pytest.mark.postgres
def test_sql_box_is_off_for_a_superuser_or_a_writing_role(pg_db) -> None:
    db = pg_db
    engine = data.readonly_engine(db.url)
    try:
        assert "superuser" in (data.sql_box_problem(engine) or "")
        with pytest.raises(QueryRejected, match="create-reader"):
            data.run_readonly_sql(engine, "SELECT 1")
    finally:
        engine.dispose()
    with reader_role(db) as url:
        with db.engine.begin() as conn:  # a reader that was given one write privilege
            role = sa.engine.make_url(url).username
            conn.exec_driver_sql(f'GRANT INSERT ON studies TO "{role}"')
        engine = data.readonly_engine(url)
        try:
            problem = data.sql_box_problem(engine) or ""
            assert "write access to studies" in problem and "create-reader" in problem
        finally:
            engine.dispose()


@pytest.mark.postgres
def test_sql_box_leaves_no_lock_or_setting_behind(one_study: str, pg_admin_url: str) -> None:
    if not one_study.startswith("postgresql"):
        return  # SQLite has no session state to leave behind (the connection is closed too)
    engine = data.readonly_engine(one_study)
    try:
        # Each run is a new server session: the one that ran user SQL was closed, not pooled.
        ports = {int(data.run_readonly_sql(engine, "SELECT inet_client_port() AS p")["p"][0])
                 for _ in range(3)}  # fmt: skip
        assert len(ports) == 3
    finally:
        engine.dispose()
    admin = sa.create_engine(pg_admin_url)
    try:
        with admin.connect() as conn:
            held = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            ).scalar()
        assert held == 0
    finally:
        admin.dispose()


def test_sql_box_stops_a_runaway_query_and_caps_rows(one_study: str, monkeypatch) -> None:
    from tracker import _readonly

    monkeypatch.setattr(_readonly, "STATEMENT_SECONDS", 1)
    monkeypatch.setattr(_readonly, "MAX_ROWS", 5)
    engine = data.readonly_engine(one_study)
    try:
        forever = ("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c "
                   "WHERE n < 1000000000000) SELECT count(*) FROM c")  # fmt: skip
        with pytest.raises(QueryRejected, match="longer than 1 s"):
            data.run_readonly_sql(engine, forever)
        many = ("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 50) "
                "SELECT n FROM c")  # fmt: skip
        result = data.run_readonly_sql(engine, many)
        assert result["n"].tolist() == [1, 2, 3, 4, 5]
        assert "first 5 rows" in result.attrs["note"]
        # The engine still serves the dashboard's own queries afterwards.
        assert data.schema_problem(engine) is None
    finally:
        engine.dispose()


def test_sqlite_authorizer_allows_reads_only(sqlite_url: str) -> None:
    from tracker._db import Database
    from tracker._migrate import upgrade

    upgrade(Database(sqlite_url))
    engine = data.readonly_engine(sqlite_url)
    try:
        for sql in (
            "SELECT load_extension('evil')",
            "SELECT * FROM pragma_table_info('studies')",
            "WITH x AS (SELECT 1) DELETE FROM studies",
        ):
            with pytest.raises(QueryRejected, match="read-only"):
                data.run_readonly_sql(engine, sql)
        for sql in ("PRAGMA query_only = OFF", "BEGIN", "VACUUM"):
            with pytest.raises(QueryRejected, match="not a query"):
                data.run_readonly_sql(engine, sql)
        assert data.run_readonly_sql(engine, "VALUES (1, 'a')").shape == (1, 2)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_create_reader_command(pg_url: str, tmp_path) -> None:
    from schema_support import migrated

    from tracker._db import Database

    env = tracker_env(tmp_path, pg_url)
    owner = Database(pg_url)
    migrated(owner)  # the schema, as its owner: a copy of the suite's migrated template
    owner.dispose()
    role = f"r_{sa.engine.make_url(pg_url).database}"
    env["TRACKER_READER_PASSWORD"] = "s3cret'pw"
    made = run_tracker("db", "create-reader", "--role", role, env=env)
    try:
        assert made.returncode == 0, made.stderr
        assert f"--db postgresql+psycopg://{role}:***@" in made.stdout
        assert "s3cret" not in made.stdout
        again = run_tracker("db", "create-reader", "--role", role, env=env)  # idempotent
        assert again.returncode == 0, again.stderr
        url = sa.engine.make_url(pg_url).set(username=role, password="s3cret'pw")
        engine = data.readonly_engine(url.render_as_string(hide_password=False))
        try:
            assert data.sql_box_problem(engine) is None
            assert data.run_readonly_sql(engine, "SELECT count(*) AS n FROM tasks")["n"][0] == 0
        finally:
            engine.dispose()
    finally:
        admin = sa.create_engine(pg_url)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
        admin.dispose()
    for args, says in ((("--role", "x; DROP TABLE tasks"), "plain role name"),):
        bad = run_tracker("db", "create-reader", *args, env=env)
        assert bad.returncode == 2 and says in bad.stderr
        assert bad.stderr.strip().count("\n") == 0, bad.stderr


def test_create_reader_refuses_sqlite_in_one_line(tmp_path) -> None:
    env = tracker_env(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    bad = run_tracker("db", "create-reader", env=env)
    assert bad.returncode == 2 and "for PostgreSQL" in bad.stderr
    assert bad.stderr.strip().count("\n") == 0, bad.stderr


@pytest.mark.postgres
def test_meta_page_hides_the_sql_box_from_the_owner_and_shows_it_to_the_reader(
    pg_db, tmp_path, monkeypatch
) -> None:
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    app = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
    monkeypatch.setenv("TRACKER_HOME", str(tmp_path / ".tracker"))
    monkeypatch.setenv("TRACKER_STORE", str(tmp_path / "store.zarr"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")

    def meta_page(url: str) -> AppTest:
        monkeypatch.setenv("TRACKER_DB_URL", url)
        at = AppTest.from_file(app, default_timeout=60)
        at.switch_page("views/meta.py")
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    owner = meta_page(pg_db.url)
    warnings = [w.value for w in owner.warning]
    assert any("superuser" in w and "tracker db create-reader" in w for w in warnings), warnings
    assert not [t for t in owner.text_area if t.key == "sql"]
    with reader_role(pg_db) as url:
        reader = meta_page(url)
        assert [t for t in reader.text_area if t.key == "sql"]
        reader.text_area(key="sql").set_value("SELECT count(*) AS n FROM studies").run()
        assert not reader.exception and not reader.error
        assert reader.dataframe[-1].value["n"].tolist() == [0]
