"""Level-set traversals and their L2 baseline (issue 6, seed 002)

Revision ID: 0004_levelset
Revises: 0003_retrain_topology
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0004_levelset"
down_revision = "0003_retrain_topology"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
