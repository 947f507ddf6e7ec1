"""GPU routing (issue 17)

Revision ID: 0013_gpu
Revises: 0006_resilience
Create Date: 2026-11-30

``tasks.needs_gpu`` marks work that must run on a GPU worker (a surface asked for with
``--gpu`` or a reduced precision): workers started without ``--cuda`` never claim it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_gpu"
down_revision = "0006_resilience"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(
            sa.Column("needs_gpu", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("needs_gpu")
