"""Migrations 0007_curvature, 0015_retrain_curvature and 0016_retrain_surfaces on SQLite and
PostgreSQL: Hessian directions are allowed only from 0007, the downgrade takes them (and their
spectra) away, the upgrade brings it back equal to the ORM; retrained networks' spectra and
surfaces name their retrain and save and keep a downgrade from dropping them silently."""

from __future__ import annotations

import math

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from tracker._db import SCHEMA_REVISION
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
    values.setdefault("spec_hash", "h")
    return HessianSpectrum(study_id=study, task_id=task, model_id=model, checkpoint_id=ckpt,
                           epoch=1, measure="eigen", split="train", bn_mode="eval", loss="mse",
                           seed=0, tol=1e-3, max_iter=10, **values)  # fmt: skip


def _retrain(session, ids: tuple[int, int, int, int]) -> int:
    from tracker._schema import Retrain

    retrain = Retrain(study_id=ids[0], model_id=ids[2], checkpoint_id=ids[3], seed=0,
                      step_size=0.5, epochs=1, lr=0.1, momentum=0.0, weight_decay=0.0,
                      batch_size=32, spec_hash="r")  # fmt: skip
    session.add(retrain)
    session.flush()
    return retrain.id


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


def test_retrained_spectra_through_migration_0015(db) -> None:
    """A spectrum of a retrained network names its retrain and save (both or neither),
    goes with its retrain, and keeps the downgrade to 0014 from dropping it silently."""
    with db.session() as session:
        ids = _model(session)
        rid = _retrain(session, ids)
        session.add(_spectrum(*ids, top_k=1, retrain_id=rid, save_index=2))
    for values in ({"retrain_id": rid}, {"save_index": 0}, {"retrain_id": rid, "save_index": -1}):
        with pytest.raises(sa_exc.IntegrityError), db.session() as session:
            session.add(_spectrum(*ids, top_k=1, **{**values, "spec_hash": f"x{values}"}))
    with pytest.raises(RuntimeError, match="1 Hessian spectra are of retrained networks"):
        downgrade(db, "0014_meta2")
    with db.engine.connect() as conn:  # the refused downgrade left the revision as it was
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == (
            SCHEMA_REVISION
        )
    with db.engine.begin() as conn:  # the retrain's spectra go with it
        conn.execute(sa.text("DELETE FROM retrains WHERE id = :r"), {"r": rid})
        assert conn.execute(sa.text("SELECT count(*) FROM hessian_spectra")).scalar() == 0
    downgrade(db, "0014_meta2")
    with db.engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("hessian_spectra")}
    assert not {"retrain_id", "save_index"} & columns
    upgrade(db)
    with db.session() as session:
        session.add(_spectrum(*ids, top_k=1, spec_hash="back"))


def test_retrained_surfaces_through_migration_0016(db) -> None:
    """A surface centred on a retrain save names both (or neither), goes with its retrain, stays
    out of v_surfaces, and keeps the downgrade to 0015 from dropping it (or the eigenvector
    directions of retrained networks) silently."""
    from tracker._schema import Surface

    with db.session() as session:
        ids = _model(session)
        rid = _retrain(session, ids)
        spec = _spectrum(*ids, top_k=1, retrain_id=rid, save_index=1)
        session.add(spec)
        session.flush()
        direction = _direction(ids[0], ids[2], ids[3], "hessian", eigen_index=0,
                               hessian_spectrum_id=spec.id)  # fmt: skip
        session.add(direction)
        session.flush()
        did = direction.id

    def surface(**values) -> Surface:
        return Surface(study_id=ids[0], checkpoint_id=ids[3], x_direction_id=did, x_min=-1.0,
                       x_max=1.0, nx=3, tile_nx=3, split="train", bn_mode="eval",
                       spec_hash=f"s{values}", **values)  # fmt: skip

    with db.session() as session:
        session.add(surface())  # the checkpoint's own
        session.add(surface(retrain_id=rid, save_index=1))
    for values in ({"retrain_id": rid}, {"save_index": 0}, {"retrain_id": rid, "save_index": -1}):
        with pytest.raises(sa_exc.IntegrityError), db.session() as session:
            session.add(surface(**values))
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM v_surfaces")).scalar() == 1
    with pytest.raises(RuntimeError, match="1 surfaces and 1 eigenvector directions"):
        downgrade(db, "0015_retrain_curvature")
    with db.engine.connect() as conn:  # the refused downgrade left the revision as it was
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == (
            SCHEMA_REVISION
        )
    with db.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM surfaces"))
        conn.execute(sa.text("DELETE FROM directions"))
    downgrade(db, "0015_retrain_curvature")
    with db.engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("surfaces")}
        assert not {"retrain_id", "save_index"} & columns
        assert conn.execute(sa.text("SELECT count(*) FROM v_surfaces")).scalar() == 0
    upgrade(db)
    with db.session() as session:
        plain = _direction(ids[0], ids[2], ids[3], "random", seed=0)
        session.add(plain)
        session.flush()
        did = plain.id
        session.add(surface(retrain_id=rid, save_index=0))
    with db.engine.begin() as conn:  # a retrain's surfaces go with it (and its spectra)
        conn.execute(sa.text("DELETE FROM retrains WHERE id = :r"), {"r": rid})
        assert conn.execute(sa.text("SELECT count(*) FROM surfaces")).scalar() == 0
