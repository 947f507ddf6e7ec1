"""Retrain trajectories, PHATE embeddings and persistence diagrams (issue 4)

Revision ID: 0003_retrain_topology
Revises: 0002_pca_projection
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0003_retrain_topology"
down_revision = "0002_pca_projection"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
