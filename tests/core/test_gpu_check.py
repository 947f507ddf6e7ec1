"""The prepared GPU check (issue 17): the wheel list of benchmarks/gpu_wheels.sh covers what the
surface path imports on a bare CUDA machine, and benchmarks/gpu_check.sh is well-formed.

CI has no GPU; this is how the check is kept runnable: the packages a `tracker work` process
and its Dask workers import while computing a surface are recorded (PYTHONPROFILEIMPORTTIME,
which child processes inherit) and each must be in the standard library, the project, the
device image or the wheel list.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

from cli_support import REPO, run_tracker, tracker_env

WHEELS_SCRIPT = REPO / "benchmarks" / "gpu_wheels.sh"
CHECK_SCRIPT = REPO / "benchmarks" / "gpu_check.sh"

# What the device image already holds (its package list, as read on 2026-11-17: the parts of
# it the tracker could import). Carried wheels would only duplicate these.
DEVICE_HAS = {
    "torch", "torchvision", "numpy", "scipy", "scikit-learn", "pandas", "pillow", "h5py",
    "matplotlib", "contourpy", "cycler", "fonttools", "kiwisolver", "pyparsing",
    "python-dateutil", "six", "packaging", "typing-extensions", "pyyaml", "cloudpickle",
    "toolz", "fsspec", "psutil", "msgpack", "sortedcontainers", "click", "jinja2",
    "markupsafe", "urllib3", "requests", "certifi", "idna", "charset-normalizer", "filelock",
    "networkx", "sympy", "mpmath", "triton", "numba", "llvmlite", "nvidia-ml-py", "rich",
    "pygments", "markdown-it-py", "mdurl", "pytest", "pluggy", "iniconfig", "pytest-xdist",
    "execnet", "pytest-timeout", "hypothesis", "attrs", "joblib", "threadpoolctl", "tqdm",
    "zipp", "setuptools", "protobuf", "pyarrow", "xarray", "tabulate", "cuda-bindings",
    "cuda-pathfinder", "cuda-core", "cupy-cuda13x", "fastrlock", "tzdata", "pytz", "wrapt", "tensorboard",
}  # fmt: skip
PROJECT = {"tracker", "compute", "benchmarks", "dashboard", "migrations", "cli_support",
           "queue_kinds", "tests", "conftest", "__main__", "__mp_main__"}  # fmt: skip


def _wheel_list() -> set[str]:
    text = WHEELS_SCRIPT.read_text()
    body = re.search(r"^WHEELS=\(\n(.*?)^\)", text, re.S | re.M)
    assert body, "gpu_wheels.sh must define WHEELS=( ... )"
    return {w.lower() for w in body.group(1).split()}


def _vendored(name: str) -> bool:
    """A distribution bundled inside another package (setuptools' ``_vendor``: backports,
    jaraco), which comes with that package rather than as a wheel of its own."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return "_vendor" in str(getattr(dist, "_path", ""))


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_wheel_list_covers_what_a_surface_worker_imports(tmp_path: Path) -> None:
    env = tracker_env(tmp_path)
    trained = run_tracker("train", "--arch", "mlp", "--dataset", "digits", "--epochs", "0",
                          "--name", "m", env=env)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    queued = run_tracker("enqueue", "surface", "--model", "m", "--x", "-1:1:4", "--y", "-1:1:3",
                         env=env)  # fmt: skip
    assert queued.returncode == 0, queued.stderr[-2000:]
    env["PYTHONPROFILEIMPORTTIME"] = "1"  # inherited by the Dask worker processes
    # A GPU box has no MLflow: hide it from the `work` process and its Dask workers (a
    # sitecustomize on their path, imported at every start, makes `import mlflow` fail).
    no_mlflow = tmp_path / "no-mlflow"
    no_mlflow.mkdir()
    (no_mlflow / "sitecustomize.py").write_text('import sys\nsys.modules["mlflow"] = None\n')
    env["PYTHONPATH"] = f"{no_mlflow}:{env['PYTHONPATH']}"
    worked = run_tracker("work", "--workers", "1", "--no-progress", env=env)
    assert worked.returncode == 0, worked.stderr[-3000:]
    # The surface's figures wait for a worker with MLflow (its follow-up task, not the tiles).
    assert "MLflow is not installed here: 1 task(s) that log to MLflow (surface.artifacts)" in worked.stderr
    imported = {m.split(".")[0] for m in re.findall(r"^import time:.*\|\s+([\w.]+)\s*$",
                                                    worked.stderr, re.M)}  # fmt: skip
    assert {"tracker", "torch", "zarr", "sqlalchemy", "distributed"} <= imported, imported

    owners = importlib.metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    needed: dict[str, str] = {}
    for module in sorted(imported - stdlib - PROJECT):
        for dist in owners.get(module, []):
            if not _vendored(dist):
                needed[_normal(dist)] = module
    wheels = {_normal(w) for w in _wheel_list()}
    device = {_normal(d) for d in DEVICE_HAS}
    missing = {d: m for d, m in needed.items() if d not in wheels | device}
    assert not missing, (
        f"the surface path imports {missing} (distribution: module), which neither the device "
        "image nor benchmarks/gpu_wheels.sh provides: add them to WHEELS, or import them lazily"
    )
    assert "mlflow" not in needed, "a surface worker must not need MLflow (the wheels leave it out)"


def test_the_wheel_list_names_installed_distributions_only() -> None:
    for name in _wheel_list():
        importlib.metadata.version(name)  # PackageNotFoundError names a stale entry


def test_the_gpu_check_script_is_valid_bash_and_runs_the_gpu_parts() -> None:
    for script in (WHEELS_SCRIPT, CHECK_SCRIPT):
        assert script.stat().st_mode & 0o111, f"{script.name} must be executable"
        syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert syntax.returncode == 0, syntax.stderr
    text = CHECK_SCRIPT.read_text()
    assert "-m gpu" in text and "--gpu-cases" in text and "--no-index" in text
    usage = subprocess.run(["bash", str(CHECK_SCRIPT)], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr.lower()
