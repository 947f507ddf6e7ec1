"""Queue throughput: claim + complete of no-op tasks by 1, 4 and 8 worker processes.

Each case gets a fresh database (an SQLite file in a temporary directory, or a PostgreSQL
database created for the case and dropped afterwards), migrated to the schema head, with N
tasks of the built-in kind ``noop`` enqueued (one session, ``enqueue`` per task) before the
clock starts, and a Zarr store created up front. Worker processes (``spawn``) import
everything, report ready and wait; the clock starts when they are all released and stops
when the last one has returned from ``run_worker`` -- the production loop, heartbeat thread
included -- so it covers draining the queue plus the workers' own startup inside
``run_worker`` and their drain detection at the end (both shown separately). The task body
does nothing, so the time per task is the queue's own cost. Afterwards every task must be
'done'; anything else is printed as an ERROR.

    python benchmarks/queue.py [--tasks N] [--workers 1,4,8] [--backends sqlite,postgresql]
                               [--pg-admin-url URL] [--analyze] [--profile DIR]

Targets (ratios are actual/target for throughput and target/actual for overhead, so a
ratio >= 1.0 means the target is met): at least 1,000 tasks/s with 8 workers on
PostgreSQL, at least 200 tasks/s on SQLite (any number of workers), and a queue overhead
under 5 ms per task (the 1-worker time per task). Besides wall time the table shows the CPU
time per task of the workers and of their PostgreSQL backends (read from /proc, so only
for a server on this machine) and the throughput those costs allow on this machine's cores.
The exit status is 0 whatever the result: this is a measurement, not a test."""

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
from datetime import UTC, datetime  # noqa: E402
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
    worker_cpu_s: float | None
    server_cpu_s: float | None
    cpu_s: float | None
    steal_s: float | None
    first_claim_s: float | None
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

    def _per_task_ms(self, seconds: float | None) -> float | None:
        return None if seconds is None else 1000.0 * seconds / self.tasks

    @property
    def cpu_ms_per_task(self) -> float | None:
        return self._per_task_ms(self.cpu_s)

    @property
    def worker_cpu_ms_per_task(self) -> float | None:
        return self._per_task_ms(self.worker_cpu_s)

    @property
    def server_cpu_ms_per_task(self) -> float | None:
        return self._per_task_ms(self.server_cpu_s)

    @property
    def own_cpu_ms_per_task(self) -> float | None:
        """CPU of this case's own processes per task: the workers plus their DB backends."""
        if self.worker_cpu_s is None or self.server_cpu_s is None:
            return None
        return self._per_task_ms(self.worker_cpu_s + self.server_cpu_s)

    @property
    def tps_target(self) -> float | None:
        if self.backend == "sqlite":
            return TARGET_SQLITE_TPS
        if self.workers == TARGET_PG_WORKERS:
            return TARGET_PG_TPS
        return None


def cpu_busy_seconds() -> tuple[float, float] | None:
    """Machine-wide (busy, stolen) CPU seconds so far, from /proc/stat; None off Linux.

    Busy is every CPU's time outside idle, iowait and steal: the workers, the database
    server and anything else running. Its rise during a case, per task, says how many tasks
    per second the machine's cores could reach at best.
    """
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    steal = ticks[7] if len(ticks) > 7 else 0
    guest = sum(ticks[8:10])  # already counted in user/nice
    return (sum(ticks) - guest - idle - steal) / hz, steal / hz


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


def prepare(db_url: str, tasks: int, analyze: bool = False) -> tuple[float, int]:
    """Migrate the database and enqueue ``tasks`` no-op tasks; return (seconds, study id).

    With ``analyze`` the planner statistics are refreshed after enqueueing, as PostgreSQL's
    autovacuum would do within a minute or so (SQLite never does it by itself).
    """
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
        elapsed = time.perf_counter() - start
        if analyze:
            with db.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        return elapsed, study_id
    finally:
        db.dispose()


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite may hand back the text it stored
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def outcome(db_url: str) -> tuple[dict[str, int], float | None, float | None]:
    """Task counts per status, and the wall-clock (epoch) times of the first claim and the
    last completion (the database clock, which is this machine's clock)."""
    import sqlalchemy as sa

    from tracker._db import Database
    from tracker._schema import Task

    db = Database(db_url)
    try:
        with db.engine.connect() as conn:
            rows = conn.execute(sa.select(Task.status, sa.func.count()).group_by(Task.status))
            counts = {status: int(n) for status, n in rows}
            first, last = conn.execute(
                sa.select(sa.func.min(Task.started_at), sa.func.max(Task.finished_at))
            ).one()
    finally:
        db.dispose()
    return counts, _epoch(first), _epoch(last)


# --- workers ---------------------------------------------------------------------------


def _process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process on this machine, from /proc; None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _ServerCpu:
    """Sums the CPU time of the PostgreSQL backends serving this process's connections.

    Each new pooled connection notes its backend's pid and CPU time; when the pool closes
    it (run_worker disposes its engine at the end), the backend's CPU since then is added.
    Works only where the server runs on this machine; otherwise the sum stays unknown.
    """

    def __init__(self) -> None:
        self.seconds: float | None = 0.0

    def install(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.pool import Pool

        event.listen(Pool, "connect", self._on_connect)
        event.listen(Pool, "close", self._on_close)

    def _on_connect(self, dbapi_conn: Any, record: Any) -> None:
        pid = getattr(getattr(dbapi_conn, "info", None), "backend_pid", None)
        if pid is None:
            return  # SQLite: the "server" runs inside the worker, counted with it
        record.info["bench_backend"] = (pid, _process_cpu_seconds(pid))

    def _on_close(self, dbapi_conn: Any, record: Any) -> None:
        pid, before = record.info.pop("bench_backend", (None, None))
        if pid is None or self.seconds is None:
            return
        after = _process_cpu_seconds(pid)
        if before is None or after is None:
            self.seconds = None
        else:
            self.seconds += after - before


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

        max_batch = int(os.environ.get("TRACKER_BENCH_MAX_BATCH", WorkerConfig.max_batch))
        cfg = WorkerConfig(db_url=db_url, store_url=store_url, max_batch=max_batch)
        server_cpu = _ServerCpu()
        server_cpu.install()
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
    cpu_start = time.process_time()
    try:
        stats = run_worker(cfg) if profiler is None else profiler.runcall(run_worker, cfg)
    except BaseException as err:
        results.put({"error": f"run_worker raised {type(err).__name__}: {err}"})
        return
    end = time.monotonic()
    cpu = time.process_time() - cpu_start
    if profiler is not None:
        profiler.dump_stats(profile_path)
    results.put(
        {"start": start, "end": end, "stats": stats, "cpu": cpu, "server_cpu": server_cpu.seconds}
    )


def run_case(
    backend: str,
    workers: int,
    tasks: int,
    pg_admin_url: str,
    tmp: Path,
    profile_dir: Path | None,
    analyze: bool = False,
) -> CaseResult:
    ctx = mp.get_context("spawn")
    with fresh_database(backend, pg_admin_url, tmp) as db_url:
        enqueue_s, _ = prepare(db_url, tasks, analyze)
        store_url = str(tmp / f"store_{uuid.uuid4().hex[:8]}.zarr")
        # Create the store before the workers open it: several processes creating one fresh
        # Zarr group at once race (zarr's ContainsGroupError, raised as StoreError).
        from tracker._store import ArrayStore

        ArrayStore(store_url)
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
            cpu_start = cpu_busy_seconds()
            wall_start = time.time()
            start = time.monotonic()
            go.set()
            reports = []
            for _ in procs:
                reports.append(results.get(timeout=DRAIN_TIMEOUT))
            cpu_end = cpu_busy_seconds()
            for p in procs:
                p.join(timeout=30)
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=5)
        ends = []
        per_worker = []
        worker_cpu: float | None = 0.0
        server_cpu: float | None = 0.0
        for report in reports:
            if "error" in report:
                errors.append(report["error"])
                continue
            ends.append(report["end"])
            per_worker.append(int(report["stats"]["done"]))
            worker_cpu = report["cpu"] + worker_cpu if worker_cpu is not None else None
            if server_cpu is not None and report["server_cpu"] is not None:
                server_cpu += report["server_cpu"]
            else:
                server_cpu = None
        seconds = (max(ends) if ends else time.monotonic()) - start
        counts, first_started, last_finished = outcome(db_url)
        first_claim_s = None if first_started is None else first_started - wall_start
        last_done_s = None if last_finished is None else last_finished - wall_start
    cpu_s = steal_s = None
    if cpu_start is not None and cpu_end is not None:
        cpu_s, steal_s = cpu_end[0] - cpu_start[0], cpu_end[1] - cpu_start[1]
    done = counts.get("done", 0)
    if done != tasks:
        errors.append(f"{done} of {tasks} tasks done afterwards (status counts {counts})")
    return CaseResult(
        backend=backend,
        workers=workers,
        tasks=tasks,
        enqueue_s=enqueue_s,
        seconds=seconds,
        worker_cpu_s=worker_cpu,
        server_cpu_s=server_cpu,
        cpu_s=cpu_s,
        steal_s=steal_s,
        first_claim_s=first_claim_s,
        last_done_s=last_done_s,
        done=done,
        counts=counts,
        per_worker=sorted(per_worker, reverse=True),
        errors=errors,
    )


# --- report ----------------------------------------------------------------------------


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def print_table(results: list[CaseResult]) -> None:
    ncpu = os.cpu_count() or 1
    header = (
        f"{'backend':<11}{'workers':>8}{'tasks':>6}{'enqueue s':>10}{'seconds':>9}"
        f"{'start':>7}{'last done':>10}{'tasks/s':>8}{'vs target':>10}{'ms/task/worker':>15}"
        f"{'vs 5 ms':>8}{'cpu ms/task: workers':>21}{'db':>6}{'machine':>8}{'cap/s':>7}"
        "  done/worker"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        target = r.tps_target
        tps_ratio = r.tps / target if target else None
        overhead_ratio = TARGET_OVERHEAD_MS / r.ms_per_task_per_worker if r.workers == 1 else None
        own = r.own_cpu_ms_per_task or r.cpu_ms_per_task
        cap = 1000.0 * ncpu / own if own else None
        spread = f"{min(r.per_worker)}-{max(r.per_worker)}" if r.per_worker else "-"
        db_cpu = "-" if r.backend == "sqlite" else _num(r.server_cpu_ms_per_task, ".2f")
        print(
            f"{r.backend:<11}{r.workers:>8}{r.tasks:>6}{r.enqueue_s:>10.2f}{r.seconds:>9.3f}"
            f"{_num(r.first_claim_s, '.3f'):>7}{_num(r.last_done_s, '.3f'):>10}{r.tps:>8.0f}"
            f"{_ratio(tps_ratio):>10}{r.ms_per_task_per_worker:>15.2f}{_ratio(overhead_ratio):>8}"
            f"{_num(r.worker_cpu_ms_per_task, '.2f'):>21}{db_cpu:>6}"
            f"{_num(r.cpu_ms_per_task, '.2f'):>8}{_num(cap, '.0f'):>7}  {spread}"
        )
    steal = sum(r.steal_s or 0.0 for r in results)
    wall = sum(r.seconds for r in results) * ncpu
    print(
        f"""
seconds      release of the workers until the last one returned from run_worker
start        release until the first claim (database clock): the workers' own startup
             (engine, ping, schema check, store) inside run_worker
last done    release until the last task's finished_at (database clock); the rest is the
             workers' drain detection (poll sleep, final claim) and exit
vs target    tasks/s / target: PostgreSQL with {TARGET_PG_WORKERS} workers {TARGET_PG_TPS:.0f}/s, \
SQLite {TARGET_SQLITE_TPS:.0f}/s
vs 5 ms      {TARGET_OVERHEAD_MS:.0f} ms / (1-worker ms per task): the queue overhead target
cpu ms/task  CPU time per task of the worker processes, of the PostgreSQL backends serving
             them (SQLite runs inside the workers), and of the whole machine (busy time from
             /proc/stat: machine > workers + db means something else ran meanwhile)
cap/s        {ncpu} CPU(s) / (workers + db CPU per task): the most tasks/s this machine
             could reach at that cost per task, however many workers
hypervisor steal during the cases: {100.0 * steal / wall if wall else 0.0:.1f}% of CPU time"""
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
    pg_run = any(r.backend == "postgresql" for r in results)
    if pg_run and not any(
        r.backend == "postgresql" and r.workers == TARGET_PG_WORKERS for r in results
    ):
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
        "--analyze",
        action="store_true",
        help="run ANALYZE after enqueueing (planner statistics, as autovacuum would do later)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=None,
        metavar="N",
        help="most tasks a worker claims at once (default: the worker's own, 32; 1 = one "
        "claim per task)",
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
    if args.max_batch is not None:
        if args.max_batch < 1:
            parser.error("--max-batch must be at least 1")
        os.environ["TRACKER_BENCH_MAX_BATCH"] = str(args.max_batch)  # the spawned workers read it
    if Path.cwd().resolve() == _HERE:
        os.chdir(_REPO)  # spawned children put the cwd first on sys.path: see the top

    profile_dir = args.profile.resolve() if args.profile else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)

    print(
        f"queue benchmark: {args.tasks} no-op tasks per case, workers {args.workers}, "
        f"backends {args.backends}, {os.cpu_count()} CPU(s), python {sys.version.split()[0]}"
        + (", ANALYZE after enqueue" if args.analyze else "")
        + f", max batch {os.environ.get('TRACKER_BENCH_MAX_BATCH', 'default (32)')}"
    )
    results: list[CaseResult] = []
    with tempfile.TemporaryDirectory(prefix="bench_queue_") as tmpdir:
        tmp = Path(tmpdir)
        for backend in args.backends:
            for workers in args.workers:
                try:
                    r = run_case(
                        backend,
                        workers,
                        args.tasks,
                        args.pg_admin_url,
                        tmp,
                        profile_dir,
                        args.analyze,
                    )
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
