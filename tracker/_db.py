"""Engines, sessions, the database clock and the schema-revision check.

SQLite: WAL, a busy timeout, foreign keys on, and every transaction opened with
``BEGIN IMMEDIATE`` so a claim's read and write are one atomic step (SQLAlchemy silently
drops ``FOR UPDATE`` there). PostgreSQL: ``FOR UPDATE SKIP LOCKED`` does the same job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.functions import FunctionElement

from tracker._exceptions import ConfigError, DatabaseUnreachable, SchemaOutOfDate
from tracker._schema import UTCDateTime

# The Alembic head this code is written against; a test keeps it equal to migrations/.
SCHEMA_REVISION = "0016_retrain_surfaces"

SQLITE_BUSY_TIMEOUT_MS = 60_000


class utcnow(FunctionElement[Any]):
    """The database's clock in UTC, optionally shifted by a number of seconds.

    Leases are stamped and compared with this clock only, so workers on machines with
    skewed clocks still agree on which leases have expired.
    """

    type = UTCDateTime
    inherit_cache = True
    name = "utcnow"


def utcnow_plus(seconds: float) -> utcnow:
    return utcnow(sa.literal(float(seconds), sa.Double()))


@compiles(utcnow, "postgresql")
def _utcnow_pg(element: utcnow, compiler: Any, **kw: Any) -> str:
    args = list(element.clauses)
    if not args:
        return "clock_timestamp()"
    return f"(clock_timestamp() + make_interval(secs => {compiler.process(args[0], **kw)}))"


@compiles(utcnow, "sqlite")
def _utcnow_sqlite(element: utcnow, compiler: Any, **kw: Any) -> str:
    args = list(element.clauses)
    if not args:
        return "strftime('%Y-%m-%d %H:%M:%f', 'now')"
    offset = compiler.process(args[0], **kw)
    return f"strftime('%Y-%m-%d %H:%M:%f', 'now', ({offset}) || ' seconds')"


def redact(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys = ON")
    if not getattr(dbapi_conn, "_tracker_readonly", False):
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
    cur.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, *, echo: bool = False) -> sa.Engine:
    """An engine for ``url`` with the tracker's per-dialect rules applied."""
    try:
        parsed = sa.engine.make_url(url)
    except sa_exc.ArgumentError:
        raise ConfigError(
            f"malformed database URL {url!r}: use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST:PORT/DB"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            try:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ConfigError(
                    f"cannot create the folder of the database {parsed.database} "
                    f"({err.strerror or err}): fix --db / TRACKER_DB_URL"
                ) from None
        engine = sa.create_engine(
            parsed, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    if backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            return sa.create_engine(
                parsed,
                echo=echo,
                pool_pre_ping=True,
                connect_args={"connect_timeout": 5},
            )
        except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError) as err:
            raise ConfigError(f"malformed database URL {redact(url)!r}: {err}") from None
    raise ConfigError(
        f"unsupported database {backend!r} in {redact(url)!r}: use sqlite:/// or postgresql+psycopg://"
    )


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class Database:
    """An engine and a session factory for one database URL."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, echo=echo)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def ping(self) -> None:
        """Connect once; raise DatabaseUnreachable with the fix if that fails."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as err:
            raise DatabaseUnreachable(
                f"cannot reach the database at {redact(self.url)} ({_first_line(err)}): "
                "start the server or fix TRACKER_DB_URL / --db"
            ) from None

    def revision(self) -> str | None:
        """The Alembic revision the database is at, or None if it has no tracker schema."""
        try:
            with self.engine.connect() as conn:
                if not sa.inspect(conn).has_table("alembic_version"):
                    return None
                return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as err:
            raise DatabaseUnreachable(
                f"cannot reach the database at {redact(self.url)} ({_first_line(err)}): "
                "start the server or fix TRACKER_DB_URL / --db"
            ) from None

    def check_schema(self) -> None:
        """Refuse a database whose schema is not at this code's migration head."""
        current = self.revision()
        if current == SCHEMA_REVISION:
            return
        where = redact(self.url)
        if current is None:
            raise SchemaOutOfDate(
                f"the database at {where} has no tracker schema: run `tracker db upgrade`"
            )
        raise SchemaOutOfDate(
            f"the database at {where} is at schema revision {current}, this tracker needs "
            f"{SCHEMA_REVISION}: run `tracker db upgrade` (or upgrade tracker if the database is newer)"
        )

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def connection(self) -> Iterator[sa.Connection]:
        """A Core connection in one transaction (the queue's hot path uses these)."""
        with self.engine.begin() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(url: str, *, check: bool = True) -> Database:
    """Open ``url``, verify it answers and (unless ``check`` is False) that its schema is current."""
    db = Database(url)
    db.ping()
    if check:
        db.check_schema()
    return db
