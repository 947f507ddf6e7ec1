"""The deployment: docker-compose.yml as docker-compose renders it, the Dockerfile's inputs,
and the compose topology run without Docker (a Dask scheduler, two `tracker work` machines,
one PostgreSQL queue).
"""

from __future__ import annotations

import collections
import fnmatch
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from cli_support import REPO, run_tracker, tracker_env
from queue_kinds import read_log
from schema_support import migrated

COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
SCHEDULER = "tcp://scheduler:8786"
EXPECTED_SERVICES = {
    "postgres",
    "mlflow",
    "migrate",
    "scheduler",
    "gpu-worker",
    "cpu-worker",
    "dashboard",
    "reader",
    "worker-role",
}
# Services that run the `tracker` entrypoint (their command is tracker's argv).
TRACKER_SERVICES = {"migrate", "reader", "worker-role", "gpu-worker", "cpu-worker"}
# The services that connect as the database's owner (the workers have their own role).
OWNER_SERVICES = {"migrate", "reader", "worker-role"}
WORKERS = {"gpu-worker", "cpu-worker"}


# --- docker-compose config ----------------------------------------------------------------


def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        message = (
            "docker-compose is not on PATH: install the Debian package docker-compose "
            "(`./dev setup` does) to validate docker-compose.yml"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI must have docker-compose: {message}")
        pytest.skip(message)
    return exe


def _compose_env(compose_file: Path, **overrides: str) -> dict[str, str]:
    """The environment minus every variable the file interpolates, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    for name in set(re.findall(r"\$\{(\w+)", compose_file.read_text())):
        env.pop(name, None)
    env.update(overrides)
    return env


def _compose_config(compose_file: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_docker_compose(), "-f", str(compose_file), "config"],
        cwd=compose_file.parent,
        env=_compose_env(compose_file, **overrides),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _rendered(**overrides: str) -> dict[str, Any]:
    result = _compose_config(COMPOSE_FILE, **overrides)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict) and isinstance(config.get("services"), dict)
    return config


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml rendered by docker-compose with every setting at its default."""
    return _rendered()


def _argv(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    assert isinstance(command, list), f"command should be a list, got {command!r}"
    return [str(part) for part in command]


def _volumes(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source of each mount (the rendered short syntax SRC:DST[:MODE])."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, target = str(entry).split(":")[:2]
        mounts[target] = source
    return mounts


def _option(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def test_compose_file_defines_the_deployment(compose: dict[str, Any]) -> None:
    from tracker.cli import build_parser, cmd_db_upgrade, cmd_work

    services = compose["services"]
    assert set(services) >= EXPECTED_SERVICES, f"missing {EXPECTED_SERVICES - set(services)}"

    postgres = services["postgres"]
    assert postgres["image"] == "postgres:15"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert _volumes(postgres)["/var/lib/postgresql/data"] in compose["volumes"]

    # Every tracker command parses with tracker's own parser.
    parser = build_parser()
    project_image = services["migrate"]["image"]
    for name in TRACKER_SERVICES:
        service = services[name]
        assert service["image"] == project_image
        assert "entrypoint" not in service, f"{name} must run the image's tracker entrypoint"
        args = parser.parse_args(_argv(service))
        if name == "migrate":
            assert args.func is cmd_db_upgrade and args.revision == "head"
        elif name == "reader":
            assert args.func.__name__ == "cmd_db_create_reader"
        elif name == "worker-role":
            assert args.func.__name__ == "cmd_db_create_worker"
            assert args.role == "tracker_worker"
        else:
            assert args.func is cmd_work, name
            assert args.scheduler == SCHEDULER and args.forever, name
            assert args.cuda == name.startswith("gpu-worker"), name
            assert f"--scheduler {SCHEDULER}" in " ".join(_argv(service))
    gpu_workers = sorted(n for n in services if n.startswith("gpu-worker"))
    for name in gpu_workers:
        assert "--cuda --forever" in " ".join(_argv(services[name])), name
    assert parser.parse_args(_argv(services["cpu-worker"])).workers == 2

    # Every service on the project image shares the store volume; the tracker ones are
    # configured for PostgreSQL, the shared store and the MLflow server.
    for name, service in services.items():
        if service.get("image") != project_image:
            continue
        assert _volumes(service).get("/shared") == "shared", name
    assert "shared" in compose["volumes"]
    for name in TRACKER_SERVICES | {"scheduler"}:
        env = services[name]["environment"]
        user = "tracker:tracker" if name in OWNER_SERVICES | {"scheduler"} else "tracker_worker:worker"
        assert env["TRACKER_DB_URL"] == f"postgresql+psycopg://{user}@postgres:5432/tracker", name
        assert env["TRACKER_STORE"] == "/shared/store.zarr", name
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name

    # Start-up order: the schema first, then the workers.
    for name in ("migrate", "mlflow"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # The workers wait for their role, which waits for the schema; they never connect as the
    # owner, whose password the role's service holds.
    assert services["worker-role"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully")  # fmt: skip
    assert services["worker-role"]["environment"]["TRACKER_WORKER_PASSWORD"] == "worker"
    for name in WORKERS:
        deps = services[name]["depends_on"]
        assert deps["worker-role"]["condition"] == "service_completed_successfully", name
        assert deps["scheduler"]["condition"] == "service_started", name
    assert services["migrate"].get("restart", "no") == "no"

    scheduler = _argv(services["scheduler"])
    assert services["scheduler"]["entrypoint"] == ["dask"]
    assert scheduler[0] == "scheduler"
    assert _option(scheduler, "--port") == "8786"
    assert _option(scheduler, "--host") == "0.0.0.0"
    assert _option(scheduler, "--dashboard-address") == ":8787"


def test_one_gpu_service_reserves_the_hosts_gpus_behind_a_profile(
    compose: dict[str, Any],
) -> None:
    """One gpu-worker service takes every GPU (or GPU_COUNT of them) and starts one dask-cuda
    worker per GPU it sees; it is in the `gpu` profile, so a CPU-only host starts without it."""
    services = compose["services"]
    gpu_workers = sorted(n for n in services if "gpu" in n)
    assert gpu_workers == ["gpu-worker"]
    gpu = services["gpu-worker"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert device["count"] == "all" and "device_ids" not in device
    assert str(_rendered(GPU_COUNT="2")["services"]["gpu-worker"]["deploy"]["resources"][
        "reservations"]["devices"][0]["count"]) == "2"
    for name in set(services) - {"gpu-worker"}:
        assert "deploy" not in services[name], f"{name} should not reserve devices"
        assert "profiles" not in services[name], f"{name} should start on every host"


def test_mlflow_server_uses_its_own_database_and_answers_the_workers(
    compose: dict[str, Any],
) -> None:
    from mlflow.server.security_utils import is_allowed_host_header

    services = compose["services"]
    mlflow = services["mlflow"]
    assert mlflow["entrypoint"] == ["mlflow"]
    argv = _argv(mlflow)
    assert argv[0] == "server"
    assert _option(argv, "--host") == "0.0.0.0"
    assert _option(argv, "--port") == "5000"
    assert _option(argv, "--artifacts-destination").startswith("/shared/")
    backend = sa.engine.make_url(_option(argv, "--backend-store-uri"))
    assert backend.drivername == "postgresql+psycopg"
    assert (backend.host, backend.port) == ("postgres", 5432)

    # Same credentials as the server; a database the init script creates.
    pg_env = services["postgres"]["environment"]
    assert (backend.username, backend.password) == (
        pg_env["POSTGRES_USER"],
        pg_env["POSTGRES_PASSWORD"],
    )
    tracker_db = sa.engine.make_url(services["migrate"]["environment"]["TRACKER_DB_URL"])
    assert (tracker_db.username, tracker_db.password, tracker_db.database) == (
        pg_env["POSTGRES_USER"],
        pg_env["POSTGRES_PASSWORD"],
        pg_env["POSTGRES_DB"],
    )
    init_scripts = {
        target: Path(source)
        for target, source in _volumes(services["postgres"]).items()
        if target.startswith("/docker-entrypoint-initdb.d/")
    }
    assert init_scripts, "postgres needs an init script that creates the MLflow database"
    created = set()
    for script in init_scripts.values():
        assert script.is_file(), f"{script} is mounted into postgres but does not exist"
        created |= set(re.findall(r"(?i)create\s+database\s+\"?(\w+)", script.read_text()))
    assert backend.database in created
    assert backend.database != tracker_db.database

    # MLflow rejects Host headers it does not know (DNS-rebinding protection): the workers'
    # MLFLOW_TRACKING_URI host must be allowed, and so must the health check's.
    allowed = [h.strip() for h in mlflow["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")]
    assert is_allowed_host_header(allowed, "mlflow:5000")
    assert is_allowed_host_header(allowed, "127.0.0.1:5000")
    assert not is_allowed_host_header(allowed, "attacker.example:5000")
    assert "MLFLOW_TRACKING_URI" not in mlflow["environment"]
    assert "http://127.0.0.1:5000/health" in " ".join(mlflow["healthcheck"]["test"])


def test_dashboard_service_reads_the_same_database_and_store_read_only(
    compose: dict[str, Any],
) -> None:
    from tracker._cmd_dashboard import streamlit_argv
    from tracker.cli import build_parser

    services = compose["services"]
    dashboard = services["dashboard"]
    assert dashboard["image"] == services["migrate"]["image"]
    assert "entrypoint" not in dashboard, "the dashboard runs the image's tracker entrypoint"
    args = build_parser().parse_args(_argv(dashboard))
    assert args.func.__name__ == "run" and args.headless
    assert (args.address, args.port) == ("0.0.0.0", 8501)
    assert args.mlflow_ui == "http://localhost:5000"
    argv = streamlit_argv(args)
    assert _option(argv, "--browser.gatherUsageStats") == "false"
    assert _option(argv, "--server.headless") == "true"
    # Same PostgreSQL (as the read-only role the `reader` service makes), store and MLflow as
    # the workers; the store mounted read-only.
    for key in ("TRACKER_STORE", "MLFLOW_TRACKING_URI"):
        assert dashboard["environment"][key] == services["cpu-worker"]["environment"][key], key
    reader_url = sa.engine.make_url(dashboard["environment"]["TRACKER_DB_URL"])
    owner_url = sa.engine.make_url(services["migrate"]["environment"]["TRACKER_DB_URL"])
    assert reader_url.username == "tracker_reader" != owner_url.username
    assert (reader_url.host, reader_url.database) == (owner_url.host, owner_url.database)
    reader = services["reader"]
    reader_args = build_parser().parse_args(_argv(reader))
    assert reader_args.func.__name__ == "cmd_db_create_reader"
    assert reader_args.role == "tracker_reader"
    assert reader["environment"]["TRACKER_READER_PASSWORD"] == reader_url.password
    assert reader["environment"]["TRACKER_DB_URL"] == str(owner_url.render_as_string(False))
    assert reader["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    (store_mount,) = [v for v in dashboard["volumes"] if str(v).split(":")[1] == "/shared"]
    assert str(store_mount).split(":") == ["shared", "/shared", "ro"]
    published = [str(p) for p in dashboard["ports"]]
    assert any(p.startswith("127.0.0.1:8501:8501") for p in published), published
    deps = dashboard["depends_on"]
    assert deps["reader"]["condition"] == "service_completed_successfully"
    assert "/_stcore/health" in " ".join(dashboard["healthcheck"]["test"])


def test_compose_settings_come_from_the_environment() -> None:
    services = _rendered(POSTGRES_PASSWORD="s3cret", CPU_WORKERS="5", WORKER_PASSWORD="w0rk")[
        "services"]  # fmt: skip
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "s3cret"
    for name in TRACKER_SERVICES:
        url = sa.engine.make_url(services[name]["environment"]["TRACKER_DB_URL"])
        assert url.password == ("s3cret" if name in OWNER_SERVICES else "w0rk"), name
    assert services["worker-role"]["environment"]["TRACKER_WORKER_PASSWORD"] == "w0rk"
    mlflow_backend = _option(_argv(services["mlflow"]), "--backend-store-uri")
    assert sa.engine.make_url(mlflow_backend).password == "s3cret"
    assert _option(_argv(services["cpu-worker"]), "--workers") == "5"


def test_docker_compose_config_rejects_a_broken_file(tmp_path: Path) -> None:
    shutil.copytree(REPO / "deploy", tmp_path / "deploy")
    good = tmp_path / "docker-compose.yml"
    shutil.copy(COMPOSE_FILE, good)
    control = _compose_config(good)
    assert control.returncode == 0, control.stderr

    text = COMPOSE_FILE.read_text()
    anchor = "\n  scheduler:\n"
    assert anchor in text
    broken = tmp_path / "broken" / "docker-compose.yml"
    broken.parent.mkdir()
    shutil.copytree(REPO / "deploy", broken.parent / "deploy")
    broken.write_text(text.replace(anchor, anchor + "    gpu_count_typo: 2\n", 1))
    result = _compose_config(broken)
    assert result.returncode != 0
    assert "gpu_count_typo" in result.stderr


# --- the image ------------------------------------------------------------------------------


def _dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip().lstrip("/") for line in lines if line.strip() and line[0] != "#"]


def test_dockerfile_copies_every_package_and_ignores_local_state() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    dockerfile = DOCKERFILE.read_text()
    instructions = re.findall(r"(?m)^([A-Z]+)\s+(.*)$", dockerfile)
    assert instructions[0] == ("FROM", "python:3.11-slim")

    copied = set()
    for op, rest in instructions:
        if op == "COPY":
            *sources, _dest = rest.split()
            copied.update(s.rstrip("/") for s in sources if not s.startswith("--"))
    ignored = _dockerignore_patterns()
    for source in copied:
        assert (REPO / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        assert not any(fnmatch.fnmatch(source, p) for p in ignored), f"{source} is ignored"
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages <= copied, f"the image lacks {packages - copied}"
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= copied

    for state in (".venv", ".tracker", ".git", "**/__pycache__", "**/.pytest_cache"):
        assert state in ignored, f".dockerignore should exclude {state}"

    users = [rest for op, rest in instructions if op == "USER"]
    assert users and users[-1] not in {"root", "0"}, "the image must run as a non-root user"
    assert 'pip install ".[cuda]"' in dockerfile
    entrypoint = [rest for op, rest in instructions if op == "ENTRYPOINT"][-1]
    assert yaml.safe_load(entrypoint) == ["tracker"]
    assert "tracker" in pyproject["project"]["scripts"]


# --- the same topology without Docker -------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the Dask scheduler exited ({proc.returncode}):\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the Dask scheduler did not listen on {port} within {timeout} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End a process started with start_new_session=True and everything it started.

    The whole group: SIGTERM to `tracker work` alone leaves its Dask worker running.
    """
    for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # the group is gone
            break
        if wait is not None:
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            _group_gone(proc.pid, within=1.0)  # let the rest exit before the SIGKILL sweep
    proc.wait()


def _group_gone(pgid: int, within: float) -> None:
    """Return once no process is left in group ``pgid``, or after ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _running_worker_loops(
    address: str, expected: int, machines: list[subprocess.Popen[bytes]], logs: list[Path]
) -> set[str]:
    """Wait until ``expected`` Dask workers are each running a task (a tracker worker loop)."""
    from distributed import Client

    deadline = time.monotonic() + 120
    with Client(address, timeout="10s") as client:
        while True:
            busy = {worker for worker, keys in client.processing().items() if keys}
            if len(busy) >= expected:
                return busy
            for proc, log in zip(machines, logs, strict=True):
                if proc.poll() is not None:
                    pytest.fail(f"`tracker work` exited ({proc.returncode}):\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"only {len(busy)} of {expected} worker loops started in 120 s")
            time.sleep(0.2)


@pytest.mark.postgres
@pytest.mark.slow
def test_two_machines_share_one_scheduler_and_queue(tmp_path: Path, pg_url: str) -> None:
    """The compose topology without Docker: one scheduler, two `tracker work` processes
    (two machines) with one worker each, one PostgreSQL queue of 200 tasks."""
    from tracker._db import Database
    from tracker._queue import Queue, enqueue, get_or_create_study
    from tracker._schema import Task

    env = tracker_env(tmp_path, pg_url, str(tmp_path / "shared" / "store.zarr"))
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler_log = tmp_path / "scheduler.log"
    with scheduler_log.open("wb") as out:
        scheduler_argv = [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                          "--port", str(port), "--no-dashboard"]  # fmt: skip
        scheduler = subprocess.Popen(
            scheduler_argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
            start_new_session=True,
        )
    machines: list[subprocess.Popen[bytes]] = []
    db = None
    try:
        _wait_for_port(port, scheduler, scheduler_log, timeout=60)

        log = tmp_path / "append.log"
        db = Database(pg_url)
        migrated(db)  # set-up: a copy of the suite's migrated template
        with db.session() as session:
            # The 200 tasks wait for a gate task that this test holds, so neither machine
            # can drain the queue before the other has joined.
            gate_study = get_or_create_study(session, "deploy-gate")
            gate, _ = enqueue(session, gate_study, "test.append", {"log": str(tmp_path / "x")})
            study = get_or_create_study(session, "deploy-without-docker")
            # A short sleep per task keeps both machines busy until the queue is drained.
            payload = {"log": str(log), "seconds": 0.05}
            tasks = [
                enqueue(session, study, "test.append", payload, depends_on=[gate], key=i)
                for i in range(200)
            ]
            assert all(new for _, new in tasks)
            ids = sorted(task.id for task, _ in tasks)
        gate_queue = Queue(db, lease_seconds=600)
        held = gate_queue.claim("deploy-test", kinds=["test.append"])
        assert held is not None and held.id == gate.id

        command = [sys.executable, "-m", "tracker.cli", "work", "--scheduler", address,
                   "--workers", "1", "--plugin", "queue_kinds", "--no-progress"]  # fmt: skip
        outputs = [tmp_path / f"machine-{i}.log" for i in range(2)]
        for path in outputs:
            with path.open("wb") as out:
                machines.append(
                    subprocess.Popen(
                        command,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                        cwd=tmp_path,
                        start_new_session=True,
                    )
                )
        loops = _running_worker_loops(address, 2, machines, outputs)
        assert gate_queue.complete(held)

        deadline = time.monotonic() + 180
        for proc, path in zip(machines, outputs, strict=True):
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                pytest.fail(f"`tracker work` did not finish in 180 s:\n{path.read_text()}")
            assert proc.returncode == 0, path.read_text()

        counts = collections.Counter(read_log(log))
        assert sorted(counts) == ids
        assert set(counts.values()) == {1}, "a task ran more than once"

        with db.engine.connect() as conn:
            rows = conn.execute(
                sa.select(Task.status, Task.worker).where(Task.study_id == study.id)
            ).all()
        assert len(rows) == 200
        assert collections.Counter(status for status, _ in rows) == {"done": 200}
        # Each machine ran one worker; both of them ran tasks.
        workers = collections.Counter(worker for _, worker in rows)
        assert len(workers) >= 2, f"only one machine's worker ran tasks: {workers}"
        assert set(workers) == loops, (workers, loops)

        reported = [
            int(m.group(1))
            for path in outputs
            for m in re.finditer(r"^done (\d+), failed 0 ", path.read_text(), re.MULTILINE)
        ]
        assert len(reported) == 2 and sum(reported) == 200, [p.read_text() for p in outputs]
        assert all(n > 0 for n in reported), reported
    finally:
        for proc in machines:
            _stop(proc)
        _stop(scheduler)
        if db is not None:
            db.dispose()


def _start_scheduler(tmp_path: Path, env: dict[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
    port = _free_port()
    log = tmp_path / "scheduler.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
             "--port", str(port), "--no-dashboard"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True,
        )  # fmt: skip
    _wait_for_port(port, proc, log, timeout=60)
    return f"tcp://127.0.0.1:{port}", proc


@pytest.mark.slow
def test_joined_workers_survive_tasks_that_write_a_lot_to_stderr(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Regression: the workers' stderr went to a pipe nobody read, which blocked at 64 KiB."""
    from tracker._db import Database
    from tracker._queue import enqueue, get_or_create_study

    env = tracker_env(tmp_path, sqlite_url)
    address, scheduler = _start_scheduler(tmp_path, env)
    try:
        log = tmp_path / "noisy.log"
        db = Database(sqlite_url)
        migrated(db)  # set-up: a copy of the suite's migrated template
        with db.session() as session:
            st = get_or_create_study(session, "noisy")
            ids = [
                enqueue(session, st, "test.noisy", {"log": str(log), "i": i})[0].id
                for i in range(5)
            ]
        db.dispose()
        proc = run_tracker("work", "--scheduler", address, "--workers", "1", "--plugin",
                           "queue_kinds", "--no-progress", env=env, timeout=180)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert sorted(read_log(log)) == ids
        assert len(proc.stderr) > 5 * 100_000  # the tasks' output reached the caller
    finally:
        _stop(scheduler)


@pytest.mark.slow
def test_sigterm_stops_the_workers_that_tracker_work_started(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Regression: SIGTERM skipped the clean-up and left the Dask worker process running."""
    from distributed import Client

    env = tracker_env(tmp_path, sqlite_url)
    address, scheduler = _start_scheduler(tmp_path, env)
    out = tmp_path / "work.log"
    try:
        from tracker._db import Database

        db = Database(sqlite_url)
        migrated(db)  # set-up: a copy of the suite's migrated template
        db.dispose()
        with out.open("wb") as sink:
            work = subprocess.Popen(
                [sys.executable, "-m", "tracker.cli", "work", "--scheduler", address,
                 "--workers", "1", "--forever", "--no-progress"],
                stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                start_new_session=True,
            )  # fmt: skip
        with Client(address, timeout="10s") as client:
            deadline = time.monotonic() + 120
            while not any(keys for keys in client.processing().values()):
                assert work.poll() is None, out.read_text()
                assert time.monotonic() < deadline, "the worker loop never started"
                time.sleep(0.2)
            work.send_signal(signal.SIGTERM)  # to `tracker work` alone, as `kill PID` does
            assert work.wait(timeout=60) == 143
            deadline = time.monotonic() + 60
            while client.scheduler_info(n_workers=-1)["workers"]:
                assert time.monotonic() < deadline, "a Dask worker outlived `tracker work`"
                time.sleep(0.2)
    finally:
        _stop(work) if "work" in locals() else None
        _stop(scheduler)
