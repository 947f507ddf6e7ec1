"""Shared fixtures: real SQLite and PostgreSQL databases, a Zarr store, the CLI as a process.

PostgreSQL tests use the server at TRACKER_TEST_PG (default 127.0.0.1:5432, trust auth) and
a fresh database per test. Without a server they skip with a message, except under CI=true,
where a missing server is an error.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
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


@pytest.fixture(autouse=True)
def _environment_restored() -> Iterator[None]:
    """Undo what a test's in-process command left in os.environ (`tracker work` sets glibc's
    MALLOC_* for the workers it spawns). A leaked variable outlived its test and made every
    later `run_tracker` on that pytest worker differ from the warm server's environment, so
    they all started cold: 398 of 483 commands in one profiled run."""
    before = dict(os.environ)
    yield
    if dict(os.environ) != before:
        os.environ.clear()
        os.environ.update(before)


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


# Fixtures shared by every test and cheap to make again: no reason to keep tests together.
_SHARED_ANYWHERE = {"mlflow_template_dir", "pg_admin_url", "chromium"}
# Where the workers leave the groups for the controller's scheduler (`--dist loadgroup`).
_GROUPS_FILE = "TRACKER_TEST_XDIST_GROUPS"


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and config.getoption("dist", "no") == "loadgroup":
        fd, path = tempfile.mkstemp(prefix="tracker-xdist-groups-", suffix=".json")
        os.close(fd)
        os.environ[_GROUPS_FILE] = path  # the workers, started later, inherit it


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and _GROUPS_FILE in os.environ:
        Path(os.environ.pop(_GROUPS_FILE)).unlink(missing_ok=True)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the tests that share an expensive module- or session-scoped fixture of this suite on
    one pytest-xdist worker, under ``--dist loadgroup``.

    Under ``--dist load`` a module's tests are spread over both workers and each worker builds
    the module's trained homes again (seen: test_surfaces' `done` 14.4 s + 6.5 s, test_morse's
    `trained` twice, the dashboard's `seeded` study once per worker). Tests are joined when
    they share one fixture instance (a module fixture per module, a session fixture per name),
    transitively, and get an ``xdist_group`` mark named by their first such fixture.
    """
    tests_dir = Path(__file__).resolve().parent
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    keys_of: list[list[str]] = []
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        keys = []
        for name in item.fixturenames if info is not None else ():
            defs = info.name2fixturedefs.get(name)
            if not defs or name in _SHARED_ANYWHERE:
                continue
            fixture = defs[-1]
            if fixture.scope not in ("module", "package", "session"):
                continue
            source = getattr(fixture.func, "__code__", None)
            if source is None or not Path(source.co_filename).resolve().is_relative_to(tests_dir):
                continue  # pytest's and plugins' own fixtures
            if fixture.scope == "module":
                keys.append(f"{name}:{item.nodeid.split('::')[0]}")
            elif fixture.scope == "package":
                keys.append(f"{name}:{item.nodeid.split('::')[0].rpartition('/')[0]}")
            else:
                keys.append(name)
        for key in keys[1:]:
            parent[find(key)] = find(keys[0])
        keys_of.append(keys)
    for item, keys in zip(items, keys_of, strict=True):
        if keys:
            item.add_marker(pytest.mark.xdist_group(find(keys[0])))
    if hasattr(config, "workerinput") and _GROUPS_FILE in os.environ:
        groups = {}
        for item in items:
            names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                            for m in item.iter_markers("xdist_group")})  # fmt: skip
            if names:
                groups[item.nodeid] = "_".join(names)
        target = Path(os.environ[_GROUPS_FILE])
        part = target.with_name(f"{target.name}.{os.getpid()}")
        part.write_text(json.dumps(groups))
        part.replace(target)  # each worker collects the same tests: the same groups


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``--dist loadgroup`` that works with this pytest: xdist 3.8 marks a group by renaming
    the test (``item._nodeid``), which pytest 9 no longer reads, so every test ran alone. The
    scheduler here reads the groups the workers wrote (above) instead; every other test is
    its own unit, as under ``--dist load``, and the groups (largest first) go out first."""
    if config.getoption("dist", "no") != "loadgroup" or _GROUPS_FILE not in os.environ:
        return None
    from xdist.scheduler import LoadGroupScheduling

    path = Path(os.environ[_GROUPS_FILE])

    class FixtureGroups(LoadGroupScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:
                text = path.read_text() if path.exists() else ""
                self.groups = json.loads(text) if text else {}
            group = self.groups.get(nodeid)
            return f"group:{group}" if group else super()._split_scope(nodeid)

    return FixtureGroups(config, log)
