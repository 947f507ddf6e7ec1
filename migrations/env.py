"""Alembic environment: runs the tracker's migrations on the connection it is handed."""

from __future__ import annotations

from alembic import context

from tracker._db import make_engine
from tracker._schema import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch migrations copy a table, drop the old one and rename the copy. With foreign
        # keys enforced, SQLite refuses to drop a table that rows elsewhere reference (a
        # populated `models`), so they are off for the migration: set on the driver's
        # connection, before any transaction (inside one the pragma does nothing), checked
        # below before the commit, and back on in tracker._migrate.
        connection.connection.dbapi_connection.execute("PRAGMA foreign_keys = OFF")
        # Views that read a rebuilt table (v_models, v_surfaces, v_measures) would make SQLite
        # refuse the rename.
        connection.exec_driver_sql("PRAGMA legacy_alter_table = ON")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=sqlite,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"the migration left rows with dangling references: {broken[:5]}")


if context.is_offline_mode():
    raise SystemExit("tracker migrations run online only: use `tracker db upgrade`")
run_migrations_online()
