"""The worker's batch sizing: long tasks one at a time, short ones in batches."""

from __future__ import annotations

from tracker._worker import _BatchSize


def _new_database(url: str) -> None:
    """A migrated, empty tracker database at ``url`` (a copy of the suite's template)."""
    from schema_support import migrated

    from tracker._db import Database

    db = Database(url)
    migrated(db)
    db.dispose()


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


def test_the_builtin_kinds_table_matches_what_their_modules_register():
    """Workers claim by the table (without importing the kinds' modules): it must name every
    built-in kind, its module and its batching exactly as the modules register them."""
    from tracker._registry import _KINDS, BUILTIN_KINDS, BUILTIN_PLUGINS, load_plugins

    load_plugins()
    registered = {
        name: (kind.run.__module__, kind.batch)
        for name, kind in _KINDS.items()
        if kind.run.__module__ in BUILTIN_PLUGINS
    }
    assert registered == BUILTIN_KINDS


def test_a_worker_claims_and_runs_noop_tasks_without_importing_torch(tmp_path, sqlite_url):
    """The worker's start and its claims import no kind's module: torch (and MLflow) come only
    with a task of a kind that needs them."""
    import subprocess
    import sys

    from tracker._db import Database
    from tracker._migrate import upgrade
    from tracker._queue import enqueue, get_or_create_study

    db = Database(sqlite_url)
    upgrade(db)
    with db.session() as session:
        study = get_or_create_study(session, "s")
        for i in range(3):
            enqueue(session, study, "noop", {"i": i})
    db.dispose()
    script = (
        "import sys\n"
        "from tracker._worker import WorkerConfig, run_worker\n"
        f"stats = run_worker(WorkerConfig(db_url={sqlite_url!r}, "
        f"store_url={str(tmp_path / 'store.zarr')!r}))\n"
        "print(stats['done'], sorted(m for m in ('torch', 'mlflow', 'sklearn') "
        "if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "3 []", proc.stdout


def test_an_idle_forever_worker_imports_its_kinds_modules_before_its_first_task(
    tmp_path, sqlite_url
):
    """`tracker work --forever` waiting on an empty queue imports torch and the surface kinds'
    module in the background, so the first surface enqueued does not wait for them; it claims
    nothing meanwhile."""
    import subprocess
    import sys

    _new_database(sqlite_url)
    script = (
        "import sys, threading, time\n"
        "from tracker._worker import WorkerConfig, run_worker\n"
        f"cfg = WorkerConfig(db_url={sqlite_url!r}, store_url={str(tmp_path / 'store.zarr')!r},"
        " forever=True, kinds=('surface.tile', 'surface.complete'))\n"
        "threading.Thread(target=run_worker, args=(cfg,), daemon=True).start()\n"
        "deadline = time.monotonic() + 90\n"
        "while 'tracker.surfaces.kinds' not in sys.modules and time.monotonic() < deadline:\n"
        "    time.sleep(0.1)\n"
        "while any(t.name == 'tracker-warm-imports' for t in threading.enumerate()):\n"
        "    time.sleep(0.1)\n"
        "print(sorted(m for m in ('torch', 'tracker.surfaces.kinds') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=180)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['torch', 'tracker.surfaces.kinds']", proc.stdout
    from tracker._db import Database
    from tracker._schema import Task

    with Database(sqlite_url).session() as session:
        assert session.query(Task).count() == 0


def test_a_forever_loop_returns_when_its_dask_worker_closes(sqlite_url):
    """Closing the cluster (Ctrl-C or SIGTERM on `tracker work --forever`) ends an idle loop
    between tasks, instead of leaving it to hold the worker open until the nanny kills it."""
    import sys
    import time

    from distributed import Client, LocalCluster

    from tracker._worker import WorkerConfig, run_worker

    _new_database(sqlite_url)
    cfg = WorkerConfig(db_url=sqlite_url, store_url="unused.zarr", forever=True,
                       kinds=("noop",))  # fmt: skip

    def loop_frames() -> list[str]:
        names = []
        for frame in sys._current_frames().values():
            while frame is not None:
                if frame.f_code is run_worker.__code__:
                    names.append(frame.f_code.co_name)
                frame = frame.f_back
        return names

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                           dashboard_address="127.0.0.1:0")  # fmt: skip
    client = Client(cluster)
    future = client.submit(run_worker, cfg, pure=False)
    deadline = time.monotonic() + 30
    while not loop_frames():
        assert time.monotonic() < deadline, "the loop never started"
        time.sleep(0.05)
    client.close()
    cluster.close()
    deadline = time.monotonic() + 10
    while loop_frames():
        assert time.monotonic() < deadline, "the forever loop outlived its closed worker"
        time.sleep(0.05)
    assert future.status in ("cancelled", "finished", "lost", "error")
