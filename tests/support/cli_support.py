"""Running the `tracker` CLI as a real process from tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SUPPORT_DIR = Path(__file__).resolve().parent
REPO = SUPPORT_DIR.parent.parent


def tracker_env(
    tmp_path: Path, db_url: str | None = None, store_url: str | None = None
) -> dict[str, str]:
    """Environment for running the CLI as a subprocess, with the test plugins importable."""
    env = dict(os.environ)
    env["TRACKER_HOME"] = str(tmp_path / ".tracker")
    env.pop("TRACKER_DEBUG", None)
    if db_url:
        env["TRACKER_DB_URL"] = db_url
    if store_url:
        env["TRACKER_STORE"] = store_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SUPPORT_DIR), env.get("PYTHONPATH")]))
    return env


def run_tracker(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `tracker ARGS` in a fresh process and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "tracker.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(env["TRACKER_HOME"]).parent if "TRACKER_HOME" in env else REPO,
    )


def one_line_error(
    proc: subprocess.CompletedProcess[str], *needles: str, code: int | None = None
) -> str:
    """Assert a command failed with exactly one line on stderr, no traceback, naming ``needles``
    (and with exit status ``code`` when given); return the line."""
    if code is None:
        assert proc.returncode != 0, proc.stdout + proc.stderr
    else:
        assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
