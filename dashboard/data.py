"""Read-only access to the tracker's database, array store and MLflow, for the dashboard.

`tracker dashboard` puts the resolved locations in the environment (TRACKER_DB_URL,
TRACKER_STORE, MLFLOW_TRACKING_URI, TRACKER_MLFLOW_UI); every page reads them through
:func:`sources`. Nothing here writes: SQLite is opened with ``mode=ro`` and ``query_only``,
PostgreSQL sessions default to read-only transactions with a statement timeout, and the Zarr
store is opened with ``mode="r"``. The SQL box goes through tracker._readonly: a statement
allow-list, a role without write privileges, time/row/size limits (see that module).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa

from tracker import _readonly
from tracker._config import resolve
from tracker._db import SCHEMA_REVISION, redact
from tracker._exceptions import ConfigError
from tracker._exceptions import QueryRejected as QueryRejected  # the SQL box's refusals
from tracker._exceptions import StoreError as StoreError  # a store that cannot be read

if TYPE_CHECKING:
    from tracker._store import ArrayStore

STATEMENT_TIMEOUT_MS = _readonly.STATEMENT_SECONDS * 1000
MAX_ROWS = _readonly.MAX_ROWS
DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"


@dataclass(frozen=True)
class Sources:
    """Where the dashboard reads from."""

    db_url: str
    store_url: str
    mlflow_uri: str
    mlflow_ui: str


def sources() -> Sources:
    """The locations `tracker dashboard` resolved (same rules as every tracker command)."""
    settings = resolve()
    ui = os.environ.get("TRACKER_MLFLOW_UI") or (
        settings.mlflow_uri if settings.mlflow_uri.startswith("http") else DEFAULT_MLFLOW_UI
    )
    return Sources(settings.db_url, settings.store_url, settings.mlflow_uri, ui.rstrip("/"))


# --- the database ---------------------------------------------------------------------------

_SQLITE_DENIED = {sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH}


def _sqlite_authorizer(action: int, *_args: Any) -> int:
    # ATTACH could open another, writable file beside the read-only one.
    return sqlite3.SQLITE_DENY if action in _SQLITE_DENIED else sqlite3.SQLITE_OK


def _sqlite_readonly_connect(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA query_only = ON")
    cur.execute("PRAGMA busy_timeout = 5000")
    cur.close()
    dbapi_conn.set_authorizer(_sqlite_authorizer)


def readonly_engine(url: str) -> sa.Engine:
    """An engine that cannot change the database at ``url``."""
    parsed = sa.engine.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = Path(parsed.database or "")
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError(f"the dashboard needs a database file, got {redact(url)}")
        ro = f"sqlite:///file:{path.absolute()}?mode=ro&uri=true"
        engine = sa.create_engine(ro, connect_args={"timeout": 5})
        sa.event.listen(engine, "connect", _sqlite_readonly_connect)
        return engine
    if backend == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
        options = f"-c default_transaction_read_only=on -c statement_timeout={STATEMENT_TIMEOUT_MS}"
        return sa.create_engine(
            parsed, pool_pre_ping=True, connect_args={"connect_timeout": 5, "options": options}
        )
    raise ConfigError(
        f"unsupported database {backend!r} in {redact(url)}: use sqlite:/// or postgresql+psycopg://"
    )


def schema_problem(engine: sa.Engine) -> str | None:
    """Why the database cannot be shown (unreachable, no schema, other revision), or None."""
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return "the database has no tracker schema: run `tracker db upgrade`"
            current = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    except sa.exc.DBAPIError as err:
        return f"cannot read the database ({_first_line(err)})"
    if current != SCHEMA_REVISION:
        return (
            f"the database is at schema revision {current}, this dashboard needs "
            f"{SCHEMA_REVISION}: run `tracker db upgrade`"
        )
    return None


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def frame(engine: sa.Engine, query: str | sa.Executable, **params: Any) -> pd.DataFrame:
    """The rows of ``query`` as a DataFrame (the dashboard's own, trusted queries)."""
    stmt = sa.text(query) if isinstance(query, str) else query
    with engine.connect() as conn:
        result = conn.execute(stmt, params)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def run_readonly_sql(engine: sa.Engine, sql: str) -> pd.DataFrame:
    """One user-written query through the allow-list and the read-only connection.

    The frame's ``attrs["note"]`` says when the result was cut at the row or size limit.
    """
    result = _readonly.run_query(engine, sql)
    df = pd.DataFrame(result.rows, columns=result.columns)
    df.attrs["note"] = result.note
    return df


def sql_box_problem(engine: sa.Engine) -> str | None:
    """Why the SQL box must stay hidden (a superuser or writing role), or None."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        return _readonly.role_problem(conn)


# --- the array store ------------------------------------------------------------------------


def readonly_store(url: str) -> ArrayStore:
    """The array store opened for reading only (a missing store is an error, not created).

    Zarr is imported here, so only the pages that read arrays load it.
    """
    from tracker._store import ArrayStore

    return ArrayStore(url, read_only=True)


# --- MLflow ---------------------------------------------------------------------------------


def mlflow_available(uri: str) -> str | None:
    """Why MLflow cannot be read (a missing local database is not created), or None."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            return f"no MLflow database at {path}: train a model with `tracker work` first"
    return None


def metric_history(uri: str, run_id: str, keys: list[str]) -> pd.DataFrame:
    """Every logged value of ``keys`` in one MLflow run: columns key, step, value."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    rows = [(key, m.step, m.value) for key in keys for m in client.get_metric_history(run_id, key)]
    return pd.DataFrame(rows, columns=["key", "step", "value"]).sort_values(["key", "step"])


def run_links(uri: str, ui: str, run_ids: list[str]) -> dict[str, str]:
    """The MLflow UI address of each run (experiment id looked up in the tracking store)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    links = {}
    for run_id in run_ids:
        try:
            exp = client.get_run(run_id).info.experiment_id
        except Exception:
            continue
        links[run_id] = f"{ui}/#/experiments/{exp}/runs/{run_id}"
    return links
