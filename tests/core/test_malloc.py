"""The allocator of compute processes (tracker._malloc): freed tensor memory is reused instead
of faulted in again, the user's own settings win, and `tracker work` and `tracker train` set
it for the threads they compute on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracker import _malloc

REPO = Path(__file__).resolve().parents[2]
# Twelve 8 MiB arrays made and freed six times on a thread other than the main one, as a
# network's activations are at each step; the page faults after the first round.
PROBE = """
import json, resource, sys, threading
import numpy as np
from tracker._malloc import tune_this_process
tuned = tune_this_process(1) if sys.argv[1] == "tune" else None
out = {}
def work():
    for r in range(6):
        if r == 1:
            out["before"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        arrays = [np.ones(2 << 20, dtype=np.float32) for _ in range(12)]
        del arrays
    out["after"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t = threading.Thread(target=work)
t.start()
t.join()
print(json.dumps({"tuned": tuned, "faults": out["after"] - out["before"]}))
"""
glibc = pytest.mark.skipif(not _malloc.on_glibc(), reason="the allocator settings are glibc's")


def _probe(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    clean.pop("GLIBC_TUNABLES", None)
    proc = subprocess.run([sys.executable, "-c", PROBE, mode], env={**clean, **env}, cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@glibc
def test_freed_tensor_memory_is_reused_instead_of_faulted_in_again() -> None:
    plain = _probe("plain")
    tuned = _probe("tune")
    assert plain["faults"] > 1000  # glibc's defaults: each round maps its pages afresh
    assert tuned["faults"] < 100
    assert tuned["tuned"] == {"MALLOC_TRIM_THRESHOLD_": _malloc.TRIM_THRESHOLD,
                              "MALLOC_MMAP_THRESHOLD_": _malloc.MMAP_THRESHOLD,
                              "MALLOC_ARENA_MAX": 1}  # fmt: skip
    # Dask's nanny gives its workers MALLOC_TRIM_THRESHOLD_=65536 (mmap for every tensor over
    # 128 KiB); the environment worker_environment sets wins over it.
    assert _probe("plain", MALLOC_TRIM_THRESHOLD_="65536")["faults"] > 1000
    env = {"MALLOC_TRIM_THRESHOLD_": str(_malloc.TRIM_THRESHOLD),
           "MALLOC_MMAP_THRESHOLD_": str(_malloc.MMAP_THRESHOLD), "MALLOC_ARENA_MAX": "1"}  # fmt: skip
    assert _probe("plain", **env)["faults"] < 100


@glibc
def test_the_users_own_settings_win() -> None:
    mine = _probe("tune", MALLOC_TRIM_THRESHOLD_="300000000")
    assert mine["tuned"]["MALLOC_TRIM_THRESHOLD_"] == 300000000
    assert _probe("tune", GLIBC_TUNABLES="glibc.malloc.arena_max=2")["tuned"] == {}


def test_worker_environment_keeps_values_already_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX",
                "GLIBC_TUNABLES"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    _malloc.worker_environment()
    assert os.environ["MALLOC_MMAP_THRESHOLD_"] == "1048576"
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == str(_malloc.TRIM_THRESHOLD)
    assert os.environ["MALLOC_ARENA_MAX"] == "1"


def test_tracker_work_sets_it_for_its_loops_and_the_api_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tracker._work as work_mod
    from tracker.cli import main

    calls: list[int] = []
    monkeypatch.setattr(work_mod, "tune_this_process", calls.append)
    home = ["--home", str(tmp_path / ".tracker")]
    for key in ("TRACKER_DB_URL", "TRACKER_STORE"):
        monkeypatch.delenv(key, raising=False)
    assert main([*home, "enqueue", "noop", "--count", "2"]) == 0
    assert main([*home, "work", "--no-progress"]) == 0
    assert calls == [os.cpu_count() or 1]  # one loop per core: several arenas kept if > 1
    import tracker

    t = tracker.connect(home=tmp_path / ".tracker")
    assert main([*home, "enqueue", "noop", "--count", "1", "--study", "api"]) == 0
    assert t.work(workers=None).done == 1
    assert calls == [os.cpu_count() or 1]
    capsys.readouterr()
