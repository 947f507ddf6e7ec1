"""Shared fixtures: real SQLite and PostgreSQL databases, a Zarr store, the CLI as a process.

PostgreSQL tests use the server at TRACKER_TEST_PG (default 127.0.0.1:5432, trust auth) and
a fresh database per test. Without a server they skip with a message, except under CI=true,
where a missing server is an error.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

SUPPORT_DIR = Path(__file__).resolve().parent / "support"
if str(SUPPORT_DIR) not in sys.path:
    sys.path.insert(0, str(SUPPORT_DIR))

from cli_support import run_tracker, tracker_env  # noqa: E402,F401  (re-exported for tests)
from schema_support import migrated, pg_template  # noqa: E402

PG_ADMIN_URL = os.environ.get(
    "TRACKER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _pg_problem() -> str | None:
    engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as err:
        return str(err).strip().splitlines()[0]
    finally:
        engine.dispose()
    return None


@pytest.fixture(scope="session", autouse=True)
def mlflow_template_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One prepared MLflow database per test session: every new home (and `tracker` process)
    copies it instead of running MLflow's migrations again (tracker/_mlflow.py)."""
    folder = tmp_path_factory.mktemp("mlflow-template")
    old = os.environ.get("TRACKER_MLFLOW_TEMPLATE_DIR")
    os.environ["TRACKER_MLFLOW_TEMPLATE_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("TRACKER_MLFLOW_TEMPLATE_DIR", None)
    else:
        os.environ["TRACKER_MLFLOW_TEMPLATE_DIR"] = old


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    problem = _pg_problem()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs PostgreSQL at {PG_ADMIN_URL}: {problem}")
        pytest.skip(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({problem}); start it to run this test"
        )
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_admin_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards: empty, or already migrated
    (a copy of a template) when the test uses `db` on it."""
    name = f"tracker_test_{uuid.uuid4().hex[:12]}"
    template = pg_template(pg_admin_url) if "db" in request.fixturenames else None
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(
            f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
        )
    url = sa.engine.make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tracker.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return request.getfixturevalue(fixture)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return str(tmp_path / "store.zarr")


@pytest.fixture
def db(db_url: str):
    """A migrated database (SQLite or PostgreSQL): a copy of one migrated per test process."""
    from tracker._db import Database

    database = Database(db_url)
    migrated(database)
    yield database
    database.dispose()
