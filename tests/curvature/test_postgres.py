"""Hessian spectra on PostgreSQL: the same request drained by the real worker loop stores the
same numbers (JSON lists and objects, NULLs, booleans) as on SQLite, and so does a surface
around a retrained network along its top eigenvector."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
from schema_support import migrated

from tracker._config import resolve
from tracker._db import open_database
from tracker._schema import Direction, HessianSpectrum, Model, Study, Surface
from tracker._worker import WorkerConfig, run_worker
from tracker.curvature.rows import HessianRequest, add_hessian
from tracker.studyfile import enqueue_study

STUDY = """
study = "pg"

[[model]]
name = "tiny"
architecture = "mlp"
arch = { widths = [3], activation = "tanh" }
dataset = "iris"
lr = 0.1
batch_size = 32
epochs = 1

[[retrain]]
model = "tiny"
seeds = [0]
steps = [0.5]
epochs = 1
batch_size = 32

[[hessian]]                # the retrained network's curvature, waiting on its retrain
models = ["tiny"]
retrains = "all"
top_k = 1

[[surface]]                # around the retrained network, along its top eigenvector
models = ["tiny"]
retrains = "all"
x = "-0.1:0.1:3"
x_direction = "hessian:0"
"""


def _measure(root: Path, db_url: str | None) -> list[tuple]:
    settings = resolve(db_url=db_url, home=root / ".tracker")
    settings.home.mkdir(parents=True, exist_ok=True)
    db = open_database(settings.db_url, check=False)
    migrated(db)  # a copy of the suite's migrated template
    (root / "s.toml").write_text(textwrap.dedent(STUDY))
    enqueue_study(db, root / "s.toml")
    req = HessianRequest(model="tiny", top_k=2, trace=True, per_layer=True, density=True,
                         probes=10, max_iter=30)  # fmt: skip
    with db.session() as session:
        study = Study.find_or_raise_by_id(session, session.scalar(sa.select(Model)).study_id)
        add_hessian(session, study, req)
    stats = run_worker(WorkerConfig(db_url=settings.db_url, store_url=settings.store_url,
                                    mlflow_uri=settings.mlflow_uri))  # fmt: skip
    assert stats["failed"] == 0
    with db.session() as session:
        rows = session.scalars(
            sa.select(HessianSpectrum)
            .order_by(HessianSpectrum.measure, HessianSpectrum.retrain_id.is_not(None))
        ).all()
        dirs = session.scalars(sa.select(Direction.array_id).where(Direction.kind == "hessian")).all()
        assert len(dirs) == 3 and all(d is not None for d in dirs)  # 2 + the retrained one
        surfaces = [(x.retrain_id is not None, x.save_index, x.centre_loss, x.completed_at is not None)
                    for x in session.scalars(sa.select(Surface))]  # fmt: skip
        assert [x[:2] for x in surfaces] == [(True, 1)] and surfaces[0][3]
        out = [(r.measure, r.eigenvalues, r.top_eigenvalue, r.converged, r.trace, r.layer_traces,
                r.completed_at is not None, r.density_array_id is not None,
                r.retrain_id is not None, r.save_index) for r in rows]  # fmt: skip
        assert [(o[0], o[8], o[9]) for o in out] == [
            ("density", False, None), ("eigen", False, None), ("eigen", True, 1),
            ("trace", False, None)]  # fmt: skip
    db.dispose()
    return [*out, *surfaces]


@pytest.mark.postgres
def test_postgres_stores_what_sqlite_stores(tmp_path: Path, pg_url: str) -> None:
    on_pg = _measure(tmp_path / "pg", pg_url)
    on_sqlite = _measure(tmp_path / "lite", None)
    assert [r[0] for r in on_pg] == ["density", "eigen", "eigen", "trace", True]
    assert on_pg == on_sqlite
    eigen, retrained, trace = on_pg[1], on_pg[2], on_pg[3]
    assert len(eigen[1]) == 2 and eigen[2] == eigen[1][0] and eigen[3] is True
    assert len(retrained[1]) == 1 and retrained[6] and retrained[2] != eigen[2]
    assert set(trace[5]) and trace[6] and on_pg[0][7]
