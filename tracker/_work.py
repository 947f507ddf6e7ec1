"""``tracker work``: run worker loops until the queue is drained.

With no --workers, --scheduler or --cuda the loops run in threads of this process, one per
core: the first claim comes within a second of launch and torch is imported once, where a
LocalCluster costs seconds of start-up and one torch import per process (see
benchmarks/startup.py). ``--workers N`` starts a LocalCluster (one single-threaded process
per worker: a killed worker is restarted, a crashing task cannot take the command down); ``--cuda`` uses
dask_cuda.LocalCUDACluster (one worker per GPU); ``--scheduler`` starts this machine's
workers attached to an existing scheduler, so several machines share one cluster and all
of them claim from the same database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import sqlalchemy as sa

from tracker._config import Settings, env_seconds
from tracker._db import Database, open_database
from tracker._exceptions import ConfigError, NoGPU
from tracker._malloc import tune_this_process, worker_environment
from tracker._manage import CANCELLED
from tracker._progress import Progress, Scope
from tracker._queue import DEFAULT_LEASE_SECONDS, find_study
from tracker._registry import known_kinds, runnable_here
from tracker._retry import retrying
from tracker._schema import Study, Task
from tracker._worker import WorkerConfig, run_worker

log = logging.getLogger(__name__)

WORKER_START_TIMEOUT = 120.0
# How long `tracker work --scheduler ADDRESS` keeps trying to reach the scheduler (Dask retries
# a refused connection until then): longer for a scheduler that is still starting, shorter to
# fail fast in scripts and tests.
SCHEDULER_TIMEOUT_ENV = "TRACKER_SCHEDULER_TIMEOUT_SECONDS"
DEFAULT_SCHEDULER_TIMEOUT = 10.0
# Each Dask worker offers one unit of this resource and each worker loop takes one, so there is
# one loop per worker without pinning a loop to an address: when a killed worker is restarted
# (at a new address) Dask runs its loop again there.
LOOP_RESOURCE = "tracker_loop"
CLUSTER_START_ATTEMPTS = 3
# `tracker work` gives up when no Dask worker has been alive for this long.
NO_WORKERS_TIMEOUT = 120.0


@dataclass(frozen=True)
class WorkSummary:
    done: int
    failed: int
    seconds: float
    workers: int
    # The scope's state at the end: tasks failed (now or before this run), and tasks left
    # waiting, pending or running. Either means the work asked for is not complete.
    failed_in_scope: int = 0
    failed_before: int = 0
    unfinished: int = 0
    restarts: int = 0
    # Of the unfinished: tasks that need a GPU, left by workers without one.
    needs_gpu: int = 0


def check_cuda() -> int:
    """The number of usable GPUs; NoGPU (with the fix) when there is none."""
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        raise NoGPU(
            "--cuda needs dask-cuda: pip install 'tracker[cuda]' (or run without --cuda)"
        ) from None
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except Exception as err:
        raise NoGPU(
            f"--cuda found no usable NVIDIA GPU ({type(err).__name__}): run without --cuda"
        ) from None
    if count == 0:
        raise NoGPU("--cuda found no NVIDIA GPU on this machine: run without --cuda")
    return int(count)


def scope_counts(
    db: Database, kinds: Sequence[str], study_ids: Sequence[int] | None
) -> dict[str, int]:
    query = sa.select(Task.status, sa.func.count()).where(Task.kind.in_(list(kinds)))
    # Tasks a user cancelled are off the queue: neither failures nor unfinished work.
    query = query.where(
        sa.or_(Task.status != "failed", Task.error.is_(None), Task.error != CANCELLED)
    )
    if study_ids is not None:
        query = query.where(Task.study_id.in_(list(study_ids)))

    def read() -> list[Any]:
        with db.engine.connect() as conn:
            return list(conn.execute(query.group_by(Task.status)).all())

    rows = retrying(read, what="counting the queue")
    counts = dict.fromkeys(("waiting", "pending", "running", "done", "failed"), 0)
    counts.update({status: int(n) for status, n in rows})
    return counts


@contextlib.contextmanager
def _local_cluster(n_workers: int, cuda: bool, dashboard: bool = True) -> Iterator[Any]:
    from distributed import Client

    # Worker processes inherit this: torch in each uses its share of the cores, not all.
    os.environ.setdefault("TRACKER_TORCH_THREADS", str(max(1, (os.cpu_count() or 1) // n_workers)))
    worker_environment()
    resources = {LOOP_RESOURCE: 1}
    cluster = None
    for attempt in range(1, CLUSTER_START_ATTEMPTS + 1):
        try:
            cluster = _start_local_cluster(n_workers, cuda, resources, dashboard)
            break
        except RuntimeError as err:  # "Nanny failed to start": a worker died while starting
            if attempt == CLUSTER_START_ATTEMPTS:
                raise ConfigError(
                    f"the local Dask cluster failed to start {attempt} times ({err}): check "
                    "memory and the messages above, then run `tracker work` again"
                ) from None
            log.warning("the local Dask cluster failed to start (%s); trying again", err)
    assert cluster is not None
    try:
        client = Client(cluster)
    except BaseException:
        _close_quietly(cluster)
        raise
    try:
        yield client, list(client.scheduler_info()["workers"]), LOOP_RESOURCE
    finally:
        _close_quietly(client, cluster)


# The local cluster's Dask dashboard: this machine only, on a free port. Dask's default
# (8787 on every interface) is often taken by another cluster; it then moved to a random port
# with a "port 8787 in use" warning on the terminal. Progress prints the address once; without
# progress (--no-progress) no dashboard is served: nobody would learn its address, and its
# Bokeh server costs 2-3 s of start-up on 2 busy cores.
LOCAL_DASHBOARD = "127.0.0.1:0"


def _start_local_cluster(
    n_workers: int, cuda: bool, resources: dict[str, int], dashboard: bool = True
) -> Any:
    # The scheduler serves HTTP (health, metrics, and the dashboard when asked) whatever
    # `dashboard` says: without an address of our own it takes port 8787, and a second cluster
    # on the machine then warns ("Port 8787 is already in use"). A free port, always.
    options = {"dashboard_address": LOCAL_DASHBOARD, "scheduler_kwargs": {"dashboard": dashboard}}
    if cuda:
        from dask_cuda import LocalCUDACluster

        return LocalCUDACluster(threads_per_worker=1, resources=resources, **options)
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        memory_limit=0,
        silence_logs=logging.ERROR,
        resources=resources,
        **options,
    )


def _close_quietly(*closables: Any) -> None:
    """Shut Dask down without turning a slow shutdown into a failure: by then every result is
    committed (seen: a TimeoutError closing the cluster of a finished run on a loaded machine)."""
    for thing in closables:
        try:
            thing.close()
        except (TimeoutError, OSError, RuntimeError) as err:
            log.warning(
                "Dask shut down slowly (%s: %s); the results are stored", type(err).__name__, err
            )


def scheduler_timeout() -> float:
    """Seconds to keep trying to reach a Dask scheduler ($TRACKER_SCHEDULER_TIMEOUT_SECONDS)."""
    return env_seconds(SCHEDULER_TIMEOUT_ENV, DEFAULT_SCHEDULER_TIMEOUT, zero_ok=False)


@contextlib.contextmanager
def _joined_cluster(address: str, n_workers: int, cuda: bool) -> Iterator[Any]:
    """Start this machine's workers attached to ``address`` and yield their addresses."""
    from distributed import Client

    token = uuid.uuid4().hex[:6]
    prefix = f"tracker-{os.uname().nodename}-{os.getpid()}-{token}"
    # This invocation's own resource: its loops run on its workers, not on another machine's.
    resource = f"{LOOP_RESOURCE}_{token}"
    if cuda:
        command = [sys.executable, "-m", "dask", "cuda", "worker", address, "--name", prefix]
    else:
        command = [sys.executable, "-m", "dask", "worker", address, "--name", prefix,
                   "--nworkers", str(n_workers)]  # fmt: skip
    command += ["--nthreads", "1", "--no-dashboard", "--memory-limit", "0",
                "--resources", f"{resource}=1"]  # fmt: skip
    try:
        client = Client(address, timeout=scheduler_timeout())
    except OSError as err:
        raise ConfigError(
            f"cannot reach the Dask scheduler at {address} ({err}): start `dask scheduler` "
            "there or fix --scheduler"
        ) from None
    # The workers' stderr is inherited: it holds the tasks' logs (and `docker logs` shows
    # them); a pipe nobody reads would block the workers once it filled.
    os.environ.setdefault("TRACKER_TORCH_THREADS", str(max(1, (os.cpu_count() or 1) // n_workers)))
    worker_environment()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while True:
            ours = [
                addr
                for addr, info in client.scheduler_info(n_workers=-1)["workers"].items()
                if str(info.get("name", "")).startswith(prefix)
            ]
            if len(ours) >= n_workers:
                break
            if proc.poll() is not None:
                raise ConfigError(
                    f"the Dask workers exited (status {proc.returncode}) before joining "
                    f"{address}: their messages are above"
                )
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"the Dask workers did not join {address} within {WORKER_START_TIMEOUT:.0f} s"
                )
            time.sleep(0.2)
        yield client, ours, resource
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_cpu_pool(cuda: bool, cpu_workers: int) -> None:
    if cpu_workers < 0:
        raise ConfigError(f"--cpu-workers must be 0 or more, got {cpu_workers}")
    if cpu_workers and not cuda:
        raise ConfigError(
            "--cpu-workers adds CPU workers beside the GPU workers of --cuda; without --cuda "
            "every worker is a CPU worker: use --workers N"
        )


def work(
    settings: Settings,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    cuda: bool = False,
    cpu_workers: int = 0,
    forever: bool = False,
    plugins: Sequence[str] = (),
    kinds: Sequence[str] | None = None,
    study: str | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    progress: bool = True,
    quiet: bool = False,
    stream: IO[str] = sys.stderr,
    tune_malloc: bool = False,
) -> WorkSummary:
    """Drain the queue (or serve it forever) with worker loops; return what was done.
    ``tune_malloc``: set this process's allocator for the loops it runs (tracker._malloc;
    the command does, a notebook's process is left as it is)."""
    check_cpu_pool(cuda, cpu_workers)
    db = open_database(settings.db_url)
    known = list(known_kinds(plugins))
    if kinds is not None:
        unknown = sorted(set(kinds) - set(known))
        if unknown:
            raise ConfigError(
                f"no function is registered for task kind(s) {', '.join(unknown)}: "
                "load their plugin with --plugin MODULE"
            )
    scope_kinds = list(kinds) if kinds is not None else known
    if not scheduler:  # local workers: what this machine cannot run is not this run's work
        runnable = runnable_here(scope_kinds)
        _note_mlflow_tasks(db, sorted(set(scope_kinds) - set(runnable)), study, stream)
        scope_kinds = runnable
    study_ids = None
    if study is not None:
        with db.session() as session:
            study_ids = [find_study(session, study).id]
    _warn_unknown_kinds(db, known, study_ids, stream)
    if not cuda:
        _warn_gpu_tasks(db, study_ids, stream)
    n_gpus = check_cuda() if cuda else 0
    n_workers = n_gpus or workers or max(os.cpu_count() or 1, 1)
    in_process = not (cuda or workers or scheduler or forever)
    start = scope_counts(db, scope_kinds, study_ids)
    if not forever and start["waiting"] + start["pending"] + start["running"] == 0:
        stream.write("nothing to do: no waiting, pending or running tasks\n")
        return WorkSummary(0, 0, 0.0, 0, failed_in_scope=start["failed"],
                           failed_before=start["failed"])  # fmt: skip

    base = WorkerConfig(
        db_url=settings.db_url,
        store_url=settings.store_url,
        mlflow_uri=settings.mlflow_uri,
        plugins=tuple(plugins),
        kinds=tuple(scope_kinds),
        study_ids=tuple(study_ids) if study_ids is not None else None,
        forever=forever,
        lease_seconds=lease_seconds,
        gpu=cuda,
    )
    bar = Progress(stream, start, progress, quiet=quiet,
                   scope=Scope(db, scope_kinds, study_ids))  # fmt: skip
    t0 = time.monotonic()
    from tracker._logs import log_path, route_to_file

    log_file = None if scheduler else log_path(settings.home)
    if log_file is not None:
        route_to_file(log_file)

    def tick() -> None:
        bar.update(scope_counts(db, scope_kinds, study_ids))

    restarts = 0
    if in_process:
        if tune_malloc:
            tune_this_process(n_workers)
        results = _run_in_threads(base, n_workers, tick)
        n_loops = n_workers
    else:
        cluster = (
            _joined_cluster(scheduler, n_workers, cuda)
            if scheduler
            else _local_cluster(n_workers, cuda, dashboard=progress)
        )
        # The CPU pool beside the GPU workers: loops in threads of this process that compute
        # on the CPU and leave GPU tasks to the dask-cuda workers.
        pool = _cpu_pool(base, cpu_workers) if cuda and cpu_workers else None
        if pool is not None and tune_malloc:
            tune_this_process(cpu_workers)
        with cluster as (client, addresses, resource):
            bar.note_dashboard(_dashboard_link(client))
            if log_file is not None:
                from tracker._logplugin import LogToFile  # distributed's plugin class

                register_plugin(client, LogToFile(log_file), stream)
            loops = _Loops(client, base, resource)
            futures = [loops.submit() for _ in addresses]
            if pool is not None:
                pool.start()
            try:
                results = loops.supervise(futures, tick)
            except KeyboardInterrupt:
                client.cancel(loops.live)
                raise
        if pool is not None:
            results += pool.join(tick)
        n_loops, restarts = len(addresses) + cpu_workers, loops.restarts
    end = scope_counts(db, scope_kinds, study_ids)
    bar.update(end, final=True)
    db.dispose()
    return WorkSummary(
        done=sum(r["done"] for r in results),
        failed=sum(r["failed"] for r in results),
        seconds=time.monotonic() - t0,
        workers=n_loops,
        failed_in_scope=end["failed"],
        failed_before=start["failed"],
        unfinished=0 if forever else end["waiting"] + end["pending"] + end["running"],
        restarts=restarts,
        needs_gpu=0 if forever or cuda else _gpu_pending(db, study_ids),
    )


def _run_in_threads(base: WorkerConfig, n: int, tick: Any) -> list[dict[str, Any]]:
    """Run ``n`` worker loops in threads of this process until they drain the queue."""
    loops = _ThreadLoops(base, n)
    loops.start()
    return loops.join(tick)


class _ThreadLoops:
    """Worker loops in threads of this process.

    torch's operations release the GIL, so loops computing tiles or training share the cores
    as separate processes would; torch gets cores // n threads, as each Dask worker does. The
    first error of a loop is raised by ``join`` (a TrackerError's one line, or a bug's
    traceback); the threads are daemons, so an interrupted command exits and their leases
    expire.
    """

    def __init__(self, base: WorkerConfig, n: int, torch_threads: int | None = None) -> None:
        self.base, self.n, self.torch_threads = base, n, torch_threads
        self.results: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        threads = str(self.torch_threads or max(1, (os.cpu_count() or 1) // self.n))
        if self.torch_threads:  # this process's torch: the loops' share, set before its import
            os.environ["TRACKER_TORCH_THREADS"] = threads
        else:
            os.environ.setdefault("TRACKER_TORCH_THREADS", threads)
        prefix = "cpu" if self.base.cpu_only else "loop"
        self.threads = [threading.Thread(target=self._loop, name=f"{prefix}{i}", daemon=True)
                        for i in range(self.n)]  # fmt: skip
        for thread in self.threads:
            thread.start()

    def _loop(self) -> None:
        try:
            self.results.append(run_worker(self.base))
        except BaseException as err:  # re-raised in the calling thread
            self.errors.append(err)

    def join(self, tick: Any) -> list[dict[str, Any]]:
        while any(t.is_alive() for t in self.threads) and not self.errors:
            tick()
            for thread in self.threads:
                thread.join(timeout=0.5 / self.n)
        if self.errors:
            raise self.errors[0]
        return self.results


def _cpu_pool(base: WorkerConfig, n: int) -> _ThreadLoops:
    """``n`` CPU loops beside ``tracker work --cuda``'s GPU workers. Made before the cluster
    starts: the GPU workers are spawned with their own torch thread count, and these loops
    then split the cores among themselves (unless the user set TRACKER_TORCH_THREADS)."""
    threads = None if "TRACKER_TORCH_THREADS" in os.environ else max(1, (os.cpu_count() or 1) // n)
    return _ThreadLoops(dataclasses.replace(base, gpu=False, cpu_only=True), n, threads)


def _dashboard_link(client: Any) -> str | None:
    """The Dask dashboard's address, if the scheduler serves one."""
    try:
        return str(client.dashboard_link) if client.scheduler_info().get("services", {}).get(
            "dashboard") else None  # fmt: skip
    except Exception:  # no scheduler info: no address to show
        return None


class _Loops:
    """The worker loops of one `tracker work`: submitted, watched, restarted when they die.

    A loop whose Dask worker is killed is normally re-run by Dask on the restarted worker
    (one loop per worker, by resource). If Dask gives up on it (KilledWorker after repeated
    deaths) or cancels it, a new loop is submitted here; work never waits on a dead loop.
    """

    def __init__(self, client: Any, base: WorkerConfig, resource: str) -> None:
        self.client, self.base, self.resource = client, base, resource
        self.live: list[Any] = []
        self.restarts = 0

    def submit(self) -> Any:
        key = f"tracker-worker-loop-{uuid.uuid4().hex}"
        future = self.client.submit(
            run_worker,
            self.base,
            key=key,
            resources={self.resource: 1},
            pure=False,
            retries=0,
        )
        self.live.append(future)
        return future

    def supervise(self, futures: list[Any], tick: Any) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        pending = list(futures)
        no_workers_since: float | None = None
        while pending:
            tick()
            still = []
            for future in pending:
                if not future.done():
                    still.append(future)
                    continue
                if future.status == "finished":
                    results.append(future.result())
                    continue
                err = None if future.status == "cancelled" else future.exception()
                if err is not None and not _worker_died(err):
                    raise err  # a TrackerError's one line, or a bug's traceback
                log.warning("a worker loop died with its Dask worker (%s); starting another",
                            type(err).__name__ if err else "cancelled")  # fmt: skip
                self.restarts += 1
                still.append(self.submit())
            pending = still
            if pending:
                alive = bool(self.client.scheduler_info(n_workers=-1)["workers"])
                now = time.monotonic()
                no_workers_since = None if alive else (no_workers_since or now)
                if no_workers_since is not None and now - no_workers_since > NO_WORKERS_TIMEOUT:
                    raise ConfigError(
                        f"every Dask worker has been gone for {NO_WORKERS_TIMEOUT:.0f} s (killed "
                        "and not restarted): check memory and the workers' logs, then run "
                        "`tracker work` again; finished tasks are kept"
                    )
                time.sleep(0.5)
        return results


def _worker_died(err: BaseException) -> bool:
    """Whether a loop's error means its Dask worker died, rather than a bug or a bad input."""
    from distributed.scheduler import KilledWorker

    return isinstance(err, KilledWorker | OSError) or type(err).__name__ in {
        "CommClosedError", "FutureCancelledError", "CancelledError", "WorkerLost",
    }  # fmt: skip


def _gpu_pending(db: Database, study_ids: Sequence[int] | None) -> int:
    """Pending or waiting tasks that need a GPU (in the studies, when given)."""
    query = sa.select(sa.func.count()).where(Task.status.in_(["pending", "waiting"]),
                                             Task.needs_gpu)  # fmt: skip
    if study_ids is not None:
        query = query.where(Task.study_id.in_(list(study_ids)))
    with db.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _warn_gpu_tasks(db: Database, study_ids: Sequence[int] | None, stream: IO[str]) -> None:
    """Say so when pending work needs a GPU: these workers (no --cuda) leave it alone."""
    n = _gpu_pending(db, study_ids)
    if n:
        stream.write(
            f"note: {n} pending task(s) need a GPU and are left for GPU workers "
            "(`tracker work --cuda` on a machine with one)\n"
        )


def _note_mlflow_tasks(
    db: Database, kinds: Sequence[str], study: str | None, stream: IO[str]
) -> None:
    """Say so when tasks wait for a worker with MLflow (this machine has none)."""
    if not kinds:
        return
    query = sa.select(sa.func.count()).where(
        Task.kind.in_(list(kinds)), Task.status.in_(("waiting", "pending"))
    )
    if study is not None:
        query = query.where(Task.study_id.in_(sa.select(Study.id).where(Study.name == study)))
    with db.engine.connect() as conn:
        n = int(conn.execute(query).scalar() or 0)
    if n:
        stream.write(
            f"note: MLflow is not installed here: {n} task(s) that log to MLflow "
            f"({', '.join(kinds)}) are left for a worker that has it\n"
        )


def _warn_unknown_kinds(
    db: Database, known: Sequence[str], study_ids: Sequence[int] | None, stream: IO[str]
) -> None:
    query = sa.select(Task.kind, sa.func.count()).where(
        Task.status == "pending", Task.kind.not_in(list(known))
    )
    if study_ids is not None:
        query = query.where(Task.study_id.in_(list(study_ids)))
    with db.engine.connect() as conn:
        rows = conn.execute(query.group_by(Task.kind)).all()
    for kind, n in rows:
        stream.write(
            f"note: {n} pending task(s) of kind {kind!r} have no registered function here "
            "and are left for other workers (load their plugin with --plugin MODULE)\n"
        )


PLUGIN_TRIES = 3


def register_plugin(client: Any, plugin: Any, stream: IO[str], pause: float = 0.5) -> bool:
    """Register a worker plugin, asking again when a worker is lost during the broadcast.

    The scheduler keeps the plugin for every worker that joins later, but its broadcast to the
    current ones fails as a whole when one of them dies meanwhile (killed, or out of memory,
    while the cluster starts: "Stream is closed"); the nanny then starts a replacement. After
    ``PLUGIN_TRIES`` failed broadcasts the run goes on without it (the plugin only routes the
    workers' logs) and says so in one line. Returns whether every live worker has it.
    """
    for attempt in range(PLUGIN_TRIES):
        try:
            client.register_plugin(plugin)
            return True
        except OSError as err:  # distributed's CommClosedError is an OSError
            if attempt + 1 == PLUGIN_TRIES:
                stream.write(f"note: could not give every worker the plugin {plugin.name!r} "
                             f"({type(err).__name__}: {err}); continuing without it\n")  # fmt: skip
                return False
            time.sleep(pause)
    return False
