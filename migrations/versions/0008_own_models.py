"""Provenance of results (issue 13)

Revision ID: 0008_own_models
Revises: 0007_curvature
Create Date: 2026-11-30

``tasks.provenance`` records where and with what each finished task computed: tracker version
(and git commit from a checkout), torch version, device name, precision, worker host. Every
result row (models, surfaces and their tiles, retrains, embeddings, diagrams, level sets,
Morse graphs) points at the task that made it, so one column covers them all, including
result kinds added later; ``tracker show`` and the dashboard read it through that link.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008_own_models"
down_revision = "0007_curvature"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("provenance", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("provenance")
