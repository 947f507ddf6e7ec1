"""Running the `tracker` CLI as a real process from tests."""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

SUPPORT_DIR = Path(__file__).resolve().parent
REPO = SUPPORT_DIR.parent.parent
WARM = SUPPORT_DIR / "warm_tracker.py"


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
    *args: str, env: dict[str, str], timeout: float = 300, cold: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run `tracker ARGS` in a fresh process and capture its output.

    The process is forked from a warm server with the heavy libraries already imported
    (warm_tracker.py) unless ``cold`` is set, TRACKER_TEST_COLD=1, or ``env`` changes more
    than the tracker's own variables: then it is a new interpreter, `python -m tracker.cli`.
    """
    cwd = Path(env["TRACKER_HOME"]).parent if "TRACKER_HOME" in env else REPO
    server = None if cold else _warm_server(env)
    if server is None:
        command = [sys.executable, "-m", "tracker.cli", *args]
    else:  # a stdlib-only client: the warm child gets its stdin, stdout, stderr and exit code
        command = [sys.executable, "-I", "-S", str(WARM), "run", server.socket, *args]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


class _Server:
    """One warm server per test process, started on first use, stopped at exit."""

    def __init__(self) -> None:
        folder = tempfile.mkdtemp(prefix="tracker-warm-")
        self.socket = os.path.join(folder, "s")
        self.env = tracker_env(Path(folder))
        log = Path(folder) / "server.log"
        with log.open("w") as errors:
            self.proc = subprocess.Popen(
                [sys.executable, str(WARM), "serve", self.socket],
                env=self.env, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=errors, text=True, start_new_session=True,
            )  # fmt: skip
        atexit.register(self.stop)
        ready = self.proc.stdout.readline() if self.proc.stdout else ""
        if ready.strip() != "ready":
            self.stop()
            raise RuntimeError(f"the warm tracker server did not start: {log.read_text()[-2000:]}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()  # the server exits when its stdin closes
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_server: _Server | None = None
_server_failed = False
_server_lock = threading.Lock()


def _warm_safe(name: str) -> bool:
    from warm_tracker import WARM_SAFE_PREFIXES

    return name.startswith(WARM_SAFE_PREFIXES)


def _warm_server(env: dict[str, str]) -> _Server | None:
    """The running server, if ``env`` may use it (else None: run cold)."""
    global _server, _server_failed
    if os.environ.get("TRACKER_TEST_COLD") or env.get("TRACKER_TEST_COLD"):
        return None
    with _server_lock:
        if _server_failed:
            return None
        if _server is None or not _server.alive():
            try:
                _server = _Server()
            except (RuntimeError, OSError) as err:
                _server_failed = True
                sys.stderr.write(f"warm tracker server unavailable ({err}); running cold\n")
                return None
        server = _server
    ours = {k: v for k, v in env.items() if not _warm_safe(k)}
    base = {k: v for k, v in server.env.items() if not _warm_safe(k)}
    return server if ours == base else None


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
