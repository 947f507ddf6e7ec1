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
