"""Ensembles and Morse graphs (issue 6, seed 003)

Revision ID: 0005_morse
Revises: 0004_levelset
Create Date: 2026-11-23

DOODL3 trains ensembles of small models and keeps two checkpoints per model: ``ensembles``
holds the spec and the arrays [models, params] of early and final weights, and
``ensemble_members`` each model's test metrics. A Morse graph is computed from one ensemble;
its timing, seed and Conley flag become columns.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005_morse"
down_revision = "0004_levelset"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _array_fk(table: str, column: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], ["arrays.id"], name=op.f(f"fk_{table}_{column}_arrays"), ondelete="SET NULL"
    )


def upgrade() -> None:
    op.create_table(
        "ensembles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("setup", sa.String(length=32), nullable=False),
        sa.Column("n_models", sa.Integer(), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("early_epoch", sa.Integer(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("data_seed", sa.Integer(), nullable=False),
        sa.Column("chunk_size", sa.Integer(), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("param_names", JSON, nullable=False),
        sa.Column("kernel_columns", JSON, nullable=False),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("early_array_id", sa.Integer(), nullable=True),
        sa.Column("final_array_id", sa.Integer(), nullable=True),
        sa.Column("loss_array_id", sa.Integer(), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.current_timestamp(),
            nullable=False,
        ),
        _array_fk("ensembles", "early_array_id"),
        _array_fk("ensembles", "final_array_id"),
        _array_fk("ensembles", "loss_array_id"),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_ensembles_study_id_studies")
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_ensembles_task_id_tasks"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ensembles")),
        sa.UniqueConstraint("spec_hash", name=op.f("uq_ensembles_spec_hash")),
    )
    with op.batch_alter_table("ensembles") as batch:
        batch.create_index(batch.f("ix_ensembles_setup"), ["setup"], unique=False)
        batch.create_index(batch.f("ix_ensembles_study_id"), ["study_id"], unique=False)
        batch.create_index(batch.f("ix_ensembles_task_id"), ["task_id"], unique=False)

    op.create_table(
        "ensemble_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ensemble_id", sa.Integer(), nullable=False),
        sa.Column("model_index", sa.Integer(), nullable=False),
        sa.Column("accuracy", sa.Double(), nullable=True),
        sa.Column("balanced_accuracy", sa.Double(), nullable=True),
        sa.Column("entropy", sa.Double(), nullable=True),
        sa.Column("final_loss", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["ensemble_id"],
            ["ensembles.id"],
            name=op.f("fk_ensemble_members_ensemble_id_ensembles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ensemble_members")),
        sa.UniqueConstraint(
            "ensemble_id", "model_index", name=op.f("uq_ensemble_members_ensemble_id_model_index")
        ),
    )

    # Batch mode: SQLite cannot add a foreign key to an existing table in place.
    with op.batch_alter_table("morse_graphs") as batch:
        batch.add_column(sa.Column("ensemble_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("seed", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("conley", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("seconds", sa.Double(), nullable=True))
        batch.add_column(sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_foreign_key(
            op.f("fk_morse_graphs_ensemble_id_ensembles"), "ensembles", ["ensemble_id"], ["id"]
        )
        batch.create_index(batch.f("ix_morse_graphs_ensemble_id"), ["ensemble_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("morse_graphs") as batch:
        batch.drop_index(batch.f("ix_morse_graphs_ensemble_id"))
        batch.drop_constraint(op.f("fk_morse_graphs_ensemble_id_ensembles"), type_="foreignkey")
        for column in ("completed_at", "seconds", "conley", "seed", "ensemble_id"):
            batch.drop_column(column)
    op.drop_table("ensemble_members")
    with op.batch_alter_table("ensembles") as batch:
        batch.drop_index(batch.f("ix_ensembles_task_id"))
        batch.drop_index(batch.f("ix_ensembles_study_id"))
        batch.drop_index(batch.f("ix_ensembles_setup"))
    op.drop_table("ensembles")
