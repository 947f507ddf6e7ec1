"""Measures as rows: seeds average into one row, and the meta-analysis of a study with mixed
surface kinds (random, PCA, interpolation, two epochs, two splits) correlates only values of
one definition at one epoch."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from compute.meta import kendall_tau
from tracker._db import utcnow
from tracker._queue import enqueue, get_or_create_study
from tracker._schema import Checkpoint, Direction, Measure, MeasureDefinition, Model, Surface
from tracker._store import ArrayStore
from tracker.meta.results import measure_rows, meta_table
from tracker.meta.rows import aggregate, refresh_measures

# (batch size, lr, gap); the final epoch is 5, an early checkpoint is kept at epoch 0
MODELS = [(32, 0.1, 0.05), (256, 0.1, 0.20), (32, 0.01, 0.10), (256, 0.01, 0.30)]
SEED_RISES = {0: [0.1, 0.5, 0.2, 0.9], 1: [0.3, 0.7, 0.2, 1.1], 2: [0.2, 0.3, 0.5, 1.0]}


def _add_surface(session, study, ckpt, model_id, kind, *, seed=None, ny=None, split="train",
                 rise=0.0, key="") -> Surface:  # fmt: skip
    direction = Direction(study_id=study.id, spec_hash=f"d-{key}", model_id=model_id, kind=kind,
                          seed=seed, normalization="filter" if kind == "random" else "none",
                          ignore="biasbn", target="weights")  # fmt: skip
    session.add(direction)
    session.flush()
    surface = Surface(study_id=study.id, spec_hash=f"s-{key}", checkpoint_id=ckpt.id,
                      x_direction_id=direction.id, x_min=-1.0, x_max=1.0, nx=21, tile_nx=21,
                      y_min=-1.0 if ny else None, y_max=1.0 if ny else None, ny=ny,
                      tile_ny=ny, split=split, bn_mode="eval", eval_config={"precision": "fp32"},
                      completed_at=utcnow(), rise_r025=rise / 4, rise_r050=rise,
                      rise_r100=rise * 4, flatness_width=1.0 / (1.0 + rise))  # fmt: skip
    session.add(surface)
    return surface


@pytest.fixture
def mixed_study(db, tmp_path):
    """Four models, each with: random 1D surfaces at the final epoch (3 seeds), one at epoch 0,
    one on the test split, a 2D PCA surface, and an interpolation to the next model."""
    with db.session() as session:
        study = get_or_create_study(session, "mixed")
        finals = []
        for i, (bs, lr, gap) in enumerate(MODELS):
            task, _ = enqueue(session, study, "train", {"i": i})
            model = Model(study_id=study.id, task_id=task.id, spec_hash=f"m{i}", name=f"m{i}",
                          architecture="mlp", dataset="digits", optimizer="sgd", lr=lr,
                          batch_size=bs, epochs=5, seed=0)  # fmt: skip
            model.record_final({"train_acc": 0.9 + gap / 10, "test_acc": 0.9 + gap / 10 - gap,
                                "train_loss": 0.1, "test_loss": 0.1 + gap})  # fmt: skip
            session.add(model)
            session.flush()
            early = Checkpoint(model_id=model.id, epoch=0)
            final = Checkpoint(model_id=model.id, epoch=5)
            session.add_all([early, final])
            session.flush()
            finals.append(final)
            for seed, rises in SEED_RISES.items():
                _add_surface(session, study, final, model.id, "random", seed=seed,
                             rise=rises[i], key=f"{i}-r{seed}")  # fmt: skip
            _add_surface(session, study, early, model.id, "random", seed=0, rise=10.0 - i,
                         key=f"{i}-early")  # fmt: skip
            _add_surface(session, study, final, model.id, "random", seed=0, split="test",
                         rise=[3, 1, 2, 0][i], key=f"{i}-test")  # fmt: skip
            _add_surface(session, study, final, model.id, "pca", ny=21, rise=[5, 6, 7, 8][i],
                         key=f"{i}-pca")  # fmt: skip
        for i in range(3):
            _add_surface(session, study, finals[i], finals[i].model_id, "interpolation",
                         rise=[2.0, 1.0, 3.0][i], key=f"{i}-interp")  # fmt: skip
        study_id = study.id
    store = ArrayStore(str(tmp_path / "store.zarr"))
    with db.session() as session:
        refresh_measures(session, store, study_id)
    return study_id


def _rise_r050(session, study_id):
    rows = [r for r in measure_rows(session, study_id) if r["kind"] == "rise_r050"]
    return rows


def test_seeds_of_one_definition_become_one_row_with_a_standard_error(db, mixed_study):
    with db.session() as session:
        rows = _rise_r050(session, mixed_study)
    by_def = Counter((r["definition"], r["epoch"]) for r in rows)
    # random train final, random train epoch 0, random test final, PCA, interpolation
    assert len(by_def) == 5
    seeded = [r for r in rows if r["n_seeds"] == 3]
    assert len(seeded) == 4 and all(r["epoch"] == 5 and "split=train" in r["definition"]
                                    and "random/filter" in r["definition"] for r in seeded)  # fmt: skip
    for i, r in enumerate(sorted(seeded, key=lambda r: r["model_id"])):
        values = [SEED_RISES[s][i] for s in range(3)]
        mean = sum(values) / 3
        se = math.sqrt(sum((v - mean) ** 2 for v in values) / 2 / 3)
        assert r["value"] == pytest.approx(mean) and r["standard_error"] == pytest.approx(se)
    assert all(r["standard_error"] is None for r in rows if r["n_seeds"] == 1)


def test_meta_analysis_correlates_only_matching_definitions(db, mixed_study):
    with db.session() as session:
        table = [c for c in meta_table(session, mixed_study, draws=50, seed=0)
                 if c.kind == "rise_r050" and c.target == "gap"]  # fmt: skip
        defs = {d.id: d for d in session.scalars(sa.select(MeasureDefinition))}
    by_key = {(defs[c.definition_id].direction_kind, defs[c.definition_id].split,
               defs[c.definition_id].dims, c.epoch): c for c in table}  # fmt: skip
    assert set(by_key) == {("random", "train", 1, 5), ("random", "train", 1, 0),
                           ("random", "test", 1, 5), ("pca", "train", 2, 5),
                           ("interpolation", "train", 1, 5)}  # fmt: skip
    gaps = [g for _, _, g in MODELS]
    means = [sum(SEED_RISES[s][i] for s in range(3)) / 3 for i in range(4)]
    cases = {
        ("random", "train", 1, 5): (means, gaps),
        ("random", "train", 1, 0): ([10.0, 9.0, 8.0, 7.0], gaps),
        ("random", "test", 1, 5): ([3, 1, 2, 0], gaps),
        ("pca", "train", 2, 5): ([5, 6, 7, 8], gaps),
        ("interpolation", "train", 1, 5): ([2.0, 1.0, 3.0], gaps[:3]),
    }
    for key, (values, target) in cases.items():
        c = by_key[key]
        assert c.n_models == len(values)
        assert c.tau == pytest.approx(kendall_tau(values, target)), key


def test_refreshing_again_replaces_the_rows(db, mixed_study, tmp_path):
    with db.session() as session:
        before = session.scalar(sa.select(sa.func.count()).select_from(Measure))
        refresh_measures(session, ArrayStore(str(tmp_path / "store.zarr")), mixed_study)
    with db.session() as session:
        after = session.scalar(sa.select(sa.func.count()).select_from(Measure))
    # 4 surface kinds x (4 random-final + 4 early + 4 test + 4 PCA + 3 interpolation)
    assert before == after == 4 * 19


def test_aggregate_leaves_out_diverged_seeds():
    agg = aggregate([1.0, math.nan, 3.0, None])
    assert (agg.value, agg.n_seeds, agg.n_missing) == (2.0, 2, 2)
    assert agg.standard_error == pytest.approx(1.0)
    assert aggregate([math.inf]).value is None


def test_curvature_rows_become_measures_with_seeds(db, tmp_path):
    """hessian_spectra rows (issue 15): spectra differing only in their seed are the seeds of
    one measure; each measure (top eigenvalue, trace, per-layer trace) is its own kind."""
    from tracker._schema import HessianSpectrum

    with db.session() as session:
        study = get_or_create_study(session, "curv")
        task, _ = enqueue(session, study, "train", {})
        model = Model(study_id=study.id, task_id=task.id, spec_hash="m", architecture="mlp",
                      dataset="digits", optimizer="sgd", lr=0.1, batch_size=32, epochs=5, seed=0)  # fmt: skip
        session.add(model)
        session.flush()
        ckpt = Checkpoint(model_id=model.id, epoch=5)
        session.add(ckpt)
        session.flush()
        common = {"study_id": study.id, "task_id": task.id, "model_id": model.id,
                  "checkpoint_id": ckpt.id, "epoch": 5, "split": "train", "bn_mode": "eval",
                  "loss": "cross_entropy", "tol": 1e-3, "max_iter": 100,
                  "completed_at": datetime.now(UTC)}  # fmt: skip
        session.add_all([
            HessianSpectrum(**common, measure="trace", seed=0, spec_hash="t0", trace=10.0,
                            layer_traces={"fc1": 6.0}),
            HessianSpectrum(**common, measure="trace", seed=1, spec_hash="t1", trace=14.0,
                            layer_traces={"fc1": 8.0}),
            HessianSpectrum(**common, measure="eigen", seed=0, spec_hash="e0", top_k=1,
                            top_eigenvalue=3.5, eigenvalues=[3.5]),
            # Not finished: no measure from it.
            HessianSpectrum(**{**common, "completed_at": None}, measure="trace", seed=2,
                            spec_hash="t2", trace=99.0),
        ])  # fmt: skip
        session.flush()
        store = ArrayStore(str(tmp_path / "store.zarr"))
        refresh_measures(session, store, study.id)
        rows = {r["kind"]: r for r in measure_rows(session, study.id)}
    assert set(rows) == {"hessian_trace", "hessian_layer_trace:fc1", "hessian_top_eigenvalue"}
    assert (rows["hessian_trace"]["value"], rows["hessian_trace"]["n_seeds"]) == (12.0, 2)
    assert rows["hessian_trace"]["standard_error"] == pytest.approx(2.0)
    assert rows["hessian_layer_trace:fc1"]["value"] == 7.0
    assert rows["hessian_top_eigenvalue"]["n_seeds"] == 1
    assert "split=train" in rows["hessian_trace"]["definition"]
