"""Queue throughput: claim + complete of no-op tasks by 1, 4 and 8 worker processes.

Each case gets a fresh database (an SQLite file in a temporary directory, or a PostgreSQL
database created for the case and dropped afterwards), migrated to the schema head, with N
tasks of the built-in kind ``noop`` enqueued before the clock starts. Worker processes
(``spawn``) import everything, report ready and wait; the clock starts when they are all
released and stops when the last one has returned from ``run_worker`` (the production loop,
heartbeat thread included), so it covers draining the queue and the workers' own startup
(engine, schema check, store) and drain-detection tail. The task body does nothing, so the
time per task is the queue's own cost.

    python benchmarks/queue.py [--tasks N] [--workers 1,4,8] [--backends sqlite,postgresql]
                               [--pg-admin-url URL] [--profile DIR]

Targets (ratios are actual/target for throughput and target/actual for overhead, so a
ratio >= 1.0 means the target is met): at least 1,000 tasks/s with 8 workers on
PostgreSQL, at least 200 tasks/s on SQLite (any number of workers), and a queue overhead
under 5 ms per task (the 1-worker time per task). The exit status is 0 whatever the result.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python benchmarks/queue.py` puts this directory first on sys.path, where this file would
# shadow the standard library's `queue` (which multiprocessing and SQLAlchemy import).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
_REPO = _HERE.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import multiprocessing as mp  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

DEFAULT_PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_TASKS = 3000
DEFAULT_WORKERS = (1, 4, 8)
BACKENDS = ("sqlite", "postgresql")

TARGET_PG_TPS = 1000.0  # with 8 workers
TARGET_PG_WORKERS = 8
TARGET_SQLITE_TPS = 200.0  # with any number of workers
TARGET_OVERHEAD_MS = 5.0  # per task, 1 worker

READY_TIMEOUT = 120.0
DRAIN_TIMEOUT = 600.0
STUDY = "bench-queue"


@dataclass
class CaseResult:
    backend: str
    workers: int
    tasks: int
    enqueue_s: float
    seconds: float
    last_done_s: float | None
    done: int
    counts: dict[str, int]
    per_worker: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def tps(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else float("inf")

    @property
    def ms_per_task_per_worker(self) -> float:
        return 1000.0 * self.workers / self.tps

    @property
    def tps_target(self) -> float | None:
        if self.backend == "sqlite":
            return TARGET_SQLITE_TPS
        if self.workers == TARGET_PG_WORKERS:
            return TARGET_PG_TPS
        return None


# --- databases -------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(backend: str, pg_admin_url: str, tmp: Path) -> Iterator[str]:
    """A URL to an empty database for one case, removed afterwards."""
    if backend == "sqlite":
        path = tmp / f"bench_{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    import sqlalchemy as sa

    name = f"bench_queue_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = sa.engine.make_url(pg_admin_url).set(database=name)
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def prepare(db_url: str, tasks: int) -> tuple[float, int]:
    """Migrate the database and enqueue ``tasks`` no-op tasks; return (seconds, study id)."""
    from tracker._db import Database
    from tracker._migrate import upgrade
    from tracker._queue import enqueue, get_or_create_study

    db = Database(db_url)
    try:
        upgrade(db)
        start = time.perf_counter()
        with db.session() as session:
            study = get_or_create_study(session, STUDY, "queue throughput benchmark")
            for i in range(tasks):
                enqueue(session, study, "noop", {"index": i})
            study_id = study.id
        return time.perf_counter() - start, study_id
    finally:
        db.dispose()


def outcome(db_url: str) -> tuple[dict[str, int], float | None]:
    """Task counts per status, and the wall-clock (epoch) time the last task finished."""
    import sqlalchemy as sa

    from tracker._db import Database
    from tracker._schema import Task

    db = Database(db_url)
    try:
        with db.engine.connect() as conn:
            rows = conn.execute(sa.select(Task.status, sa.func.count()).group_by(Task.status))
            counts = {status: int(n) for status, n in rows}
            last = conn.execute(sa.select(sa.func.max(Task.finished_at))).scalar()
    finally:
        db.dispose()
    if last is None:
        return counts, None
    if isinstance(last, str):  # SQLite may hand back the text it stored
        from datetime import datetime

        last = datetime.fromisoformat(last)
    if last.tzinfo is None:
        from datetime import UTC

        last = last.replace(tzinfo=UTC)
    return counts, last.timestamp()


# --- workers ---------------------------------------------------------------------------


def _worker_process(
    db_url: str,
    store_url: str,
    ready: Any,
    go: Any,
    results: Any,
    profile_path: str | None,
) -> None:
    """One worker: import everything, report ready, wait for the start, drain the queue."""
    try:
        import tracker._builtin  # noqa: F401  (the noop kind)
        from tracker._worker import WorkerConfig, run_worker

        cfg = WorkerConfig(db_url=db_url, store_url=store_url)
        profiler = None
        if profile_path:
            import cProfile

            profiler = cProfile.Profile()
    except BaseException as err:
        ready.release()
        results.put({"error": f"worker setup failed: {type(err).__name__}: {err}"})
        return
    ready.release()
    if not go.wait(READY_TIMEOUT + DRAIN_TIMEOUT):
        results.put({"error": "never released"})
        return
    start = time.monotonic()
    try:
        if profiler is not None:
            stats = profiler.runcall(run_worker, cfg)
            profiler.dump_stats(profile_path)
        else:
            stats = run_worker(cfg)
    except BaseException as err:
        results.put({"error": f"run_worker raised {type(err).__name__}: {err}"})
        return
    results.put({"start": start, "end": time.monotonic(), "stats": stats})


def run_case(
    backend: str,
    workers: int,
    tasks: int,
    pg_admin_url: str,
    tmp: Path,
    profile_dir: Path | None,
) -> CaseResult:
    ctx = mp.get_context("spawn")
    with fresh_database(backend, pg_admin_url, tmp) as db_url:
        enqueue_s, _ = prepare(db_url, tasks)
        store_url = str(tmp / f"store_{uuid.uuid4().hex[:8]}.zarr")
        ready = ctx.Semaphore(0)
        go = ctx.Event()
        results = ctx.Queue()
        procs = []
        for i in range(workers):
            profile_path = None
            if profile_dir is not None:
                profile_path = str(profile_dir / f"{backend}-w{workers}-{i}.prof")
            procs.append(
                ctx.Process(
                    target=_worker_process,
                    args=(db_url, store_url, ready, go, results, profile_path),
                    name=f"bench-worker-{i}",
                    daemon=True,
                )
            )
        errors: list[str] = []
        try:
            for p in procs:
                p.start()
            deadline = time.monotonic() + READY_TIMEOUT
            for _ in procs:
                if not ready.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
                    raise RuntimeError(f"workers not ready after {READY_TIMEOUT:.0f} s")
            wall_start = time.time()
            start = time.monotonic()
            go.set()
            reports = []
            for _ in procs:
                reports.append(results.get(timeout=DRAIN_TIMEOUT))
            for p in procs:
                p.join(timeout=30)
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=5)
        ends = []
        per_worker = []
        for report in reports:
            if "error" in report:
                errors.append(report["error"])
                continue
            ends.append(report["end"])
            per_worker.append(int(report["stats"]["done"]))
        seconds = (max(ends) if ends else time.monotonic()) - start
        counts, last_finished = outcome(db_url)
        last_done_s = None if last_finished is None else last_finished - wall_start
    done = counts.get("done", 0)
    if done != tasks:
        errors.append(f"{done} of {tasks} tasks done afterwards (status counts {counts})")
    return CaseResult(
        backend=backend,
        workers=workers,
        tasks=tasks,
        enqueue_s=enqueue_s,
        seconds=seconds,
        last_done_s=last_done_s,
        done=done,
        counts=counts,
        per_worker=sorted(per_worker, reverse=True),
        errors=errors,
    )


# --- report ----------------------------------------------------------------------------


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_table(results: list[CaseResult]) -> None:
    header = (
        f"{'backend':<11}{'workers':>8}{'tasks':>7}{'enqueue s':>10}{'seconds':>9}"
        f"{'last done s':>12}{'tasks/s':>9}{'vs target':>10}{'ms/task/worker':>15}"
        f"{'vs 5 ms':>8}  per-worker done"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        target = r.tps_target
        tps_ratio = r.tps / target if target else None
        overhead_ratio = TARGET_OVERHEAD_MS / r.ms_per_task_per_worker if r.workers == 1 else None
        last = "-" if r.last_done_s is None else f"{r.last_done_s:.3f}"
        spread = ",".join(str(n) for n in r.per_worker)
        print(
            f"{r.backend:<11}{r.workers:>8}{r.tasks:>7}{r.enqueue_s:>10.2f}{r.seconds:>9.3f}"
            f"{last:>12}{r.tps:>9.0f}{_ratio(tps_ratio):>10}{r.ms_per_task_per_worker:>15.2f}"
            f"{_ratio(overhead_ratio):>8}  {spread}"
        )
    print(
        "\nseconds: release of the workers until the last one returned; last done s: release "
        "until the\nlast task's finished_at (database clock); vs target: tasks/s / target "
        f"(PostgreSQL {TARGET_PG_WORKERS} workers: {TARGET_PG_TPS:.0f}/s, SQLite: "
        f"{TARGET_SQLITE_TPS:.0f}/s); vs 5 ms: {TARGET_OVERHEAD_MS:.0f} ms / (1-worker ms per task)"
    )


def print_targets(results: list[CaseResult]) -> None:
    print("\ntargets")
    lines: list[tuple[bool, str]] = []
    for r in results:
        target = r.tps_target
        if target is None:
            continue
        what = f"{r.backend} {r.workers} worker(s): {r.tps:.0f} tasks/s (target >= {target:.0f})"
        lines.append((r.tps >= target and not r.errors, what))
    for backend in sorted({r.backend for r in results}):
        ones = [r for r in results if r.backend == backend and r.workers == 1]
        if not ones:
            print(f"  ----  {backend} overhead: no 1-worker case run (add 1 to --workers)")
            continue
        ms = ones[0].ms_per_task_per_worker
        what = f"{backend} overhead: {ms:.2f} ms per task (target < {TARGET_OVERHEAD_MS:.0f} ms)"
        lines.append((ms < TARGET_OVERHEAD_MS and not ones[0].errors, what))
    if not any(r.backend == "postgresql" and r.workers == TARGET_PG_WORKERS for r in results):
        if any(r.backend == "postgresql" for r in results):
            print(f"  ----  postgresql: no {TARGET_PG_WORKERS}-worker case run")
    for ok, what in lines:
        print(f"  {'PASS' if ok else 'MISS'}  {what}")


def print_profile(profile_dir: Path, results: list[CaseResult], limit: int = 30) -> None:
    for r in results:
        files = sorted(profile_dir.glob(f"{r.backend}-w{r.workers}-*.prof"))
        if not files:
            continue
        stats = pstats.Stats(str(files[0]))
        for extra in files[1:]:
            stats.add(str(extra))
        print(f"\nprofile: {r.backend}, {r.workers} worker(s), all workers summed")
        stats.sort_stats("cumulative").print_stats(limit)
        stats.sort_stats("tottime").print_stats(limit)


# --- main ------------------------------------------------------------------------------


def _csv_ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,4,8, got {text!r}")
    return values


def _csv_backends(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in BACKENDS]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"backends are {', '.join(BACKENDS)}; got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=DEFAULT_TASKS, help="tasks per case")
    parser.add_argument(
        "--workers",
        type=_csv_ints,
        default=list(DEFAULT_WORKERS),
        help="worker process counts, comma-separated (default 1,4,8)",
    )
    parser.add_argument(
        "--backends",
        type=_csv_backends,
        default=list(BACKENDS),
        help="sqlite, postgresql or both (default both)",
    )
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get("TRACKER_BENCH_PG", DEFAULT_PG_ADMIN_URL),
        help="a PostgreSQL URL allowed to CREATE/DROP DATABASE (default %(default)s)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="run each worker under cProfile, keep the stats in DIR and print a summary",
    )
    args = parser.parse_args(argv)
    if args.tasks < 1:
        parser.error("--tasks must be at least 1")
    if Path.cwd().resolve() == _HERE:
        os.chdir(_REPO)  # spawned children put the cwd first on sys.path: see the top

    profile_dir = args.profile.resolve() if args.profile else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)

    print(
        f"queue benchmark: {args.tasks} no-op tasks per case, workers {args.workers}, "
        f"backends {args.backends}, {os.cpu_count()} CPU(s), python {sys.version.split()[0]}"
    )
    results: list[CaseResult] = []
    with tempfile.TemporaryDirectory(prefix="bench_queue_") as tmpdir:
        tmp = Path(tmpdir)
        for backend in args.backends:
            for workers in args.workers:
                try:
                    r = run_case(backend, workers, args.tasks, args.pg_admin_url, tmp, profile_dir)
                except Exception as err:
                    print(
                        f"ERROR {backend} {workers} worker(s): {type(err).__name__}: {err}",
                        file=sys.stderr,
                    )
                    continue
                for e in r.errors:
                    print(f"ERROR {backend} {workers} worker(s): {e}", file=sys.stderr)
                print(
                    f"  {backend:<10} {workers} worker(s): {r.tps:8.0f} tasks/s "
                    f"({r.seconds:.3f} s, enqueue {r.enqueue_s:.2f} s)",
                    flush=True,
                )
                results.append(r)
    print()
    if results:
        print_table(results)
        print_targets(results)
        if profile_dir is not None:
            print_profile(profile_dir, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
