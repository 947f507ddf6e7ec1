"""Running the Alembic migrations that ship in the ``migrations`` package."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command, util
from alembic.config import Config
from alembic.script import ScriptDirectory

import migrations
from tracker._db import Database, redact
from tracker._exceptions import SchemaOutOfDate


def alembic_config(db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def _run(db: Database, fn: Callable[[Config, str], None], revision: str) -> None:
    """Run an Alembic command; its own errors (an unknown revision, a database newer than this
    code) become one SchemaOutOfDate line naming the fix."""
    cfg = alembic_config(db)
    with db.engine.connect() as conn:
        cfg.attributes["connection"] = conn
        try:
            fn(cfg, revision)
            conn.commit()
        except util.CommandError as err:
            verb = fn.__name__
            raise SchemaOutOfDate(
                f"cannot {verb} {redact(db.url)} to {revision!r} ({str(err).splitlines()[0]}): "
                "name a revision from migrations/versions (`base` drops every table); a database "
                "newer than this tracker needs a newer tracker"
            ) from None
        finally:
            if db.dialect == "sqlite":  # migrations/env.py turned them off for the rebuilds
                conn.rollback()  # nothing left after the commit; a failed migration's changes
                raw = conn.connection.dbapi_connection
                assert raw is not None  # an open connection has its driver connection
                raw.execute("PRAGMA foreign_keys = ON")


def upgrade(db: Database, revision: str = "head") -> None:
    """Create or upgrade the schema to ``revision``."""
    _run(db, command.upgrade, revision)


def downgrade(db: Database, revision: str) -> None:
    """Downgrade the schema to ``revision`` (``base`` drops every tracker table)."""
    _run(db, command.downgrade, revision)
