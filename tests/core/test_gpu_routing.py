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
    # Worker loops in the `tracker work` process: the routing is the queue's, whatever runs
    # the loops (a Dask cluster is test_work's and test_deploy's).
    proc = run_tracker("work", "--no-progress", env=tracker_env(tmp_path, db_url, store_url))
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


def test_cuda_with_a_cpu_pool_leaves_gpu_tasks_to_the_gpu_workers(
    db, db_url: str, store_url: str, tmp_path: Path, monkeypatch
) -> None:
    """`tracker work --cuda --cpu-workers 2`: one (stand-in) GPU worker per GPU in Dask, two CPU
    loops beside it in this process. The GPU tasks all run on the Dask worker; the CPU loops
    run only CPU tasks and compute on the CPU even where the process sees a GPU."""
    import queue_kinds  # noqa: F401  (registers test.where in this process)
    from distributed import LocalCluster

    import tracker._work as work_mod
    from tracker._config import Settings

    # No GPU here: a one-GPU machine is simulated by its count and an in-process Dask worker.
    monkeypatch.setattr(work_mod, "check_cuda", lambda: 1)
    monkeypatch.setattr(
        work_mod, "_start_local_cluster",
        lambda n, cuda, resources, *_: LocalCluster(
            n_workers=n, processes=False, threads_per_worker=1,
            dashboard_address=work_mod.LOCAL_DASHBOARD,
            resources=resources),
    )  # fmt: skip
    with db.session() as s:
        study = get_or_create_study(s, "pool")
        gpu = [enqueue(s, study, "test.where", {"i": i, "seconds": 0.2}, needs_gpu=True)[0]
               for i in range(3)]  # fmt: skip
        cpu = [enqueue(s, study, "test.where", {"j": j, "seconds": 0.2})[0] for j in range(8)]
        s.flush()
        gpu_ids, cpu_ids = [t.id for t in gpu], [t.id for t in cpu]

    settings = Settings(home=tmp_path / "home", db_url=db_url, store_url=store_url,
                        mlflow_uri=(tmp_path / "mlruns").as_uri())
    summary = work_mod.work(settings, cuda=True, cpu_workers=2, plugins=["queue_kinds"],
                            progress=False)  # fmt: skip
    assert (summary.done, summary.failed, summary.unfinished) == (11, 0, 0)
    assert summary.workers == 3
    with db.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(Task.id, Task.worker, Task.result))}
    pool = {i for i in cpu_ids if ":cpu" in rows[i].worker}
    # Every GPU task ran on the Dask (GPU) worker, never on a CPU loop.
    assert all(":cpu" not in rows[i].worker and rows[i].worker.startswith(("tcp://", "inproc://"))
               for i in gpu_ids), {i: rows[i].worker for i in gpu_ids}  # fmt: skip
    assert pool, "the CPU loops took none of the CPU tasks"
    assert all(rows[i].result["cpu_only"] and rows[i].result["device"] == "cpu" for i in pool)
    assert not any(rows[i].result["cpu_only"] for i in gpu_ids)


def test_cpu_workers_without_cuda_is_one_line(tmp_path: Path, db_url: str, store_url: str) -> None:
    proc = run_tracker("work", "--cpu-workers", "2", env=tracker_env(tmp_path, db_url, store_url))
    assert proc.returncode == 2
    assert "--cpu-workers adds CPU workers beside the GPU workers of --cuda" in proc.stderr
    assert "Traceback" not in proc.stderr
