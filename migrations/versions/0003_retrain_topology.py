"""Retrain trajectories, PHATE embeddings and persistence diagrams (issue 4)

Revision ID: 0003_retrain_topology
Revises: 0002_pca_projection
Create Date: 2026-11-23

No schema change: the tables of issue 4 (retrains, trajectory_points, embeddings,
persistence_diagrams) came with 0001_initial and hold everything the retrain, embedding and
persistence tasks store (trajectories, coordinates, potentials, orders and diagrams are Zarr
arrays referenced through ``arrays``; what a PHATE run chose is in ``embeddings.config``).
The revision stays in the chain so that the later revisions keep their parents.
"""

from __future__ import annotations

revision = "0003_retrain_topology"
down_revision = "0002_pca_projection"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change (see the module docstring)."""


def downgrade() -> None:
    """Nothing to undo."""
