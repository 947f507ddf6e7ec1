"""The worker's batch sizing: long tasks one at a time, short ones in batches."""

from __future__ import annotations

from tracker._worker import _BatchSize


def test_batch_size_starts_at_one_and_follows_task_duration():
    sizer = _BatchSize(maximum=32, target=0.25)
    assert sizer.next() == 1
    sizer.observe(seconds=30.0, n=1)  # a training run
    assert sizer.next() == 1
    for _ in range(60):
        sizer.observe(seconds=0.001 * 8, n=8)  # no-op-sized tasks
    assert sizer.next() == 32
    for _ in range(20):
        sizer.observe(seconds=0.05, n=1)
    assert sizer.next() == 5


def test_long_kinds_are_claimed_one_at_a_time_and_short_ones_in_batches(db):
    from tracker._queue import Queue, enqueue, get_or_create_study
    from tracker._worker import _claim

    with db.session() as session:
        study = get_or_create_study(session, "s")
        for i in range(3):
            enqueue(session, study, "tile-like", {"i": i}, priority=-1)
        for i in range(5):
            enqueue(session, study, "noop", {"i": i})
    queue = Queue(db)
    kinds = ["noop", "tile-like"]
    batch = _claim(queue, "w", 8, kinds, ["noop"], None)
    assert [t.kind for t in batch] == ["noop"] * 5  # the short ones, together
    for _ in range(3):
        batch = _claim(queue, "w", 8, kinds, ["noop"], None)
        assert [t.kind for t in batch] == ["tile-like"]  # the long ones, one each
    assert _claim(queue, "w", 8, kinds, ["noop"], None) == []
