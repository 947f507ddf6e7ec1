"""Curvature: Hessian spectra per checkpoint, eigenvector directions, curvature surfaces (issue 15)

Revision ID: 0007_curvature
Revises: 0006_resilience
Create Date: 2026-11-30

``hessian_spectra`` holds one row per checkpoint and measure (top-k eigenvalues, trace,
density). ``directions`` gains the kind 'hessian' (a unit eigenvector) with its eigen index and
spectrum. ``surfaces`` gains ``curvature`` (Goldstein's min/max eigenvalue map) and the arrays
of lambda_min, lambda_max and |lambda_min / lambda_max| per grid point. The downgrade drops
the Hessian directions with the spectra they came from.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from tracker._schema import Real

revision = "0007_curvature"
down_revision = "0006_resilience"
branch_labels = None
depends_on = None

# Frozen copies of the types used at this revision.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_KINDS_BEFORE = ("random", "interpolation", "pca")
_KINDS_AFTER = (*_KINDS_BEFORE, "hessian")


def _kind_check(kinds: tuple[str, ...]) -> str:
    return "kind IN (" + ", ".join(f"'{k}'" for k in kinds) + ")"


def _array_fk(column: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        ["arrays.id"],
        name=op.f(f"fk_hessian_spectra_{column}_arrays"),
        ondelete="SET NULL",
    )


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def upgrade() -> None:
    op.create_table(
        "hessian_spectra",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("checkpoint_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("measure", _enum("hessian_measure", "eigen", "trace", "density"), nullable=False),
        sa.Column("split", sa.String(length=16), nullable=False),
        sa.Column("subset_size", sa.Integer(), nullable=True),
        sa.Column("subset_seed", sa.Integer(), nullable=False),
        sa.Column("minibatch_size", sa.Integer(), nullable=True),
        sa.Column("n_minibatches", sa.Integer(), nullable=True),
        sa.Column("bn_mode", _enum("hessian_bn_mode", "eval", "train"), nullable=False),
        sa.Column("dropout", sa.String(length=16), nullable=False),
        sa.Column("loss", sa.String(length=16), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("tol", Real(), nullable=False),
        sa.Column("max_iter", sa.Integer(), nullable=False),
        sa.Column("top_k", sa.Integer(), nullable=True),
        sa.Column("per_layer", sa.Boolean(), nullable=False),
        sa.Column("probes", sa.Integer(), nullable=True),
        sa.Column("density_runs", sa.Integer(), nullable=True),
        sa.Column("density_steps", sa.Integer(), nullable=True),
        sa.Column("config", JSON, nullable=False),
        sa.Column("loss_value", Real(), nullable=True),
        sa.Column("eigenvalues", JSON, nullable=True),
        sa.Column("residuals", JSON, nullable=True),
        sa.Column("iterations", sa.Integer(), nullable=True),
        sa.Column("converged", sa.Boolean(), nullable=True),
        sa.Column("top_eigenvalue", Real(), nullable=True),
        sa.Column("trace", Real(), nullable=True),
        sa.Column("trace_stderr", Real(), nullable=True),
        sa.Column("trace_probes", sa.Integer(), nullable=True),
        sa.Column("layer_traces", JSON, nullable=True),
        sa.Column("layer_trace_stderr", JSON, nullable=True),
        sa.Column("hvp_count", sa.Integer(), nullable=True),
        sa.Column("seconds", Real(), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("eigenvectors_array_id", sa.Integer(), nullable=True),
        sa.Column("history_array_id", sa.Integer(), nullable=True),
        sa.Column("density_array_id", sa.Integer(), nullable=True),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.current_timestamp(),
            nullable=False,
        ),
        sa.CheckConstraint(
            "top_k IS NULL OR top_k >= 1", name=op.f("ck_hessian_spectra_top_k_positive")
        ),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"],
            ["checkpoints.id"],
            name=op.f("fk_hessian_spectra_checkpoint_id_checkpoints"),
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_hessian_spectra_model_id_models")
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_hessian_spectra_study_id_studies")
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_hessian_spectra_task_id_tasks"),
            ondelete="SET NULL",
        ),
        _array_fk("eigenvectors_array_id"),
        _array_fk("history_array_id"),
        _array_fk("density_array_id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hessian_spectra")),
        sa.UniqueConstraint("spec_hash", name=op.f("uq_hessian_spectra_spec_hash")),
    )
    for column in ("model_id", "checkpoint_id", "measure", "study_id", "task_id"):
        op.create_index(op.f(f"ix_hessian_spectra_{column}"), "hessian_spectra", [column])

    with op.batch_alter_table("directions") as batch:
        batch.drop_constraint(op.f("ck_directions_direction_kind"), type_="check")
        batch.create_check_constraint(
            op.f("ck_directions_direction_kind"), sa.text(_kind_check(_KINDS_AFTER))
        )
        batch.add_column(sa.Column("eigen_index", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("hessian_spectrum_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_directions_hessian_spectrum_id_hessian_spectra"),
            "hessian_spectra",
            ["hessian_spectrum_id"],
            ["id"],
        )
        batch.create_index(op.f("ix_directions_hessian_spectrum_id"), ["hessian_spectrum_id"])

    with op.batch_alter_table("surfaces") as batch:
        batch.add_column(
            sa.Column("curvature", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        for name in ("lambda_min", "lambda_max", "lambda_ratio"):
            batch.add_column(sa.Column(f"{name}_array_id", sa.Integer(), nullable=True))
            batch.create_foreign_key(
                op.f(f"fk_surfaces_{name}_array_id_arrays"),
                "arrays",
                [f"{name}_array_id"],
                ["id"],
                ondelete="SET NULL",
            )


def downgrade() -> None:
    with op.batch_alter_table("surfaces") as batch:
        for name in ("lambda_min", "lambda_max", "lambda_ratio"):
            batch.drop_constraint(op.f(f"fk_surfaces_{name}_array_id_arrays"), type_="foreignkey")
            batch.drop_column(f"{name}_array_id")
        batch.drop_column("curvature")
    # Surfaces along Hessian eigenvectors lose their directions: they go with them.
    hessian = "SELECT id FROM directions WHERE kind = 'hessian'"
    op.execute(
        f"DELETE FROM tiles WHERE surface_id IN (SELECT id FROM surfaces WHERE "
        f"x_direction_id IN ({hessian}) OR y_direction_id IN ({hessian}))"
    )
    op.execute(
        f"DELETE FROM surfaces WHERE x_direction_id IN ({hessian}) OR y_direction_id IN ({hessian})"
    )
    op.execute("DELETE FROM directions WHERE kind = 'hessian'")
    with op.batch_alter_table("directions") as batch:
        batch.drop_index(op.f("ix_directions_hessian_spectrum_id"))
        batch.drop_constraint(
            op.f("fk_directions_hessian_spectrum_id_hessian_spectra"), type_="foreignkey"
        )
        batch.drop_column("hessian_spectrum_id")
        batch.drop_column("eigen_index")
        batch.drop_constraint(op.f("ck_directions_direction_kind"), type_="check")
        batch.create_check_constraint(
            op.f("ck_directions_direction_kind"), sa.text(_kind_check(_KINDS_BEFORE))
        )
    for column in ("model_id", "checkpoint_id", "measure", "study_id", "task_id"):
        op.drop_index(op.f(f"ix_hessian_spectra_{column}"), table_name="hessian_spectra")
    op.drop_table("hessian_spectra")
