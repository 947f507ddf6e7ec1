"""Level-set traversals and their L2 baseline (issue 6, seed 002)

Revision ID: 0004_levelset
Revises: 0003_retrain_topology
Create Date: 2026-11-23

levelset_runs gains what a traversal records (data seed, phase-1 epochs, final training
accuracy, the trace's field names, the snapshot steps); its weight-norm column is renamed to
say that it holds R = ||theta||^2. l2_baseline_runs holds the baseline: one row per (setup,
lambda, run) with data losses stored apart from the penalty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from tracker._schema import Real

# Frozen copy of the JSON type used at this revision.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0004_levelset"
down_revision = "0003_retrain_topology"
branch_labels = None
depends_on = None

_NEW_LEVELSET_COLUMNS = (
    ("data_seed", sa.Integer()),
    ("phase1_epochs", sa.Integer()),
    ("final_train_acc", Real()),
    ("trace_fields", JSON),
    ("snapshot_steps", JSON),
)


def upgrade() -> None:
    # Batch mode: SQLite renames a column by rebuilding the table.
    with op.batch_alter_table("levelset_runs") as batch:
        batch.alter_column("final_weight_norm", new_column_name="final_weight_norm_sq",
                           existing_type=sa.Double(), existing_nullable=True)  # fmt: skip
        for name, type_ in _NEW_LEVELSET_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))

    op.create_table(
        "l2_baseline_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("setup", sa.String(length=32), nullable=False),
        sa.Column("l2_lambda", Real(), nullable=False),
        sa.Column("run_index", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("data_seed", sa.Integer(), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("lr", Real(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("final_train_loss", Real(), nullable=True),
        sa.Column("final_train_acc", Real(), nullable=True),
        sa.Column("final_test_loss", Real(), nullable=True),
        sa.Column("final_test_acc", Real(), nullable=True),
        sa.Column("final_penalty", Real(), nullable=True),
        sa.Column("final_kernel_sq_norm", Real(), nullable=True),
        sa.Column("final_weight_norm_sq", Real(), nullable=True),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("params_array_id", sa.Integer(), nullable=True),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.current_timestamp(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["params_array_id"],
            ["arrays.id"],
            name=op.f("fk_l2_baseline_runs_params_array_id_arrays"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_l2_baseline_runs_study_id_studies")
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_l2_baseline_runs_task_id_tasks"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_l2_baseline_runs")),
        sa.UniqueConstraint("spec_hash", name=op.f("uq_l2_baseline_runs_spec_hash")),
    )
    with op.batch_alter_table("l2_baseline_runs") as batch:
        batch.create_index(batch.f("ix_l2_baseline_runs_setup"), ["setup"], unique=False)
        batch.create_index(batch.f("ix_l2_baseline_runs_l2_lambda"), ["l2_lambda"], unique=False)
        batch.create_index(batch.f("ix_l2_baseline_runs_study_id"), ["study_id"], unique=False)
        batch.create_index(batch.f("ix_l2_baseline_runs_task_id"), ["task_id"], unique=False)


def downgrade() -> None:
    op.drop_table("l2_baseline_runs")
    with op.batch_alter_table("levelset_runs") as batch:
        for name, _ in reversed(_NEW_LEVELSET_COLUMNS):
            batch.drop_column(name)
        batch.alter_column("final_weight_norm_sq", new_column_name="final_weight_norm",
                           existing_type=sa.Double(), existing_nullable=True)  # fmt: skip
