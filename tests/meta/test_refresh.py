"""Measures without `tracker meta` (issue 16): a result that lands asks for a refresh of its
study's measures (``measures.refresh``), and refreshes that run at the same time (two tasks,
a task and `tracker meta`) leave one complete row per (definition, checkpoint)."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from cli_support import run_tracker, tracker_env

from tracker._db import Database, utcnow
from tracker._queue import enqueue, get_or_create_study, request_measures_refresh
from tracker._schema import Checkpoint, Direction, Measure, MeasureDefinition, Model, Surface, Task
from tracker._store import ArrayStore
from tracker.meta.rows import Sample, refresh_measures, surface_samples

N_MODELS, N_SEEDS = 4, 3


def _study(db: Database) -> int:
    """Four models, each with three finished seed surfaces at its final checkpoint and one
    unfinished surface (its values land later in a test)."""
    with db.session() as s:
        study = get_or_create_study(s, "race")
        for i in range(N_MODELS):
            task, _ = enqueue(s, study, "train", {"i": i})
            model = Model(study_id=study.id, task_id=task.id, spec_hash=f"m{i}", name=f"m{i}",
                          architecture="mlp", dataset="digits", optimizer="sgd", lr=0.1 * (i + 1),
                          batch_size=32, epochs=2, seed=0)  # fmt: skip
            model.record_final({"train_acc": 0.9, "test_acc": 0.9 - 0.01 * i, "train_loss": 0.1,
                                "test_loss": 0.1 + 0.01 * i})  # fmt: skip
            s.add(model)
            s.flush()
            ckpt = Checkpoint(model_id=model.id, epoch=2)
            s.add(ckpt)
            s.flush()
            for seed in range(N_SEEDS + 1):
                d = Direction(study_id=study.id, spec_hash=f"d{i}-{seed}", model_id=model.id,
                              kind="random", seed=seed, normalization="filter", ignore="biasbn",
                              target="weights")  # fmt: skip
                s.add(d)
                s.flush()
                done = seed < N_SEEDS
                s.add(Surface(study_id=study.id, spec_hash=f"s{i}-{seed}", checkpoint_id=ckpt.id,
                              x_direction_id=d.id, x_min=-1.0, x_max=1.0, nx=5, tile_nx=5,
                              split="train", bn_mode="eval", eval_config={"precision": "fp32"},
                              completed_at=utcnow() if done else None, rise_r025=0.1 * seed,
                              rise_r050=0.2 * seed + i, rise_r100=0.4 * seed,
                              flatness_width=1.0 + seed))  # fmt: skip
        return study.id


def _slow_surfaces(session, store, study_id) -> Iterator[Sample]:
    """The surface family with a pause in the middle, so that two refreshes overlap."""
    for n, sample in enumerate(surface_samples(session, store, study_id)):
        if n == 8:
            time.sleep(0.2)
        yield sample


def _rows(db: Database, study_id: int) -> list[tuple[int, int, int, float]]:
    with db.session() as s:
        return [tuple(r) for r in s.execute(
            sa.select(Measure.definition_id, Measure.checkpoint_id, Measure.n_seeds, Measure.value)
            .where(Measure.study_id == study_id)
        ).all()]  # fmt: skip


def test_refreshes_at_the_same_time_leave_one_whole_row_per_measure(db, tmp_path: Path) -> None:
    """Two threads refresh the same study four times each, starting together, while a third
    result lands between rounds: no error, no duplicate, and every round's rows are whole."""
    study_id = _study(db)
    store = ArrayStore(str(tmp_path / "store.zarr"))
    errors: list[BaseException] = []
    seen: list[int] = []
    start = threading.Barrier(2)

    def refresher() -> None:
        own = Database(db.url)
        try:
            for _ in range(4):
                start.wait(timeout=60)
                with own.session() as s:
                    seen.append(refresh_measures(s, store, study_id, families=(_slow_surfaces,)))
        except BaseException as err:  # reported by the test below
            errors.append(err)
            start.abort()
        finally:
            own.dispose()

    threads = [threading.Thread(target=refresher) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    rows = _rows(db, study_id)
    # 4 surface kinds x 4 checkpoints, each the mean of 3 seeds, exactly once
    assert len(rows) == 4 * N_MODELS and set(seen) == {4 * N_MODELS}
    assert Counter((d, c) for d, c, _, _ in rows).most_common(1)[0][1] == 1
    assert all(n == N_SEEDS for _, _, n, _ in rows)
    with db.session() as s:
        keys = s.scalars(sa.select(MeasureDefinition.key)).all()
    assert len(keys) == len(set(keys)) == 4


def test_a_refresh_updates_in_place_and_drops_what_the_results_no_longer_give(db, tmp_path) -> None:
    study_id = _study(db)
    store = ArrayStore(str(tmp_path / "store.zarr"))
    with db.session() as s:
        refresh_measures(s, store, study_id)
    before = {(d, c): (mid, v) for mid, d, c, v in _ids(db, study_id)}
    with db.session() as s:  # the fourth seed of every surface lands; model 1's surfaces go
        s.execute(sa.update(Surface).where(Surface.completed_at.is_(None)).values(completed_at=utcnow()))
        first = s.scalar(sa.select(Checkpoint.id).order_by(Checkpoint.id).limit(1))
        s.execute(sa.delete(Surface).where(Surface.checkpoint_id == first))
        refresh_measures(s, store, study_id)
    after = {(d, c): (mid, v) for mid, d, c, v in _ids(db, study_id)}
    assert set(after) == {k for k in before if k[1] != first}
    assert all(after[k][0] == before[k][0] for k in after)  # the same rows, new values
    assert all(n == N_SEEDS + 1 for _, _, n, _ in _rows(db, study_id))


def _ids(db: Database, study_id: int) -> list[tuple[int, int, int, float]]:
    with db.session() as s:
        return [tuple(r) for r in s.execute(
            sa.select(Measure.id, Measure.definition_id, Measure.checkpoint_id, Measure.value)
            .where(Measure.study_id == study_id)
        ).all()]  # fmt: skip


def test_one_pending_refresh_per_study_covers_the_results_that_land_meanwhile(db) -> None:
    with db.session() as s:
        study = get_or_create_study(s, "queue")
        added = [request_measures_refresh(s, study.id, after_task=i) for i in (1, 2, 3)]
        refresh = s.scalar(sa.select(Task).where(Task.kind == "measures.refresh"))
        assert added == [True, False, False]
        assert refresh.status == "pending" and refresh.priority > 0
        refresh.status = "running"  # taken by a worker: the next result asks for a new one
        s.flush()
        assert request_measures_refresh(s, study.id, after_task=4)


STUDY = """
study = "landed"

[[model]]
name = "mlp"
architecture = "mlp"
arch = {{ widths = [8] }}
dataset = "digits"
lr = 0.1
momentum = 0.9
batch_size = 64
epochs = 2

[[surface]]
models = ["mlp"]
x = "-1:1:5"
seeds = "0-1"

[[hessian]]
models = ["mlp"]
trace = true
subset = 100
probes = 4

[[retrain]]
model = "mlp"
seeds = "0-1"
steps = [0.5, 1.0]
epochs = 2
lr = 0.01
batch_size = 128

[[topology]]
model = "mlp"
loss = "test"
knn = 4
"""


def test_measures_appear_in_v_measures_after_tracker_work_alone(
    tmp_path: Path, db: Database, db_url: str
) -> None:
    """Surfaces, a Hessian trace and a persistence diagram through `tracker work`: their
    measures are in ``v_measures`` without `tracker meta` (levels sets and Morse graphs:
    tests/meta/test_method_measures.py)."""
    env = tracker_env(tmp_path, db_url)  # `db`: migrated already (a copy of a template)
    path = tmp_path / "study.toml"
    path.write_text(textwrap.dedent(STUDY.format()))
    # The worker loops in threads of the `work` process: what lands is the subject here, not
    # a Dask worker process (a fresh interpreter, ~5 CPU-s more).
    for argv in (("enqueue", str(path)), ("work", "--no-progress", "--json")):
        proc = run_tracker(*argv, env=env, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["failed"] == 0
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        families = dict(conn.execute(sa.text(
            "SELECT family, count(*) FROM v_measures WHERE study = 'landed' GROUP BY family"
        )).tuples().all())  # fmt: skip
        refreshes = conn.execute(sa.text(
            "SELECT status, count(*) FROM tasks WHERE kind = 'measures.refresh' GROUP BY status"
        )).tuples().all()  # fmt: skip
        rise = conn.execute(sa.text(
            "SELECT n_seeds FROM v_measures WHERE kind = 'rise_r050' AND study = 'landed'"
        )).scalars().all()  # fmt: skip
    engine.dispose()
    assert {"surface", "weights", "curvature", "persistence"} <= set(families), families
    assert dict(refreshes).keys() == {"done"}
    assert rise == [2]  # the two seed surfaces, one measure
