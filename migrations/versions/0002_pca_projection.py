"""PCA projections on directions; surfaces imported from Goldstein h5 files

Revision ID: 0002_pca_projection
Revises: 0001_initial
Create Date: 2026-11-23

The first PCA direction of a pair references an array [checkpoints, 3] of (epoch, x, y):
where each checkpoint of the trajectory lies on the plane, drawn over PCA surfaces.
A surface imported from a file has no checkpoint or directions in this database: those
references become optional and ``source`` names the file.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_pca_projection"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite cannot add a foreign key to an existing table in place.
    with op.batch_alter_table("directions") as batch:
        batch.add_column(sa.Column("projection_array_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_directions_projection_array_id_arrays"),
            "arrays",
            ["projection_array_id"],
            ["id"],
            ondelete="SET NULL",
        )
    with op.batch_alter_table("surfaces") as batch:
        batch.alter_column("checkpoint_id", existing_type=sa.Integer(), nullable=True)
        batch.alter_column("x_direction_id", existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column("source", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("surfaces") as batch:
        batch.drop_column("source")
        batch.alter_column("x_direction_id", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("checkpoint_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("directions") as batch:
        batch.drop_constraint(op.f("fk_directions_projection_array_id_arrays"), type_="foreignkey")
        batch.drop_column("projection_array_id")
