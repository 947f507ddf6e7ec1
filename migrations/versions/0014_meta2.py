"""Level sets and Morse graphs of a study's models (issue 16: their measures)

Revision ID: 0014_meta2
Revises: 0013_seed_parity
Create Date: 2026-12-01

``levelset_runs`` gains ``model_id`` and ``checkpoint_id`` (a traversal that starts from a
tracker model's checkpoint; NULL for a paper setup's run, which trains its own network) and
``final_distance`` (how far the walk went from its start). ``ensemble_members`` gains
``model_id``: an ensemble made of a study's models (one hyperparameter setting over its
seeds) says which model each member is. The downgrade refuses while such rows exist.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_meta2"
down_revision = "0013_seed_parity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("levelset_runs") as batch:
        batch.add_column(sa.Column("model_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("checkpoint_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("final_distance", sa.Double(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_levelset_runs_model_id_models"), "models", ["model_id"], ["id"],
            ondelete="CASCADE",
        )  # fmt: skip
        batch.create_foreign_key(
            op.f("fk_levelset_runs_checkpoint_id_checkpoints"), "checkpoints",
            ["checkpoint_id"], ["id"], ondelete="CASCADE",
        )  # fmt: skip
        batch.create_index(op.f("ix_levelset_runs_model_id"), ["model_id"])
        batch.create_index(op.f("ix_levelset_runs_checkpoint_id"), ["checkpoint_id"])
    with op.batch_alter_table("ensemble_members") as batch:
        batch.add_column(sa.Column("model_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_ensemble_members_model_id_models"), "models", ["model_id"], ["id"],
            ondelete="SET NULL",
        )  # fmt: skip
        batch.create_index(op.f("ix_ensemble_members_model_id"), ["model_id"])


def downgrade() -> None:
    bind = op.get_bind()
    runs = bind.exec_driver_sql(
        "SELECT count(*) FROM levelset_runs WHERE checkpoint_id IS NOT NULL"
    ).scalar()
    ensembles = bind.exec_driver_sql("SELECT count(*) FROM ensembles WHERE setup = 'models'").scalar()
    if runs or ensembles:
        raise RuntimeError(
            f"{runs} level-set run(s) start from model checkpoints and {ensembles} ensemble(s) "
            "are made of models, which revision 0013 cannot hold: delete them first "
            "(`tracker delete`), or stay on 0014_meta2"
        )
    with op.batch_alter_table("ensemble_members") as batch:
        batch.drop_index(op.f("ix_ensemble_members_model_id"))
        batch.drop_constraint(op.f("fk_ensemble_members_model_id_models"), type_="foreignkey")
        batch.drop_column("model_id")
    with op.batch_alter_table("levelset_runs") as batch:
        batch.drop_index(op.f("ix_levelset_runs_checkpoint_id"))
        batch.drop_index(op.f("ix_levelset_runs_model_id"))
        batch.drop_constraint(op.f("fk_levelset_runs_checkpoint_id_checkpoints"), type_="foreignkey")
        batch.drop_constraint(op.f("fk_levelset_runs_model_id_models"), type_="foreignkey")
        batch.drop_column("final_distance")
        batch.drop_column("checkpoint_id")
        batch.drop_column("model_id")
