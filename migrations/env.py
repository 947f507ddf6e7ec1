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
    if connection.dialect.name == "sqlite":
        # Batch migrations rebuild a table and rename the copy; views that read the table
        # (v_models, v_surfaces, v_measures) would make SQLite refuse that rename.
        connection.exec_driver_sql("PRAGMA legacy_alter_table = ON")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("tracker migrations run online only: use `tracker db upgrade`")
run_migrations_online()
