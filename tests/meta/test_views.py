"""The documented views, non-finite values as NULL, and the schema reference, on both backends."""

from __future__ import annotations

import math
from pathlib import Path

import sqlalchemy as sa

from tracker._migrate import downgrade, upgrade
from tracker._queue import enqueue, get_or_create_study
from tracker._schema import Checkpoint, Model
from tracker._views import VIEW_DOCS, schema_reference

REPO = Path(__file__).resolve().parents[2]


def _model(session, study, name: str, **metrics) -> Model:
    task, _ = enqueue(session, study, "train", {"name": name})
    model = Model(study_id=study.id, task_id=task.id, spec_hash=name, name=name,
                  architecture="mlp", dataset="digits", optimizer="sgd", lr=0.1, batch_size=32,
                  epochs=1, seed=0)  # fmt: skip
    model.record_final(metrics)
    session.add(model)
    session.flush()
    return model


def test_views_return_the_documented_columns(db):
    with db.session() as session:
        study = get_or_create_study(session, "s")
        _model(session, study, "a", train_acc=0.9, test_acc=0.8, train_loss=0.2, test_loss=0.5)
    with db.engine.connect() as conn:
        for name, (_, columns) in VIEW_DOCS.items():
            result = conn.execute(sa.text(f"SELECT * FROM {name}"))
            assert list(result.keys()) == list(columns), name
        row = conn.execute(sa.text("SELECT gap, loss_gap FROM v_models")).one()
    assert row.gap == math.fsum([0.9, -0.8]) and row.loss_gap == 0.5 - 0.2


def test_postgresql_views_carry_the_documented_comments(pg_url):
    from tracker._db import Database

    db = Database(pg_url)
    upgrade(db)
    with db.engine.connect() as conn:
        for name, (doc, columns) in VIEW_DOCS.items():
            got = conn.execute(sa.text("SELECT obj_description(CAST(:v AS regclass), 'pg_class')"),
                               {"v": name}).scalar()  # fmt: skip
            assert got == doc
            for i, (column, text) in enumerate(columns.items(), start=1):
                comment = conn.execute(
                    sa.text("SELECT col_description(CAST(:v AS regclass), :i)"), {"v": name, "i": i}
                ).scalar()
                assert comment == text, (name, column)
    db.dispose()


def test_non_finite_values_round_trip_as_null_and_flag_divergence(db):
    with db.session() as session:
        study = get_or_create_study(session, "s")
        model = _model(session, study, "diverged", train_loss=math.nan, train_acc=0.1,
                       test_loss=math.inf, test_acc=0.1)  # fmt: skip
        for epoch, loss in enumerate([math.nan, math.inf, -math.inf, 0.25]):
            session.add(Checkpoint(model_id=model.id, epoch=epoch, train_loss=loss))
    with db.session() as session:
        stored = session.scalars(sa.select(Checkpoint.train_loss).order_by(Checkpoint.epoch)).all()
        model = session.scalar(sa.select(Model))
        assert stored == [None, None, None, 0.25]
        assert model.diverged and model.train_loss is None and model.test_loss is None
        assert model.gap == 0.0 and model.loss_gap is None


def test_avg_over_a_diverged_run_counts_only_finite_values(db):
    with db.session() as session:
        study = get_or_create_study(session, "s")
        _model(session, study, "a", train_loss=0.2, train_acc=1.0, test_loss=0.3, test_acc=0.9)
        _model(session, study, "b", train_loss=0.4, train_acc=1.0, test_loss=0.7, test_acc=0.8)
        _model(session, study, "c", train_loss=math.nan, train_acc=0.1, test_loss=math.nan,
               test_acc=0.1)  # fmt: skip
    with db.engine.connect() as conn:
        avg, n, diverged = conn.execute(sa.text(
            "SELECT avg(train_loss), count(train_loss), sum(CASE WHEN diverged THEN 1 ELSE 0 END) "
            "FROM v_models")).one()  # fmt: skip
        avg_gap = conn.execute(sa.text("SELECT avg(loss_gap) FROM v_models")).scalar()
    assert (n, diverged) == (2, 1)
    assert math.isclose(float(avg), 0.3)
    assert math.isclose(float(avg_gap), (0.1 + 0.3) / 2)


def test_the_migration_turns_stored_nans_into_null_and_flags_the_model(db):
    downgrade(db, "0006_resilience")
    nan = "'NaN'" if db.engine.dialect.name == "sqlite" else "'NaN'::float8"
    with db.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO studies (id, name) VALUES (1, 's')"))
        conn.execute(sa.text(
            "INSERT INTO tasks (id, study_id, kind, spec_hash, payload, status, priority, attempts, "
            "max_attempts) VALUES (1, 1, 'train', 'x', '{}', 'done', 0, 0, 3)"))  # fmt: skip
        conn.execute(sa.text(
            "INSERT INTO models (id, study_id, task_id, spec_hash, architecture, arch_config, "
            "dataset, dataset_config, optimizer, lr, momentum, weight_decay, batch_size, epochs, "
            "seed, label_corruption, lr_schedule, config, train_loss, train_acc, test_loss, "
            f"test_acc) VALUES (1, 1, 1, 'm', 'mlp', '{{}}', 'digits', '{{}}', 'sgd', 0.1, 0, 0, "
            f"32, 1, 0, 0, '{{}}', '{{}}', {nan}, 0.5, 0.75, 0.25)"))  # fmt: skip
    upgrade(db)
    with db.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT train_loss, diverged, gap, loss_gap FROM models")).one()
        avg = conn.execute(sa.text("SELECT avg(train_loss) FROM models")).scalar()
    assert row.train_loss is None and bool(row.diverged)
    assert row.gap == 0.25 and row.loss_gap is None and avg is None


def test_the_schema_reference_is_current():
    """docs/schema.md is `python -m tracker._views` output: regenerate it after a schema change."""
    assert (REPO / "docs" / "schema.md").read_text() == schema_reference()


def test_a_later_batch_migration_of_a_table_the_views_read_still_works(db, tmp_path):
    """SQLite alters a table by rebuilding and renaming it, which views that read it would
    block; migrations/env.py allows it. A copy of migrations/ plus one later migration that
    alters models and surfaces runs through the same env.py."""
    import shutil

    from alembic import command
    from alembic.config import Config

    from tracker._migrate import head_revision

    folder = tmp_path / "migrations"
    shutil.copytree(REPO / "migrations", folder)
    (folder / "versions" / "9999_later.py").write_text(f"""
import sqlalchemy as sa
from alembic import op

revision = "9999_later"
down_revision = "{head_revision()}"


def upgrade():
    recreate = "always" if op.get_bind().dialect.name == "sqlite" else "auto"
    for table in ("models", "surfaces"):
        with op.batch_alter_table(table, recreate=recreate) as batch:
            batch.add_column(sa.Column("later", sa.Integer(), nullable=True))
""")
    cfg = Config()
    cfg.set_main_option("script_location", str(folder))
    with db.engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "9999_later"
        for name in VIEW_DOCS:
            conn.execute(sa.text(f"SELECT * FROM {name}")).all()


def test_a_regression_models_missing_accuracy_is_not_divergence(db):
    with db.session() as session:
        study = get_or_create_study(session, "s")
        model = _model(session, study, "mpg", train_loss=0.5, train_acc=math.nan,
                       test_loss=0.75, test_acc=math.nan)  # fmt: skip
        assert not model.diverged and model.gap is None and model.loss_gap == 0.25
