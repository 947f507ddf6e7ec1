"""MLflow bookkeeping for task kinds: one run per row, metrics logged in batches.

The client is used directly (no global ``mlflow.start_run`` state), so several tasks in one
worker process never share an active run. Runs live in an experiment named after the study.
``tracked_run`` is the one run life cycle: close a RUNNING run a killed attempt left behind,
start the run, and end it FINISHED, or FAILED with the reason when the body raises.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

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

    def metrics(self, values: Mapping[str, float | None], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
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
    """A started run: its client, id and metric buffer."""

    client: MlflowClient
    run_id: str
    logger: RunLogger


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
) -> Iterator[TrackedRun]:
    """Run the body inside an MLflow run of the study's experiment.

    ``previous_run_id`` is the run an earlier attempt recorded: left RUNNING by a killed
    worker, it is closed FAILED with ``interrupted`` as the reason. The new run ends FINISHED
    (metrics flushed) when the body returns, FAILED with the error's text when it raises; the
    body's own error is the one that propagates.
    """
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
