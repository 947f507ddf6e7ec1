"""`tracker dashboard`: check the database, then run the Streamlit app over it.

Streamlit runs in a child process (the venv's ``python -m streamlit``) with the resolved
locations in its environment; dashboard/data.py reads them there. The check runs first so
an unreachable or out-of-date database is one line here, not an error page in a browser.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path


def app_path() -> Path:
    import dashboard

    return Path(dashboard.__file__).resolve().parent / "app.py"


def streamlit_argv(args: argparse.Namespace) -> list[str]:
    """The `streamlit run` command line: local address, no usage statistics, no network."""
    return [
        sys.executable, "-m", "streamlit", "run", str(app_path()),
        "--server.address", args.address,
        "--server.port", str(args.port),
        # Always headless: otherwise Streamlit may stop at a first-run e-mail prompt.
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--browser.serverAddress", _local(args.address),
        "--server.fileWatcherType", "none",
        "--global.developmentMode", "false",
        "--client.toolbarMode", "minimal",
    ]  # fmt: skip


def _local(address: str) -> str:
    return "127.0.0.1" if address in ("0.0.0.0", "::") else address


def _open_browser_when_up(proc: subprocess.Popen[bytes], url: str, timeout: float = 30.0) -> None:
    """Open ``url`` in the user's browser once Streamlit answers its health check."""
    import time
    import urllib.request
    import webbrowser

    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1):
                webbrowser.open(url)
                return
        except OSError:
            time.sleep(0.3)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from tracker._config import resolve
    from tracker._db import open_database
    from tracker._exceptions import ConfigError

    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535, got {args.port}")
    settings = resolve(db_url=args.db, store_url=args.store, home=args.home)
    db = open_database(settings.db_url)  # one line if unreachable or out of date
    db.dispose()
    env = dict(os.environ)
    env.update(
        TRACKER_HOME=str(settings.home),
        TRACKER_DB_URL=settings.db_url,
        TRACKER_STORE=settings.store_url,
        MLFLOW_TRACKING_URI=settings.mlflow_uri,
        # Streamlit reads these too; the flags above win, these cover `streamlit` sub-steps.
        STREAMLIT_BROWSER_GATHER_USAGE_STATS="false",
        STREAMLIT_SERVER_HEADLESS="true",
    )
    if args.mlflow_ui:
        env["TRACKER_MLFLOW_UI"] = args.mlflow_ui
    print(f"dashboard on http://{args.address}:{args.port} (Ctrl-C stops it)", flush=True)
    proc = subprocess.Popen(streamlit_argv(args), env=env)
    if not args.headless:
        _open_browser_when_up(proc, f"http://{_local(args.address)}:{args.port}")
    # `docker stop` sends SIGTERM: pass it on so Streamlit exits with us.
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()
