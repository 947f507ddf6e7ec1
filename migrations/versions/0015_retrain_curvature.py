"""Curvature of retrained networks (issue 15: "trained, imported, retrained")

Revision ID: 0015_retrain_curvature
Revises: 0014_meta2
Create Date: 2026-12-02

``hessian_spectra`` gains ``retrain_id`` and ``save_index``: a measure taken at one save of a
jump-and-retrain trajectory instead of at the checkpoint (which stays the one the retrain
jumped from). Both are NULL for a checkpoint's own measure, both set otherwise (a check
constraint). Deleting a retrain deletes its spectra. The downgrade refuses while such rows
exist.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_retrain_curvature"
down_revision = "0014_meta2"
branch_labels = None
depends_on = None

POINT_CHECK = (
    "(retrain_id IS NULL AND save_index IS NULL) OR "
    "(retrain_id IS NOT NULL AND save_index IS NOT NULL AND save_index >= 0)"
)


def upgrade() -> None:
    with op.batch_alter_table("hessian_spectra") as batch:
        batch.add_column(sa.Column("retrain_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("save_index", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_hessian_spectra_retrain_id_retrains"), "retrains", ["retrain_id"], ["id"],
            ondelete="CASCADE",
        )  # fmt: skip
        batch.create_index(op.f("ix_hessian_spectra_retrain_id"), ["retrain_id"])
        batch.create_check_constraint(op.f("ck_hessian_spectra_retrain_point"), POINT_CHECK)


def downgrade() -> None:
    bind = op.get_bind()
    n = bind.exec_driver_sql(
        "SELECT count(*) FROM hessian_spectra WHERE retrain_id IS NOT NULL"
    ).scalar()
    if n:
        raise RuntimeError(
            f"{n} Hessian spectra are of retrained networks, which revision 0014 cannot hold: "
            "delete them first (`tracker delete`), or stay on 0015_retrain_curvature"
        )
    with op.batch_alter_table("hessian_spectra") as batch:
        batch.drop_constraint(op.f("ck_hessian_spectra_retrain_point"), type_="check")
        batch.drop_index(op.f("ix_hessian_spectra_retrain_id"))
        batch.drop_constraint(op.f("fk_hessian_spectra_retrain_id_retrains"), type_="foreignkey")
        batch.drop_column("save_index")
        batch.drop_column("retrain_id")
