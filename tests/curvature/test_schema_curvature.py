"""Migration 0007_curvature on SQLite and PostgreSQL: Hessian directions are allowed only at
this revision, the downgrade takes them (and their spectra) away, the upgrade brings it back
equal to the ORM."""

from __future__ import annotations

import math

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from tracker._migrate import downgrade, upgrade
from tracker._queue import enqueue, get_or_create_study
from tracker._schema import Checkpoint, Direction, HessianSpectrum, Model


def _model(session) -> tuple[int, int, int, int]:
    st = get_or_create_study(session, "s")
    task, _ = enqueue(session, st, "train", {})
    model = Model(study_id=st.id, task_id=task.id, spec_hash="m", architecture="mlp",
                  dataset="digits", optimizer="sgd", lr=0.1, batch_size=32, epochs=1, seed=0)  # fmt: skip
    session.add(model)
    session.flush()
    ckpt = Checkpoint(model_id=model.id, epoch=1)
    session.add(ckpt)
    session.flush()
    return st.id, task.id, model.id, ckpt.id


def _spectrum(study: int, task: int, model: int, ckpt: int, **values) -> HessianSpectrum:
    return HessianSpectrum(study_id=study, task_id=task, model_id=model, checkpoint_id=ckpt,
                           epoch=1, measure="eigen", split="train", bn_mode="eval", loss="mse",
                           seed=0, tol=1e-3, max_iter=10, spec_hash="h", **values)  # fmt: skip


def _direction(study: int, model: int, ckpt: int, kind: str, **values) -> Direction:
    return Direction(study_id=study, model_id=model, kind=kind, normalization="none",
                     ignore="none", target="weights", checkpoint_a_id=ckpt,
                     spec_hash=f"d-{kind}-{values}", **values)  # fmt: skip


def test_hessian_rows_and_directions_round_trip_through_the_migration(db) -> None:
    with db.session() as session:
        ids = _model(session)
        spec = _spectrum(*ids, top_k=1, eigenvalues=[2.5, None], top_eigenvalue=2.5,
                         layer_traces={"net.0": 1.0})  # fmt: skip
        session.add(spec)
        session.flush()
        session.add(_direction(ids[0], ids[2], ids[3], "hessian", eigen_index=0,
                               hessian_spectrum_id=spec.id))  # fmt: skip
    with db.session() as session:
        row = session.scalar(sa.select(HessianSpectrum))
        assert row.eigenvalues == [2.5, None] and row.layer_traces == {"net.0": 1.0}
        assert session.scalar(sa.select(Direction.eigen_index)) == 0
    with pytest.raises(sa_exc.IntegrityError), db.session() as session:
        session.add(_spectrum(*ids, top_k=0))  # k >= 1
    with pytest.raises(sa_exc.IntegrityError), db.session() as session:
        session.add(_direction(ids[0], ids[2], ids[3], "eigen"))  # unknown kind

    downgrade(db, "0006_resilience")
    with db.engine.connect() as conn:
        inspector = sa.inspect(conn)
        assert "hessian_spectra" not in inspector.get_table_names()
        assert "eigen_index" not in {c["name"] for c in inspector.get_columns("directions")}
        assert "curvature" not in {c["name"] for c in inspector.get_columns("surfaces")}
        assert conn.execute(sa.text("SELECT count(*) FROM directions")).scalar() == 0
    # At 0006 the kind 'hessian' is refused again, 'random' still allowed.
    insert = ("INSERT INTO directions (study_id, model_id, kind, normalization, ignore, target, "
              "spec_hash) VALUES (:s, :m, :k, 'none', 'none', 'weights', :h)")  # fmt: skip
    with pytest.raises(sa_exc.IntegrityError), db.engine.begin() as conn:
        conn.execute(sa.text(insert), {"s": ids[0], "m": ids[2], "k": "hessian", "h": "x"})
    with db.engine.begin() as conn:
        conn.execute(sa.text(insert), {"s": ids[0], "m": ids[2], "k": "random", "h": "y"})
    upgrade(db)
    with db.session() as session:
        spec = _spectrum(*ids, top_k=2, trace=math.inf)
        session.add(spec)
        session.flush()
        session.add(_direction(ids[0], ids[2], ids[3], "hessian", eigen_index=1,
                               hessian_spectrum_id=spec.id))  # fmt: skip
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Direction)) == 2
