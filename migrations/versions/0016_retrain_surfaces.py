"""Surfaces centred on retrained networks, along their Hessian eigenvectors (issue 15)

Revision ID: 0016_retrain_surfaces
Revises: 0015_retrain_curvature
Create Date: 2026-12-02

``surfaces`` gains ``retrain_id`` and ``save_index``: a surface centred on one save of a
jump-and-retrain trajectory (the retrained network) instead of on the checkpoint, which stays
the one the retrain jumped from. Both are NULL for a checkpoint's surface, both set otherwise (a
check constraint); deleting a retrain deletes them. ``v_surfaces`` ("one row per surface
centred on a trained checkpoint") leaves them out. The eigen measures of retrained networks
now make eigenvector ``directions`` rows (no column changes: they name the spectrum, which
names the retrain). The downgrade refuses while such surfaces or directions exist.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_retrain_surfaces"
down_revision = "0015_retrain_curvature"
branch_labels = None
depends_on = None

POINT_CHECK = (
    "(retrain_id IS NULL AND save_index IS NULL) OR "
    "(retrain_id IS NOT NULL AND save_index IS NOT NULL AND save_index >= 0)"
)

_MODEL_COLUMNS = """
    m.id AS model_id, st.name AS study, m.name AS model_name, m.architecture, m.dataset,
    m.optimizer, m.lr, m.momentum, m.weight_decay, m.batch_size, m.epochs,
    m.seed AS model_seed, m.label_corruption"""


def _v_surfaces(dialect: str, *, checkpoints_only: bool) -> str:
    """The view as 0009_measures made it, with the retrained networks' surfaces left out when
    ``checkpoints_only`` (this revision's form)."""
    precision = (
        "json_extract(s.eval_config, '$.precision')"
        if dialect == "sqlite"
        else "s.eval_config ->> 'precision'"
    )
    where = "\nWHERE s.retrain_id IS NULL" if checkpoints_only else ""
    return f"""
SELECT s.id AS surface_id, {_MODEL_COLUMNS},
    c.epoch, dx.kind AS direction_kind, dx.normalization, dx.ignore,
    dx.target AS direction_target, dx.seed AS x_seed, dy.seed AS y_seed,
    CASE WHEN s.ny IS NULL THEN 1 ELSE 2 END AS dims, s.x_min, s.x_max, s.nx, s.ny, s.split,
    s.subset_size, s.n_minibatches, s.minibatch_size, s.bn_mode, {precision} AS precision,
    s.centre_loss, s.rise_r025, s.rise_r050, s.rise_r100, s.flatness_width,
    CASE WHEN s.completed_at IS NULL THEN 0 ELSE 1 END AS completed
FROM surfaces s JOIN checkpoints c ON c.id = s.checkpoint_id
JOIN models m ON m.id = c.model_id JOIN studies st ON st.id = m.study_id
LEFT JOIN directions dx ON dx.id = s.x_direction_id
LEFT JOIN directions dy ON dy.id = s.y_direction_id{where}"""


def _recreate_view(checkpoints_only: bool) -> None:
    dialect = op.get_bind().dialect.name
    op.execute("DROP VIEW IF EXISTS v_surfaces")
    op.execute(f"CREATE VIEW v_surfaces AS {_v_surfaces(dialect, checkpoints_only=checkpoints_only)}")
    if dialect == "postgresql":  # a dropped view's comments go with it
        from tracker._views import VIEW_DOCS

        doc, columns = VIEW_DOCS["v_surfaces"]
        op.execute(f"COMMENT ON VIEW v_surfaces IS {_quote(doc)}")
        for column, text in columns.items():
            op.execute(f"COMMENT ON COLUMN v_surfaces.{column} IS {_quote(text)}")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def upgrade() -> None:
    # SQLite rebuilds the table for the new key; the view is made again after it.
    op.execute("DROP VIEW IF EXISTS v_surfaces")
    with op.batch_alter_table("surfaces") as batch:
        batch.add_column(sa.Column("retrain_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("save_index", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_surfaces_retrain_id_retrains"), "retrains", ["retrain_id"], ["id"],
            ondelete="CASCADE",
        )  # fmt: skip
        batch.create_index(op.f("ix_surfaces_retrain_id"), ["retrain_id"])
        batch.create_check_constraint(op.f("ck_surfaces_retrain_point"), POINT_CHECK)
    _recreate_view(checkpoints_only=True)


def downgrade() -> None:
    bind = op.get_bind()
    surfaces = bind.exec_driver_sql(
        "SELECT count(*) FROM surfaces WHERE retrain_id IS NOT NULL"
    ).scalar()
    directions = bind.exec_driver_sql(
        "SELECT count(*) FROM directions d JOIN hessian_spectra h ON h.id = d.hessian_spectrum_id"
        " WHERE h.retrain_id IS NOT NULL"
    ).scalar()
    if surfaces or directions:
        raise RuntimeError(
            f"{surfaces} surfaces and {directions} eigenvector directions are of retrained "
            "networks, which revision 0015 cannot hold: delete their Hessian spectra first "
            "(`tracker delete hessian ID ...`), or stay on 0016_retrain_surfaces"
        )
    op.execute("DROP VIEW IF EXISTS v_surfaces")
    with op.batch_alter_table("surfaces") as batch:
        batch.drop_constraint(op.f("ck_surfaces_retrain_point"), type_="check")
        batch.drop_index(op.f("ix_surfaces_retrain_id"))
        batch.drop_constraint(op.f("fk_surfaces_retrain_id_retrains"), type_="foreignkey")
        batch.drop_column("save_index")
        batch.drop_column("retrain_id")
    _recreate_view(checkpoints_only=False)
