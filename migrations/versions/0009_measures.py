"""Measures as rows, generalisation targets, non-finite values as NULL, views (issue 16)

Revision ID: 0009_measures
Revises: 0008_own_models
Create Date: 2026-11-30

``measure_definitions`` names everything that makes measure values comparable and
``measures`` holds one value per (checkpoint, definition): mean over direction seeds, standard
error, seed count. ``models`` gains the generalisation targets (``gap`` = train_acc - test_acc,
``loss_gap`` = test_loss - train_loss) and ``diverged``. Every NaN or infinite float becomes
NULL on both backends (SQLite kept NaN as the text 'NaN', which ``avg()`` counted as 0); a model
whose final losses were non-finite is flagged ``diverged`` first. The views ``v_models``,
``v_surfaces`` and ``v_measures`` are documented in ``tracker/_views.py`` (PostgreSQL: as
column comments). The downgrade drops all of it; the non-finite values stay NULL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009_measures"
down_revision = "0008_own_models"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
LOSSES = ("train_loss", "test_loss")  # a NaN accuracy is a regression task's, not divergence

_MODEL_COLUMNS = """
    m.id AS model_id, st.name AS study, m.name AS model_name, m.architecture, m.dataset,
    m.optimizer, m.lr, m.momentum, m.weight_decay, m.batch_size, m.epochs,
    m.seed AS model_seed, m.label_corruption"""


def _views(dialect: str) -> dict[str, str]:
    precision = (
        "json_extract(s.eval_config, '$.precision')"
        if dialect == "sqlite"
        else "s.eval_config ->> 'precision'"
    )
    return {
        "v_models": f"""
SELECT {_MODEL_COLUMNS},
    m.train_loss, m.train_acc, m.test_loss, m.test_acc, m.gap, m.loss_gap, m.diverged,
    m.mlflow_run_id
FROM models m JOIN studies st ON st.id = m.study_id""",
        "v_surfaces": f"""
SELECT s.id AS surface_id, {_MODEL_COLUMNS},
    c.epoch, dx.kind AS direction_kind, dx.normalization, dx.ignore,
    dx.target AS direction_target, dx.seed AS x_seed, dy.seed AS y_seed,
    CASE WHEN s.ny IS NULL THEN 1 ELSE 2 END AS dims, s.x_min, s.x_max, s.nx, s.ny, s.split,
    s.subset_size, s.n_minibatches, s.minibatch_size, s.bn_mode, {precision} AS precision,
    s.centre_loss, s.rise_r025, s.rise_r050, s.rise_r100, s.flatness_width,
    CASE WHEN s.completed_at IS NULL THEN 0 ELSE 1 END AS completed
FROM surfaces s JOIN checkpoints c ON c.id = s.checkpoint_id
JOIN models m ON m.id = c.model_id JOIN studies st ON st.id = m.study_id
LEFT JOIN directions dx ON dx.id = s.x_direction_id
LEFT JOIN directions dy ON dy.id = s.y_direction_id""",
        "v_measures": f"""
SELECT ms.id AS measure_id, {_MODEL_COLUMNS},
    ms.epoch, CASE WHEN ms.epoch = m.epochs THEN 1 ELSE 0 END AS is_final,
    d.id AS definition_id, d.key AS definition, d.family, d.kind, d.direction_kind,
    d.normalization, d.dims, d.split, d.bn_mode, d.precision,
    ms.value, ms.standard_error, ms.n_seeds, ms.n_missing,
    m.train_acc, m.test_acc, m.gap, m.loss_gap, m.diverged
FROM measures ms JOIN measure_definitions d ON d.id = ms.definition_id
JOIN models m ON m.id = ms.model_id JOIN studies st ON st.id = m.study_id""",
    }


def _non_finite(dialect: str, column: str) -> str:
    if dialect == "sqlite":  # NaN was the text 'NaN'; infinities are real 9e999 values
        return f"(typeof({column}) = 'text' OR {column} IN (9e999, -9e999))"
    return f"({column} = 'NaN' OR {column} IN ('Infinity', '-Infinity'))"


def _float_columns(bind: sa.engine.Connection) -> dict[str, list[str]]:
    inspector = sa.inspect(bind)
    out: dict[str, list[str]] = {}
    for table in inspector.get_table_names():
        cols = [c["name"] for c in inspector.get_columns(table) if isinstance(c["type"], sa.Float)]
        if cols:
            out[table] = cols
    return out


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("gap", sa.Double(), nullable=True))
        batch.add_column(sa.Column("loss_gap", sa.Double(), nullable=True))
        batch.add_column(
            sa.Column("diverged", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    any_bad = " OR ".join(_non_finite(dialect, c) for c in LOSSES)
    op.execute(f"UPDATE models SET diverged = {sa.true().compile(dialect=bind.dialect)} WHERE {any_bad}")
    for table, columns in _float_columns(bind).items():
        for column in columns:
            op.execute(f"UPDATE {table} SET {column} = NULL WHERE {_non_finite(dialect, column)}")
    op.execute("UPDATE models SET gap = train_acc - test_acc, loss_gap = test_loss - train_loss")

    op.create_table(
        "measure_definitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=500), nullable=False),
        sa.Column("family", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("direction_kind", sa.String(length=16), nullable=True),
        sa.Column("normalization", sa.String(length=16), nullable=True),
        sa.Column("ignore", sa.String(length=16), nullable=True),
        sa.Column("direction_target", sa.String(length=16), nullable=True),
        sa.Column("dims", sa.Integer(), nullable=True),
        sa.Column("grid", sa.String(length=100), nullable=True),
        sa.Column("split", sa.String(length=16), nullable=True),
        sa.Column("subset_size", sa.Integer(), nullable=True),
        sa.Column("n_minibatches", sa.Integer(), nullable=True),
        sa.Column("minibatch_size", sa.Integer(), nullable=True),
        sa.Column("bn_mode", sa.String(length=16), nullable=True),
        sa.Column("precision", sa.String(length=16), nullable=True),
        sa.Column("config", JSON, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_measure_definitions")),
        sa.UniqueConstraint("key", name=op.f("uq_measure_definitions_key")),
    )
    op.create_index(op.f("ix_measure_definitions_family"), "measure_definitions", ["family"])
    op.create_index(op.f("ix_measure_definitions_kind"), "measure_definitions", ["kind"])
    op.create_table(
        "measures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("definition_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("checkpoint_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("standard_error", sa.Double(), nullable=True),
        sa.Column("n_seeds", sa.Integer(), nullable=False),
        sa.Column("n_missing", sa.Integer(), server_default="0", nullable=False),
        sa.Column("sources", JSON, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_measures_study_id_studies")
        ),
        sa.ForeignKeyConstraint(
            ["definition_id"], ["measure_definitions.id"],
            name=op.f("fk_measures_definition_id_measure_definitions"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_measures_model_id_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"], ["checkpoints.id"],
            name=op.f("fk_measures_checkpoint_id_checkpoints"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_measures")),
        sa.UniqueConstraint(
            "definition_id", "checkpoint_id", name=op.f("uq_measures_definition_id_checkpoint_id")
        ),
    )
    op.create_index(op.f("ix_measures_study_id"), "measures", ["study_id"])
    op.create_index(op.f("ix_measures_definition_id"), "measures", ["definition_id"])
    op.create_index(op.f("ix_measures_model_id"), "measures", ["model_id"])

    for name, sql in _views(dialect).items():
        op.execute(f"CREATE VIEW {name} AS {sql}")
    if dialect == "postgresql":
        from tracker._views import VIEW_DOCS

        for name, (doc, columns) in VIEW_DOCS.items():
            op.execute(f"COMMENT ON VIEW {name} IS {_quote(doc)}")
            for column, text in columns.items():
                op.execute(f"COMMENT ON COLUMN {name}.{column} IS {_quote(text)}")


def _quote(text: str) -> str:
    # COMMENT takes no bind parameters: a literal, quotes doubled.
    return "'" + text.replace("'", "''") + "'"


def downgrade() -> None:
    for name in ("v_measures", "v_surfaces", "v_models"):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_table("measures")
    op.drop_table("measure_definitions")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("diverged")
        batch.drop_column("loss_gap")
        batch.drop_column("gap")
