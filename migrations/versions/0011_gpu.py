"""GPU routing (issue 17)

Revision ID: 0011_gpu
Revises: 0010_morse_parity
Create Date: 2026-11-30

``tasks.needs_gpu`` marks work that must run on a GPU worker (a surface asked for with
``--gpu`` or a reduced precision): workers started without ``--cuda`` never claim it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_gpu"
down_revision = "0010_morse_parity"
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
