"""The schema is made only by migrations, and the migrations equal the ORM, on both databases."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import exc as sa_exc

from tracker._db import SCHEMA_REVISION, Database, open_database, utcnow
from tracker._exceptions import SchemaOutOfDate
from tracker._migrate import downgrade, head_revision, upgrade
from tracker._queue import enqueue, get_or_create_study
from tracker._schema import Base, Checkpoint, Model, Study, Task


def _diff(db: Database) -> list:
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, Base.metadata)


def test_code_revision_is_the_migration_head():
    assert head_revision() == SCHEMA_REVISION


def test_migrated_schema_equals_the_orm_metadata(db):
    assert _diff(db) == []


def test_downgrade_to_base_then_upgrade_round_trips(db):
    downgrade(db, "base")
    assert db.revision() is None
    with db.engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) <= {"alembic_version"}
    upgrade(db)
    assert db.revision() == SCHEMA_REVISION
    assert _diff(db) == []


def test_an_unmigrated_database_is_refused_with_the_command_to_run(db_url):
    with pytest.raises(SchemaOutOfDate, match=r"no tracker schema: run `tracker db upgrade`"):
        open_database(db_url)


def test_an_old_revision_is_refused_with_the_command_to_run(db):
    with db.connection() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0000_ancient'"))
    with pytest.raises(SchemaOutOfDate, match=r"revision 0000_ancient.*run `tracker db upgrade`"):
        open_database(db.url)


def test_nan_and_infinite_losses_are_stored_as_null(db):
    """NULL is what SQL aggregates skip (issue 16); tests/meta/test_views.py checks avg()."""
    with db.session() as session:
        st = get_or_create_study(session, "s")
        task, _ = enqueue(session, st, "train", {})
        model = Model(study_id=st.id, task_id=task.id, spec_hash="m", architecture="mlp",
                      dataset="digits", optimizer="sgd", lr=0.1, batch_size=32, epochs=1, seed=0)  # fmt: skip
        session.add(model)
        session.flush()
        for epoch, loss in enumerate([math.nan, math.inf, -math.inf, 0.25]):
            session.add(Checkpoint(model_id=model.id, epoch=epoch, train_loss=loss))
    with db.session() as session:
        losses = session.scalars(sa.select(Checkpoint.train_loss).order_by(Checkpoint.epoch)).all()
        finite = session.scalars(
            sa.select(Checkpoint.epoch).where(Checkpoint.train_loss < 1.0)
        ).all()
    assert losses == [None, None, None, 0.25]
    assert finite == [3]  # SQL filters see the finite numbers only


def test_foreign_keys_are_enforced(db):
    with pytest.raises(sa_exc.IntegrityError), db.session() as session:
        session.add(Task(study_id=12345, kind="noop", spec_hash="x", payload={}))


def test_timestamps_come_from_the_database_clock_in_utc(db):
    with db.session() as session:
        get_or_create_study(session, "clock")
    with db.session() as session:
        created = session.scalar(sa.select(Study.created_at))
        now = session.scalar(sa.select(utcnow()))
    now_utc = datetime.now(UTC).replace(tzinfo=None)
    for stamp in (created, now):
        naive = stamp.astimezone(UTC).replace(tzinfo=None) if stamp.tzinfo else stamp
        assert abs(naive - now_utc) < timedelta(minutes=1)


def test_task_status_is_constrained(db):
    with pytest.raises(sa_exc.IntegrityError), db.session() as session:
        st = get_or_create_study(session, "s")
        session.add(Task(study_id=st.id, kind="noop", spec_hash="y", payload={}, status="paused"))
