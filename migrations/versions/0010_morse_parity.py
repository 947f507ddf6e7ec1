"""Morse graphs: the count of nodes with a non-trivial Conley index (issue 14)

Revision ID: 0010_morse_parity
Revises: 0009_measures
Create Date: 2026-11-30

``morse_graphs.n_nontrivial`` sits beside ``n_nodes``: the nodes whose Conley index is not
trivial. One-box recurrent sets of the outer approximation have a trivial index and are not
dynamics of the learned map. NULL where the Conley indices were not computed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_morse_parity"
down_revision = "0009_measures"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("morse_graphs") as batch:
        batch.add_column(sa.Column("n_nontrivial", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("morse_graphs") as batch:
        batch.drop_column("n_nontrivial")
