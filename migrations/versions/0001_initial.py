"""initial schema

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-23

Every table of the first schema: studies, the task queue and its dependencies, array
references, and the result tables of each research method.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from tracker._schema import Real

# Frozen copies of the column types used at this revision.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.current_timestamp(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
        sa.UniqueConstraint("name", name=op.f("uq_studies_name")),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "waiting",
                "pending",
                "running",
                "done",
                "failed",
                name="task_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("lease_token", sa.String(length=36), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", JSON, nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.current_timestamp(),
            nullable=False,
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_tasks_attempts_nonnegative")),
        sa.CheckConstraint("max_attempts >= 1", name=op.f("ck_tasks_max_attempts_positive")),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_tasks_study_id_studies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint("spec_hash", name=op.f("uq_tasks_spec_hash")),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index("ix_tasks_claim", ["status", "priority", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tasks_kind"), ["kind"], unique=False)
        batch_op.create_index("ix_tasks_study_status", ["study_id", "status"], unique=False)

    op.create_table(
        "arrays",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("shape", JSON, nullable=False),
        sa.Column("dtype", sa.String(length=32), nullable=False),
        sa.Column("chunks", JSON, nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.current_timestamp(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_arrays_task_id_tasks"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_arrays")),
        sa.UniqueConstraint("path", name=op.f("uq_arrays_path")),
    )
    with op.batch_alter_table("arrays", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_arrays_task_id"), ["task_id"], unique=False)

    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("architecture", sa.String(length=64), nullable=False),
        sa.Column("arch_config", JSON, nullable=False),
        sa.Column("dataset", sa.String(length=64), nullable=False),
        sa.Column("dataset_config", JSON, nullable=False),
        sa.Column("optimizer", sa.String(length=16), nullable=False),
        sa.Column("lr", Real(), nullable=False),
        sa.Column("momentum", Real(), nullable=False),
        sa.Column("weight_decay", Real(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("label_corruption", Real(), nullable=False),
        sa.Column("lr_schedule", JSON, nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("train_loss", Real(), nullable=True),
        sa.Column("train_acc", Real(), nullable=True),
        sa.Column("test_loss", Real(), nullable=True),
        sa.Column("test_acc", Real(), nullable=True),
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
            ["study_id"], ["studies.id"], name=op.f("fk_models_study_id_studies")
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_models_task_id_tasks"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("spec_hash", name=op.f("uq_models_spec_hash")),
    )
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_models_architecture"), ["architecture"], unique=False)
        batch_op.create_index(batch_op.f("ix_models_batch_size"), ["batch_size"], unique=False)
        batch_op.create_index(batch_op.f("ix_models_dataset"), ["dataset"], unique=False)
        batch_op.create_index(batch_op.f("ix_models_study_id"), ["study_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_models_task_id"), ["task_id"], unique=False)

    op.create_table(
        "task_dependencies",
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("depends_on_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["depends_on_id"],
            ["tasks.id"],
            name=op.f("fk_task_dependencies_depends_on_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_task_dependencies_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "depends_on_id", name=op.f("pk_task_dependencies")),
    )
    with op.batch_alter_table("task_dependencies", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_task_dependencies_depends_on_id"), ["depends_on_id"], unique=False
        )

    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("train_loss", Real(), nullable=True),
        sa.Column("train_acc", Real(), nullable=True),
        sa.Column("val_loss", Real(), nullable=True),
        sa.Column("val_acc", Real(), nullable=True),
        sa.Column("test_loss", Real(), nullable=True),
        sa.Column("test_acc", Real(), nullable=True),
        sa.Column("layout", JSON, nullable=False),
        sa.Column("array_id", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.current_timestamp(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["array_id"],
            ["arrays.id"],
            name=op.f("fk_checkpoints_array_id_arrays"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name=op.f("fk_checkpoints_model_id_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkpoints")),
        sa.UniqueConstraint("model_id", "epoch", name=op.f("uq_checkpoints_model_id_epoch")),
    )
    op.create_table(
        "embeddings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("n_samples", sa.Integer(), nullable=True),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("knn_dist", sa.String(length=16), nullable=False),
        sa.Column("mds_dist", sa.String(length=16), nullable=False),
        sa.Column("n_pca", sa.Integer(), nullable=True),
        sa.Column("t", sa.Integer(), nullable=True),
        sa.Column("config", JSON, nullable=False),
        sa.Column("coords_array_id", sa.Integer(), nullable=True),
        sa.Column("potential_array_id", sa.Integer(), nullable=True),
        sa.Column("order_array_id", sa.Integer(), nullable=True),
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
            ["coords_array_id"],
            ["arrays.id"],
            name=op.f("fk_embeddings_coords_array_id_arrays"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_embeddings_model_id_models")
        ),
        sa.ForeignKeyConstraint(
            ["order_array_id"],
            ["arrays.id"],
            name=op.f("fk_embeddings_order_array_id_arrays"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["potential_array_id"],
            ["arrays.id"],
            name=op.f("fk_embeddings_potential_array_id_arrays"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_embeddings_study_id_studies")
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_embeddings_task_id_tasks"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_embeddings")),
        sa.UniqueConstraint("spec_hash", name=op.f("uq_embeddings_spec_hash")),
    )
    with op.batch_alter_table("embeddings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_embeddings_model_id"), ["model_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_embeddings_study_id"), ["study_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_embeddings_task_id"), ["task_id"], unique=False)

    op.create_table(
        "levelset_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("setup", sa.String(length=32), nullable=False),
        sa.Column("run_index", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("max_predictor_steps", sa.Integer(), nullable=False),
        sa.Column("max_corrector_steps", sa.Integer(), nullable=False),
        sa.Column("eta_min", Real(), nullable=False),
        sa.Column("eta_c", Real(), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("l0", Real(), nullable=True),
        sa.Column("n_predictor_steps", sa.Integer(), nullable=True),
        sa.Column("n_corrector_steps", sa.Integer(), nullable=True),
        sa.Column("final_angle", Real(), nullable=True),
        sa.Column("final_weight_norm", Real(), nullable=True),
        sa.Column("final_train_loss", Real(), nullable=True),
        sa.Column("final_test_loss", Real(), nullable=True),
        sa.Column("final_test_acc", Real(), nullable=True),
        sa.Column("stop_reason", sa.String(length=32), nullable=True),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("trace_array_id", sa.Integer(), nullable=True),
        sa.Column("snapshots_array_id", sa.Integer(), nullable=True),
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
            ["snapshots_array_id"],
            ["arrays.id"],
            name=op.f("fk_levelset_runs_snapshots_array_id_arrays"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_levelset_runs_study_id_studies")
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_levelset_runs_task_id_tasks"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["trace_array_id"],
            ["arrays.id"],
            name=op.f("fk_levelset_runs_trace_array_id_arrays"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_levelset_runs")),
        sa.UniqueConstraint("spec_hash", name=op.f("uq_levelset_runs_spec_hash")),
    )
    with op.batch_alter_table("levelset_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_levelset_runs_setup"), ["setup"], unique=False)
        batch_op.create_index(batch_op.f("ix_levelset_runs_study_id"), ["study_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_levelset_runs_task_id"), ["task_id"], unique=False)

    op.create_table(
        "morse_graphs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("setup", sa.String(length=32), nullable=False),
        sa.Column("pick", sa.String(length=16), nullable=False),
        sa.Column("subdiv", sa.Integer(), nullable=False),
        sa.Column("source", JSON, nullable=False),
        sa.Column("weight_names", JSON, nullable=False),
        sa.Column("gp_params", JSON, nullable=False),
        sa.Column("n_nodes", sa.Integer(), nullable=True),
        sa.Column("n_edges", sa.Integer(), nullable=True),
        sa.Column("n_attractors", sa.Integer(), nullable=True),
        sa.Column("graph", JSON, nullable=True),
        sa.Column("morse_sets_array_id", sa.Integer(), nullable=True),
        sa.Column("retraction_array_id", sa.Integer(), nullable=True),
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
            ["morse_sets_array_id"],
            ["arrays.id"],
            name=op.f("fk_morse_graphs_morse_sets_array_id_arrays"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["retraction_array_id"],
            ["arrays.id"],
            name=op.f("fk_morse_graphs_retraction_array_id_arrays"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_morse_graphs_study_id_studies")
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_morse_graphs_task_id_tasks"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_morse_graphs")),
        sa.UniqueConstraint("spec_hash", name=op.f("uq_morse_graphs_spec_hash")),
    )
    with op.batch_alter_table("morse_graphs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_morse_graphs_setup"), ["setup"], unique=False)
        batch_op.create_index(batch_op.f("ix_morse_graphs_study_id"), ["study_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_morse_graphs_task_id"), ["task_id"], unique=False)

    op.create_table(
        "directions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "random",
                "interpolation",
                "pca",
                name="direction_kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column(
            "normalization",
            sa.Enum(
                "filter",
                "layer",
                "model",
                "none",
                name="direction_norm",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column(
            "ignore",
            sa.Enum(
                "biasbn",
                "none",
                name="direction_ignore",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column(
            "target",
            sa.Enum(
                "weights",
                "states",
                name="direction_target",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("checkpoint_a_id", sa.Integer(), nullable=True),
        sa.Column("checkpoint_b_id", sa.Integer(), nullable=True),
        sa.Column("pca_component", sa.Integer(), nullable=True),
        sa.Column("explained_variance", Real(), nullable=True),
        sa.Column("array_id", sa.Integer(), nullable=True),
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
            ["array_id"],
            ["arrays.id"],
            name=op.f("fk_directions_array_id_arrays"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["checkpoint_a_id"],
            ["checkpoints.id"],
            name=op.f("fk_directions_checkpoint_a_id_checkpoints"),
        ),
        sa.ForeignKeyConstraint(
            ["checkpoint_b_id"],
            ["checkpoints.id"],
            name=op.f("fk_directions_checkpoint_b_id_checkpoints"),
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_directions_model_id_models")
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_directions_study_id_studies")
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_directions_task_id_tasks"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directions")),
        sa.UniqueConstraint("spec_hash", name=op.f("uq_directions_spec_hash")),
    )
    with op.batch_alter_table("directions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_directions_model_id"), ["model_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_directions_study_id"), ["study_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_directions_task_id"), ["task_id"], unique=False)

    op.create_table(
        "persistence_diagrams",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("embedding_id", sa.Integer(), nullable=False),
        sa.Column("loss_name", sa.String(length=16), nullable=False),
        sa.Column("knn", sa.Integer(), nullable=False),
        sa.Column("legacy", sa.Boolean(), nullable=False),
        sa.Column("max_dimension", sa.Integer(), nullable=False),
        sa.Column("diagram_array_id", sa.Integer(), nullable=True),
        sa.Column("h0_count", sa.Integer(), nullable=True),
        sa.Column("h0_total_p1", Real(), nullable=True),
        sa.Column("h0_total_p2", Real(), nullable=True),
        sa.Column("h0_max", Real(), nullable=True),
        sa.Column("h1_count", sa.Integer(), nullable=True),
        sa.Column("h1_total_p1", Real(), nullable=True),
        sa.Column("h1_total_p2", Real(), nullable=True),
        sa.Column("h1_max", Real(), nullable=True),
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
            ["diagram_array_id"],
            ["arrays.id"],
            name=op.f("fk_persistence_diagrams_diagram_array_id_arrays"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["embedding_id"],
            ["embeddings.id"],
            name=op.f("fk_persistence_diagrams_embedding_id_embeddings"),
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_persistence_diagrams_study_id_studies")
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_persistence_diagrams_task_id_tasks"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_persistence_diagrams")),
        sa.UniqueConstraint("spec_hash", name=op.f("uq_persistence_diagrams_spec_hash")),
    )
    with op.batch_alter_table("persistence_diagrams", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_persistence_diagrams_embedding_id"), ["embedding_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_persistence_diagrams_study_id"), ["study_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_persistence_diagrams_task_id"), ["task_id"], unique=False
        )

    op.create_table(
        "retrains",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("checkpoint_id", sa.Integer(), nullable=False),
        sa.Column("direction_id", sa.Integer(), nullable=True),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("step_size", Real(), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("lr", Real(), nullable=False),
        sa.Column("momentum", Real(), nullable=False),
        sa.Column("weight_decay", Real(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("saves_per_epoch", sa.Integer(), nullable=False),
        sa.Column("augment", sa.Boolean(), nullable=False),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("trajectory_array_id", sa.Integer(), nullable=True),
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
            ["checkpoint_id"],
            ["checkpoints.id"],
            name=op.f("fk_retrains_checkpoint_id_checkpoints"),
        ),
        sa.ForeignKeyConstraint(
            ["direction_id"], ["directions.id"], name=op.f("fk_retrains_direction_id_directions")
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_retrains_model_id_models")
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_retrains_study_id_studies")
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_retrains_task_id_tasks"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["trajectory_array_id"],
            ["arrays.id"],
            name=op.f("fk_retrains_trajectory_array_id_arrays"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retrains")),
        sa.UniqueConstraint("spec_hash", name=op.f("uq_retrains_spec_hash")),
    )
    with op.batch_alter_table("retrains", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_retrains_model_id"), ["model_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_retrains_study_id"), ["study_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_retrains_task_id"), ["task_id"], unique=False)

    op.create_table(
        "surfaces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("checkpoint_id", sa.Integer(), nullable=False),
        sa.Column("x_direction_id", sa.Integer(), nullable=False),
        sa.Column("y_direction_id", sa.Integer(), nullable=True),
        sa.Column("x_min", Real(), nullable=False),
        sa.Column("x_max", Real(), nullable=False),
        sa.Column("nx", sa.Integer(), nullable=False),
        sa.Column("y_min", Real(), nullable=True),
        sa.Column("y_max", Real(), nullable=True),
        sa.Column("ny", sa.Integer(), nullable=True),
        sa.Column("tile_nx", sa.Integer(), nullable=False),
        sa.Column("tile_ny", sa.Integer(), nullable=True),
        sa.Column("split", sa.String(length=16), nullable=False),
        sa.Column("subset_size", sa.Integer(), nullable=True),
        sa.Column("minibatch_size", sa.Integer(), nullable=True),
        sa.Column("n_minibatches", sa.Integer(), nullable=True),
        sa.Column(
            "bn_mode",
            sa.Enum(
                "eval",
                "train",
                "recompute",
                name="bn_mode",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("eval_config", JSON, nullable=False),
        sa.Column("loss_array_id", sa.Integer(), nullable=True),
        sa.Column("acc_array_id", sa.Integer(), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("centre_loss", Real(), nullable=True),
        sa.Column("min_loss", Real(), nullable=True),
        sa.Column("min_x", Real(), nullable=True),
        sa.Column("min_y", Real(), nullable=True),
        sa.Column("rise_r025", Real(), nullable=True),
        sa.Column("rise_r050", Real(), nullable=True),
        sa.Column("rise_r100", Real(), nullable=True),
        sa.Column("flatness_width", Real(), nullable=True),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.current_timestamp(),
            nullable=False,
        ),
        sa.CheckConstraint("nx >= 1", name=op.f("ck_surfaces_nx_positive")),
        sa.CheckConstraint("ny IS NULL OR ny >= 1", name=op.f("ck_surfaces_ny_positive")),
        sa.ForeignKeyConstraint(
            ["acc_array_id"],
            ["arrays.id"],
            name=op.f("fk_surfaces_acc_array_id_arrays"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"],
            ["checkpoints.id"],
            name=op.f("fk_surfaces_checkpoint_id_checkpoints"),
        ),
        sa.ForeignKeyConstraint(
            ["loss_array_id"],
            ["arrays.id"],
            name=op.f("fk_surfaces_loss_array_id_arrays"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_surfaces_study_id_studies")
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_surfaces_task_id_tasks"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["x_direction_id"],
            ["directions.id"],
            name=op.f("fk_surfaces_x_direction_id_directions"),
        ),
        sa.ForeignKeyConstraint(
            ["y_direction_id"],
            ["directions.id"],
            name=op.f("fk_surfaces_y_direction_id_directions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_surfaces")),
        sa.UniqueConstraint("spec_hash", name=op.f("uq_surfaces_spec_hash")),
    )
    with op.batch_alter_table("surfaces", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_surfaces_checkpoint_id"), ["checkpoint_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_surfaces_study_id"), ["study_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_surfaces_task_id"), ["task_id"], unique=False)

    op.create_table(
        "tiles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("surface_id", sa.Integer(), nullable=False),
        sa.Column("ix0", sa.Integer(), nullable=False),
        sa.Column("ix1", sa.Integer(), nullable=False),
        sa.Column("iy0", sa.Integer(), nullable=False),
        sa.Column("iy1", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["surface_id"],
            ["surfaces.id"],
            name=op.f("fk_tiles_surface_id_surfaces"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_tiles_task_id_tasks")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tiles")),
        sa.UniqueConstraint("surface_id", "ix0", "iy0", name=op.f("uq_tiles_surface_id_ix0_iy0")),
        sa.UniqueConstraint("task_id", name=op.f("uq_tiles_task_id")),
    )
    op.create_table(
        "trajectory_points",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("retrain_id", sa.Integer(), nullable=False),
        sa.Column("save_index", sa.Integer(), nullable=False),
        sa.Column("epoch", Real(), nullable=False),
        sa.Column("train_loss", Real(), nullable=True),
        sa.Column("train_acc", Real(), nullable=True),
        sa.Column("val_loss", Real(), nullable=True),
        sa.Column("val_acc", Real(), nullable=True),
        sa.Column("test_loss", Real(), nullable=True),
        sa.Column("test_acc", Real(), nullable=True),
        sa.ForeignKeyConstraint(
            ["retrain_id"],
            ["retrains.id"],
            name=op.f("fk_trajectory_points_retrain_id_retrains"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trajectory_points")),
        sa.UniqueConstraint(
            "retrain_id", "save_index", name=op.f("uq_trajectory_points_retrain_id_save_index")
        ),
    )


def downgrade() -> None:
    op.drop_table("trajectory_points")
    op.drop_table("tiles")
    with op.batch_alter_table("surfaces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_surfaces_task_id"))
        batch_op.drop_index(batch_op.f("ix_surfaces_study_id"))
        batch_op.drop_index(batch_op.f("ix_surfaces_checkpoint_id"))

    op.drop_table("surfaces")
    with op.batch_alter_table("retrains", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_retrains_task_id"))
        batch_op.drop_index(batch_op.f("ix_retrains_study_id"))
        batch_op.drop_index(batch_op.f("ix_retrains_model_id"))

    op.drop_table("retrains")
    with op.batch_alter_table("persistence_diagrams", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_persistence_diagrams_task_id"))
        batch_op.drop_index(batch_op.f("ix_persistence_diagrams_study_id"))
        batch_op.drop_index(batch_op.f("ix_persistence_diagrams_embedding_id"))

    op.drop_table("persistence_diagrams")
    with op.batch_alter_table("directions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_directions_task_id"))
        batch_op.drop_index(batch_op.f("ix_directions_study_id"))
        batch_op.drop_index(batch_op.f("ix_directions_model_id"))

    op.drop_table("directions")
    with op.batch_alter_table("morse_graphs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_morse_graphs_task_id"))
        batch_op.drop_index(batch_op.f("ix_morse_graphs_study_id"))
        batch_op.drop_index(batch_op.f("ix_morse_graphs_setup"))

    op.drop_table("morse_graphs")
    with op.batch_alter_table("levelset_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_levelset_runs_task_id"))
        batch_op.drop_index(batch_op.f("ix_levelset_runs_study_id"))
        batch_op.drop_index(batch_op.f("ix_levelset_runs_setup"))

    op.drop_table("levelset_runs")
    with op.batch_alter_table("embeddings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_embeddings_task_id"))
        batch_op.drop_index(batch_op.f("ix_embeddings_study_id"))
        batch_op.drop_index(batch_op.f("ix_embeddings_model_id"))

    op.drop_table("embeddings")
    op.drop_table("checkpoints")
    with op.batch_alter_table("task_dependencies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_task_dependencies_depends_on_id"))

    op.drop_table("task_dependencies")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_models_task_id"))
        batch_op.drop_index(batch_op.f("ix_models_study_id"))
        batch_op.drop_index(batch_op.f("ix_models_dataset"))
        batch_op.drop_index(batch_op.f("ix_models_batch_size"))
        batch_op.drop_index(batch_op.f("ix_models_architecture"))

    op.drop_table("models")
    with op.batch_alter_table("arrays", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_arrays_task_id"))

    op.drop_table("arrays")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_study_status")
        batch_op.drop_index(batch_op.f("ix_tasks_kind"))
        batch_op.drop_index("ix_tasks_claim")

    op.drop_table("tasks")
    op.drop_table("studies")
