"""Ensembles and Morse graphs (issue 6, seed 003)

Revision ID: 0005_morse
Revises: 0004_levelset
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0005_morse"
down_revision = "0004_levelset"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
