"""Routing by need (issue 17): tasks that need a GPU are claimed only by GPU workers, first;
CPU workers leave them and say so. Runs on CPU: the routing is in the queue, not the device."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import sqlalchemy as sa
from cli_support import run_tracker, tracker_env

from tracker._queue import Queue, enqueue, get_or_create_study
from tracker._schema import Task


def _enqueue(db, gpu_tasks: int, cpu_tasks: int) -> tuple[list[int], list[int]]:
    with db.session() as s:
        study = get_or_create_study(s, "routing")
        gpu = [enqueue(s, study, "noop", {"i": i}, needs_gpu=True)[0] for i in range(gpu_tasks)]
        cpu = [enqueue(s, study, "noop", {"j": j})[0] for j in range(cpu_tasks)]
        s.flush()
        return [t.id for t in gpu], [t.id for t in cpu]


def test_cpu_workers_never_claim_gpu_tasks_and_gpu_workers_take_them_first(db) -> None:
    gpu_ids, cpu_ids = _enqueue(db, gpu_tasks=3, cpu_tasks=3)
    assert min(cpu_ids) > max(gpu_ids)  # the CPU tasks are newer: FIFO alone would not pick them
    cpu_queue = Queue(db)
    claimed = cpu_queue.claim_batch("cpu-worker", 10)
    assert sorted(t.id for t in claimed) == cpu_ids
    assert cpu_queue.claim_batch("cpu-worker", 10) == []

    # Back to pending: a GPU worker takes the GPU tasks before any other.
    with db.engine.begin() as conn:
        conn.execute(sa.update(Task).values(status="pending", lease_token=None, worker=None))
    gpu_queue = Queue(db, gpu=True)
    first = gpu_queue.claim_batch("gpu-worker", 3)
    assert sorted(t.id for t in first) == gpu_ids
    rest = gpu_queue.claim_batch("gpu-worker", 10)
    assert sorted(t.id for t in rest) == cpu_ids  # and then anything


def test_tracker_work_without_cuda_leaves_gpu_tasks_pending_and_says_so(
    tmp_path: Path, db, db_url: str, store_url: str
) -> None:
    gpu_ids, cpu_ids = _enqueue(db, gpu_tasks=2, cpu_tasks=4)
    proc = run_tracker("work", "--workers", "1", "--no-progress",
                       env=tracker_env(tmp_path, db_url, store_url))  # fmt: skip
    # The CPU work is done; the GPU work is not, so the exit status says "not finished" (1),
    # and the message says what runs it.
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "note: 2 pending task(s) need a GPU" in proc.stdout + proc.stderr
    assert "2 task(s) need a GPU: run `tracker work --cuda`" in proc.stderr
    assert "run `tracker work` again" not in proc.stderr
    with db.engine.connect() as conn:
        status = dict(conn.execute(sa.select(Task.id, Task.status)).all())
    assert [status[i] for i in cpu_ids] == ["done"] * 4
    assert [status[i] for i in gpu_ids] == ["pending"] * 2


def test_surface_gpu_options_route_the_tiles_and_keep_old_spec_hashes() -> None:
    from tracker.surfaces.rows import EvalSpec, check_eval

    plain = EvalSpec()
    assert not plain.needs_gpu
    # Surfaces enqueued before the GPU options keep their hash: the new keys are left out.
    assert plain.identity() == {k: v for k, v in asdict(plain).items()
                                if k not in ("gpu", "compile", "loss", "bn_batches")}  # fmt: skip
    assert EvalSpec(gpu=True).needs_gpu and EvalSpec(precision="bf16").needs_gpu
    assert EvalSpec(compile="max-autotune").identity()["compile"] == "max-autotune"
    assert not EvalSpec(compile="default").needs_gpu  # compiling runs on CPU workers too
    check_eval(EvalSpec(compile="reduce-overhead"), regression=False)
