"""Workers that survive faults (issue 11)

Revision ID: 0006_resilience
Revises: 0005_morse
Create Date: 2026-11-30

``tasks.lease_losses`` counts the leases a task lost because the worker running it died
(killed, out of memory, machine gone): those reclaims no longer use up the task's attempts,
only this separate, larger budget. ``task_blocks`` records the block of a shared array each
task wrote, so ``tracker requeue --broken`` can recompute exactly the tasks whose chunks are
damaged.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006_resilience"
down_revision = "0005_morse"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(
            sa.Column("lease_losses", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "task_blocks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("start", JSON, nullable=False),
        sa.Column("stop", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_task_blocks_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_blocks")),
        sa.UniqueConstraint("task_id", "path", name=op.f("uq_task_blocks_task_id_path")),
    )
    op.create_index(op.f("ix_task_blocks_path"), "task_blocks", ["path"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_task_blocks_path"), table_name="task_blocks")
    op.drop_table("task_blocks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("lease_losses")
