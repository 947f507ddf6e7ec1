"""Seed-parity options (issue 14)

Revision ID: 0013_seed_parity
Revises: 0012_tags
Create Date: 2026-11-30

``directions.normalization`` accepts ``filter-std``: seed 001's (l-berg/landscapes) scaling,
a Gaussian draw times each filter's standard deviation. ``surfaces.centre_gradient`` keeps its
gradient arrow: per minibatch grid, the loss gradient at the centre on each direction.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013_seed_parity"
down_revision = "0012_tags"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
OLD = ("filter", "layer", "model", "none")
NEW = (*OLD, "filter-std")


def _check(values: tuple[str, ...]) -> str:
    return "normalization IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade() -> None:
    with op.batch_alter_table("directions") as batch:
        batch.drop_constraint(op.f("ck_directions_direction_norm"), type_="check")
        batch.create_check_constraint(op.f("ck_directions_direction_norm"), _check(NEW))
    with op.batch_alter_table("surfaces") as batch:
        batch.add_column(sa.Column("centre_gradient", JSON, nullable=True))


def downgrade() -> None:
    # Directions made with filter-std cannot be described by the old schema, and surfaces
    # point at them: refuse rather than lose them.
    count = op.get_bind().exec_driver_sql(
        "SELECT count(*) FROM directions WHERE normalization = 'filter-std'"
    ).scalar()
    if count:
        raise RuntimeError(
            f"{count} direction(s) use normalization filter-std, which revision 0006 cannot "
            "hold: delete their studies first, or stay on 0013_seed_parity"
        )
    with op.batch_alter_table("surfaces") as batch:
        batch.drop_column("centre_gradient")
    with op.batch_alter_table("directions") as batch:
        batch.drop_constraint(op.f("ck_directions_direction_norm"), type_="check")
        batch.create_check_constraint(op.f("ck_directions_direction_norm"), _check(OLD))
