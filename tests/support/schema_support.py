"""A migrated database in milliseconds: copies of one template per test process.

Running the Alembic migrations costs about a second per database (SQLite batch rebuilds,
thirteen revisions); most tests only need the result. The first call in a process migrates a
template with `tracker._migrate.upgrade` (the same migrations, this checkout's head); later
calls copy it: SQLite through the backup API into the test's own file, PostgreSQL with
``CREATE DATABASE ... TEMPLATE`` (conftest's `pg_url` makes a test's database that way at
once when the test uses `db`: creating a database is the slow part on a busy disk). Tests
about the migrations themselves call `upgrade`.
"""

from __future__ import annotations

import atexit
import os
import sqlite3
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

_lock = threading.Lock()
_sqlite_template: Path | None = None
_pg_templates: dict[str, str] = {}  # server URL (no database) -> template database name


def migrated(db: Any) -> None:
    """Bring the new database ``db`` (a tracker._db.Database) to head, as ``upgrade(db)``
    does: an empty one by a copy, one at head not at all, any other by Alembic."""
    from tracker._migrate import head_revision, upgrade

    if not _is_empty(db.engine):
        if db.revision() != head_revision():
            upgrade(db)
    elif db.dialect == "sqlite" and db.engine.url.database not in (None, "", ":memory:"):
        _copy_sqlite(db)
    elif db.dialect == "postgresql":
        _copy_postgresql(db)
    else:
        upgrade(db)


def _is_empty(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return not sa.inspect(conn).get_table_names()


def _sqlite_template_file() -> Path:
    global _sqlite_template
    with _lock:
        if _sqlite_template is None:
            from tracker._db import Database
            from tracker._migrate import upgrade

            folder = Path(tempfile.mkdtemp(prefix="tracker-schema-"))
            template = Database(f"sqlite:///{folder / 'template.db'}")
            upgrade(template)
            template.dispose()  # the last connection checkpoints the WAL into the file
            _sqlite_template = folder / "template.db"
        return _sqlite_template


def _copy_sqlite(db: Any) -> None:
    source = sqlite3.connect(_sqlite_template_file())
    try:
        with db.engine.connect() as conn:
            target = conn.connection.dbapi_connection
            source.backup(target)
    finally:
        source.close()
    db.engine.dispose()  # no pooled connection keeps settings read before the copy


def _copy_postgresql(db: Any) -> None:
    url = db.engine.url
    server = url.set(database="postgres").render_as_string(hide_password=False)
    template = pg_template(server)
    db.engine.dispose()
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{url.database}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{url.database}" TEMPLATE "{template}"')
    finally:
        admin.dispose()


def pg_template(server: str) -> str:
    """The name of this process's migrated template database on ``server`` (an SQLAlchemy
    URL of any database there), made on first use and dropped at exit."""
    server = sa.make_url(server).set(database="postgres").render_as_string(hide_password=False)
    with _lock:
        if server not in _pg_templates:
            from tracker._db import Database
            from tracker._migrate import upgrade

            name = f"tracker_template_{os.getpid()}_{uuid.uuid4().hex[:8]}"
            admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            finally:
                admin.dispose()
            template = Database(sa.make_url(server).set(database=name).render_as_string(
                hide_password=False))  # fmt: skip
            upgrade(template)
            template.dispose()  # CREATE DATABASE ... TEMPLATE needs it unconnected
            _pg_templates[server] = name
            atexit.register(_drop, server, name)
        return _pg_templates[server]


def _drop(server: str, name: str) -> None:
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except sa.exc.SQLAlchemyError:
        pass  # the server is gone already: nothing left to drop
    finally:
        admin.dispose()
