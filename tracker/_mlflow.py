"""MLflow bookkeeping for task kinds: one run per row, metrics logged in batches.

The client is used directly (no global ``mlflow.start_run`` state), so several tasks in one
worker process never share an active run. Runs live in an experiment named after the study.
``tracked_run`` is the one run life cycle: close a RUNNING run a killed attempt left behind,
start the run, and end it FINISHED, or FAILED with the reason when the body raises.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

# MLflow is imported where a run is logged, not when this module is: a worker that only
# computes surfaces (a GPU machine without MLflow installed, see benchmarks/gpu_wheels.sh)
# never loads it, and nor does a worker's start.
if TYPE_CHECKING:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

EXPERIMENT_PREFIX = "tracker/"
# Where runs go when a task context names no tracking URI (a plain process outside `work`).
DEFAULT_URI = "sqlite:///mlflow.db"
_MAX_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call


_CLIENTS: dict[str, MlflowClient] = {}
_CLIENTS_LOCK = threading.Lock()


def client_for(uri: str | None) -> MlflowClient:
    """A client whose tracking store exists, one per URI and process: a new client re-checks
    MLflow's schema (seconds on SQLite), which every task of a worker would pay again.
    ``None`` means DEFAULT_URI."""
    uri = uri or DEFAULT_URI
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(uri)
        if client is None:
            client = _CLIENTS[uri] = _new_client(uri)
        return client


def _new_client(uri: str) -> MlflowClient:
    """Create the client; a local SQLite store is created once, under a lock."""
    from mlflow.tracking import MlflowClient

    if not uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=uri)
    db_path = Path(uri.removeprefix("sqlite:///"))
    db_path.parent.mkdir(parents=True, exist_ok=True)
    # MLflow creates and migrates its tables on first use; two workers doing that at once
    # corrupt the migration. One at a time, on a lock file beside the database.
    with open(db_path.with_suffix(".init-lock"), "w") as lock, _quiet_schema_setup():
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not db_path.exists() or db_path.stat().st_size == 0:
                _copy_template(db_path)
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return client


def template_path() -> Path:
    """The prepared MLflow database this machine copies into each new home, one per MLflow
    version (its schema is that version's), in the prepared folder (tracker._config)."""
    import mlflow

    from tracker._config import prepared_folder

    return prepared_folder() / f"mlflow-{mlflow.__version__}.db"


def _copy_template(db_path: Path) -> None:
    """Give a new home MLflow's tables by copying the prepared database (milliseconds) instead
    of running MLflow's migrations there (seconds); the template is made on first need.

    Best effort: if the cache folder cannot be written, MLflow creates the tables itself.
    """
    from mlflow.tracking import MlflowClient

    template = template_path()
    try:
        if not template.exists():
            template.parent.mkdir(parents=True, exist_ok=True)
            tmp = template.with_name(f"{template.name}.{os.getpid()}.{threading.get_ident()}")
            tmp.unlink(missing_ok=True)
            MlflowClient(tracking_uri=f"sqlite:///{tmp}").search_experiments(max_results=1)
            os.replace(tmp, template)  # atomic: another process never copies a half-made one
        partial = db_path.with_name(db_path.name + ".copying")
        shutil.copyfile(template, partial)
        os.replace(partial, db_path)
    except OSError:
        return


@contextmanager
def _quiet_schema_setup() -> Iterator[None]:
    """No INFO lines or warnings on the user's terminal while MLflow sets up its tables."""
    loggers = [logging.getLogger(name) for name in ("mlflow.store.db.utils", "alembic")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # alembic's notes about MLflow's own schema
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def _artifact_location(uri: str) -> str | None:
    # Local SQLite tracking: keep artifacts beside the database instead of ./mlruns of
    # whatever folder the worker happens to run in.
    if uri.startswith("sqlite:///"):
        db_path = Path(uri.removeprefix("sqlite:///"))
        return (db_path.parent / "mlartifacts").absolute().as_uri()
    return None


def experiment_tags(study: str) -> dict[str, str]:
    """Tags of a study's experiment: MLflow 3's UI opens ``custom_model_development``
    experiments as model training (runs, metrics, charts) rather than as GenAI traces."""
    return {"mlflow.experimentKind": "custom_model_development", "tracker.study": study,
            "mlflow.note.content": f"tracker study {study!r}: one run per trained model, "
            "analysis runs nested or alongside; measures as `measure/...` metrics"}  # fmt: skip


def experiment_id(client: MlflowClient, study: str) -> str:
    from mlflow.exceptions import MlflowException

    name = EXPERIMENT_PREFIX + study
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(
            client.create_experiment(
                name, artifact_location=_artifact_location(client.tracking_uri),
                tags=experiment_tags(study),
            )
        )
    except MlflowException:
        # Another worker created it first.
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


class RunLogger:
    """Buffers metrics and sends them with one ``log_batch`` call every few seconds."""

    def __init__(self, client: MlflowClient, run_id: str, flush_seconds: float = 5.0) -> None:
        self.client, self.run_id, self.flush_seconds = client, run_id, flush_seconds
        self._pending: list[Metric] = []
        self._last = time.monotonic()

    def metrics(
        self, values: Mapping[str, float | None], step: int, time_ms: int | None = None
    ) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000) if time_ms is None else int(time_ms)
        for key, value in values.items():
            if value is None:
                continue
            self._pending.append(Metric(key, float(value), now, step))
        if time.monotonic() - self._last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        while self._pending:
            chunk, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            self.client.log_batch(self.run_id, metrics=chunk)
        self._last = time.monotonic()


def start_run(
    client: MlflowClient,
    study: str,
    run_name: str,
    params: Mapping[str, object],
    tags: Mapping[str, str],
    parent_run_id: str | None = None,
) -> str:
    """Create a run with its parameters and tags; return its id."""
    from mlflow.entities import Param

    all_tags = dict(tags)
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id(client, study), run_name=run_name, tags=all_tags)
    run_id = run.info.run_id
    flat = [Param(k, _param_text(v)) for k, v in sorted(params.items())]
    for i in range(0, len(flat), 90):
        client.log_batch(run_id, params=flat[i : i + 90])
    return run_id


def _param_text(value: object) -> str:
    """Strings as they are, everything else as JSON (a dict reads as JSON in the UI and parses
    back with json.loads, where a Python repr would not)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:6000]


def log_files(
    client: MlflowClient, run_id: str, paths: Iterable[str | os.PathLike[str]], artifact_path: str
) -> None:
    """Upload files as artifacts of a run, under ``artifact_path``."""
    for path in paths:
        client.log_artifact(run_id, os.fspath(path), artifact_path=artifact_path)


def mark_failed_if_running(client: MlflowClient, run_id: str | None, why: str) -> bool:
    """Close a run left RUNNING by a killed worker; True if it was."""
    from mlflow.entities import RunTag
    from mlflow.exceptions import MlflowException

    if not run_id:
        return False
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return False
    if run.info.status != "RUNNING":
        return False
    client.log_batch(run_id, tags=[RunTag("tracker.failure", why[:5000])])
    client.set_terminated(run_id, status="FAILED")
    return True


def finish(client: MlflowClient, run_id: str, status: str = "FINISHED") -> None:
    client.set_terminated(run_id, status=status)


def tag(client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> None:
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


class TrackedRun(NamedTuple):
    """A started run: its client, id and metric buffer; or, for a run logged by the side
    process (``prestart``), no client and that process."""

    client: MlflowClient | None
    run_id: str
    logger: RunLogger | SideLogger
    side: SideProcess | None = None


# --- the side process (tracker._mlflow_side) ------------------------------------------------


class SideProcess:
    """The parent's end of a ``tracker._mlflow_side`` process logging one run to ``uri``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        # Closed in close(): it outlives this call, so no `with`.
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tracker._mlflow_side", uri], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._stderr, text=True,
        )  # fmt: skip

    def send(self, op: str, **fields: object) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise RuntimeError(f"MLflow's logging process stopped{self._why()}") from None

    def call(self, op: str, **fields: object) -> Any:
        """Send a request and wait for its reply; MLflow's error is raised here."""
        self.send(op, **fields)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"MLflow's logging process stopped{self._why()}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"MLflow logging failed: {reply['error']}")
        return reply["ok"]

    def _why(self) -> str:
        self.proc.poll()
        lines = self._tail().splitlines()
        return f" ({lines[-1].strip()})" if lines else f" (exit {self.proc.returncode})"

    def _tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-4000:]

    def close(self, *, wait: bool = True) -> None:
        """End the process: let it finish (``wait``) or stop it (an unused one)."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        if not wait:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        text = self._tail().strip()
        if text:  # MLflow's warnings: the log, not the terminal
            logging.getLogger(__name__).info("MLflow logging process: %s", text)
        self._stderr.close()


class SideLogger:
    """``RunLogger``'s interface for a run logged by the side process (which buffers)."""

    def __init__(self, side: SideProcess) -> None:
        self.side = side

    def metrics(self, values: Mapping[str, float | None], step: int) -> None:
        kept = {k: float(v) for k, v in values.items() if v is not None}
        self.side.send("metrics", values=kept, step=step, time_ms=int(time.time() * 1000))

    def flush(self) -> None:  # the side process flushes at the end of the run
        return None


_PRESTARTED: dict[str, SideProcess] = {}


def prestart(uri: str | None) -> None:
    """Start a side process that imports MLflow and opens the store at ``uri`` now, on
    another core, for the next ``tracked_run(..., use_prestarted=True)`` in this process (one
    foreground training). Best effort: without it the run is logged in-process."""
    uri = uri or DEFAULT_URI
    if uri in _PRESTARTED or uri in _CLIENTS:
        return
    try:
        _PRESTARTED[uri] = SideProcess(uri)
    except OSError:
        return


def discard_prestarted() -> None:
    """Stop side processes no run used (the training was already done, or failed first)."""
    while _PRESTARTED:
        _, side = _PRESTARTED.popitem()
        side.close(wait=False)


atexit.register(discard_prestarted)


@contextmanager
def tracked_run(
    uri: str | None,
    *,
    study: str,
    name: str,
    params: Mapping[str, object],
    tags: Mapping[str, str],
    parent_run_id: str | None = None,
    previous_run_id: str | None = None,
    interrupted: str = "an earlier attempt was interrupted",
    flush_seconds: float = 5.0,
    use_prestarted: bool = False,
) -> Iterator[TrackedRun]:
    """Run the body inside an MLflow run of the study's experiment.

    ``previous_run_id`` is the run an earlier attempt recorded: left RUNNING by a killed
    worker, it is closed FAILED with ``interrupted`` as the reason. The new run ends FINISHED
    (metrics flushed) when the body returns, FAILED with the error's text when it raises; the
    body's own error is the one that propagates. With ``use_prestarted`` a side process that
    ``prestart`` started for ``uri`` logs the run, if there is one.
    """
    side = _PRESTARTED.pop(uri or DEFAULT_URI, None) if use_prestarted else None
    if side is not None:
        with _side_run(side, study=study, name=name, params=params, tags=tags,
                       parent_run_id=parent_run_id, previous_run_id=previous_run_id,
                       interrupted=interrupted, flush_seconds=flush_seconds) as run:  # fmt: skip
            yield run
        return
    client = client_for(uri)
    mark_failed_if_running(client, previous_run_id, interrupted)
    run_id = start_run(client, study, name, params, tags, parent_run_id=parent_run_id)
    run = TrackedRun(client, run_id, RunLogger(client, run_id, flush_seconds))
    try:
        yield run
        run.logger.flush()
    except BaseException as err:
        try:
            run.logger.flush()
            tag(client, run_id, {"tracker.failure": f"{type(err).__name__}: {err}"[:5000]})
            finish(client, run_id, "FAILED")
        except Exception:  # the task's own error is the one to report
            pass
        raise
    finish(client, run_id, "FINISHED")


@contextmanager
def _side_run(
    side: SideProcess, *, study: str, name: str, params: Mapping[str, object],
    tags: Mapping[str, str], parent_run_id: str | None, previous_run_id: str | None,
    interrupted: str, flush_seconds: float,
) -> Iterator[TrackedRun]:
    """``tracked_run``'s life cycle, with the side process doing the logging."""
    try:
        run_id = side.call("start", study=study, name=name, params=dict(params), tags=dict(tags),
                           parent_run_id=parent_run_id, previous_run_id=previous_run_id,
                           interrupted=interrupted, flush_seconds=flush_seconds)  # fmt: skip
    except BaseException:
        side.close(wait=False)
        raise
    try:
        yield TrackedRun(None, str(run_id), SideLogger(side), side)
    except BaseException as err:
        try:
            side.call("end", status="FAILED", failure=f"{type(err).__name__}: {err}"[:5000])
        except Exception:  # the task's own error is the one to report
            pass
        finally:
            side.close()
        raise
    try:
        side.call("end", status="FINISHED")
    finally:
        side.close()
