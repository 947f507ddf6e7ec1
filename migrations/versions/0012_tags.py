"""Free-form tags and a note on studies and models (issue 19)

Revision ID: 0012_tags
Revises: 0011_gpu
Create Date: 2026-11-30

``tags`` is a JSON list of short labels a user attaches (`tracker tag`), ``note`` free text;
both are empty until a user sets them, so existing rows need no data change.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012_tags"
down_revision = "0011_gpu"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TABLES = ("studies", "models")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("tags", JSON, nullable=True))
            batch.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("note")
            batch.drop_column("tags")
