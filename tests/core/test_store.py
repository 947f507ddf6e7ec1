"""The Zarr array store: idempotent writes, whole-chunk blocks, damage reported and repaired."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from cli_support import run_tracker, tracker_env

from tracker._db import Database
from tracker._exceptions import CorruptArray, StoreError
from tracker._queue import enqueue, get_or_create_study
from tracker._schema import ArrayRef, Task
from tracker._store import ArrayStore


def test_create_is_idempotent_and_blocks_fill_whole_chunks(store_url: str):
    store = ArrayStore(store_url)
    spec = store.create("surface/1/loss", (5, 7), "float32", (2, 3))
    store.write_block("surface/1/loss", (slice(0, 2), slice(0, 3)), np.ones((2, 3)))
    again = store.create("surface/1/loss", (5, 7), "float32", (2, 3))  # a retried enqueue
    assert again == spec
    values = store.read("surface/1/loss")
    assert values.shape == (5, 7) and values.dtype == np.float32
    assert np.all(values[:2, :3] == 1) and np.isnan(values[2:, 3:]).all()
    with pytest.raises(CorruptArray, match="only 1 of 9 chunks were written"):
        store.verify(spec)


def test_workers_opening_a_new_store_at_once_all_succeed(tmp_path: Path):
    """Regression: the losers of the race to create the root group got ContainsGroupError."""
    import threading

    for attempt in range(10):
        url = str(tmp_path / f"store-{attempt}.zarr")
        barrier, errors = threading.Barrier(8), []

        def open_store(
            url: str = url, barrier: threading.Barrier = barrier, errors: list = errors
        ) -> None:
            barrier.wait()
            try:
                ArrayStore(url).write(f"w/{threading.get_ident()}", np.zeros(2))
            except Exception as err:
                errors.append(err)

        threads = [threading.Thread(target=open_store) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []


def test_a_block_of_nan_losses_still_counts_as_written(store_url: str):
    store = ArrayStore(store_url)
    spec = store.create("s/nan", (2, 2), "float64", (1, 2))
    for row in range(2):
        store.write_block("s/nan", (slice(row, row + 1), slice(0, 2)), np.full((1, 2), np.nan))
    store.verify(spec)  # diverged points are results, not missing work


def test_missing_and_damaged_arrays_are_reported_clearly(store_url: str):
    store = ArrayStore(store_url)
    with pytest.raises(
        CorruptArray, match=r"'nope/x' .* does not exist; run `tracker requeue --broken`"
    ):
        store.read("nope/x")
    spec = store.write("good/x", np.arange(100.0), chunks=(10,))
    chunk = Path(store_url) / "good" / "x" / "c" / "3"
    chunk.write_bytes(b"\x00garbage")
    with pytest.raises(CorruptArray, match="good/x"):
        store.verify(spec)


def test_an_unusable_store_location_is_a_store_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot open the array store"):
        ArrayStore(str(blocker / "store.zarr"))


def test_requeue_broken_recomputes_a_damaged_array(tmp_path: Path, sqlite_url: str, store_url: str):
    env = tracker_env(tmp_path, sqlite_url, store_url)
    assert run_tracker("db", "upgrade", env=env).returncode == 0
    db = Database(sqlite_url)
    with db.session() as session:
        st = get_or_create_study(session, "arrays")
        task, _ = enqueue(session, st, "test.array", {"value": 7})
    args = ("work", "--plugin", "queue_kinds", "--no-progress")
    assert run_tracker(*args, env=env).returncode == 0
    with db.session() as session:
        ref = session.scalar(sa.select(ArrayRef).where(ArrayRef.task_id == task.id))
    assert (ref.shape, ref.dtype, ref.chunks) == ([3, 4], "float64", [3, 4])
    store = ArrayStore(store_url)
    np.testing.assert_array_equal(store.read(ref.path), np.full((3, 4), 7.0))

    assert "requeued 0 task(s)" in run_tracker("requeue", "--broken", env=env).stdout
    store.delete(ref.path)
    out = run_tracker("requeue", "--broken", env=env)
    assert out.returncode == 0
    assert f"'{ref.path}'" in out.stdout and "does not exist" in out.stdout
    assert f"requeued 1 task(s): {task.id}" in out.stdout
    with db.session() as session:
        assert session.get(Task, task.id).status == "pending"
    assert run_tracker(*args, env=env).returncode == 0
    np.testing.assert_array_equal(store.read(ref.path), np.full((3, 4), 7.0))
