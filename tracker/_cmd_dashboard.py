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
        "--server.headless", "true" if args.headless else "false",
        "--browser.gatherUsageStats", "false",
        "--browser.serverAddress", "localhost" if args.address == "127.0.0.1" else args.address,
        "--server.fileWatcherType", "none",
        "--global.developmentMode", "false",
        "--client.toolbarMode", "minimal",
    ]  # fmt: skip


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
        STREAMLIT_SERVER_HEADLESS="true" if args.headless else "false",
    )
    if args.mlflow_ui:
        env["TRACKER_MLFLOW_UI"] = args.mlflow_ui
    print(f"dashboard on http://{args.address}:{args.port} (Ctrl-C stops it)", flush=True)
    proc = subprocess.Popen(streamlit_argv(args), env=env)
    # `docker stop` sends SIGTERM: pass it on so Streamlit exits with us.
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()
