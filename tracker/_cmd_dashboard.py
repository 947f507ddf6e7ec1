"""`tracker dashboard`: check the database, then serve the Streamlit app over it.

The check runs first, so an unreachable or out-of-date database is one line here, not an
error page in a browser. Streamlit then runs in this same process (`streamlit run` through its
own command line, with the resolved locations in the environment, where dashboard/data.py
reads them): the database modules the check loaded serve the pages too, and no second
interpreter starts. While the first browser loads Streamlit's page, dashboard/warm.py imports
what the pages need (the first page's wait was mostly imports).
"""

from __future__ import annotations

import argparse
import os
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
        # Streamlit runs a full gc.collect() after every script run by default: with pandas,
        # Plotly, matplotlib and SQLAlchemy loaded that held the GIL for 0.27-0.46 s after
        # each page (the server could not send the page meanwhile), most of what a page in a
        # new tab took beyond Streamlit's own floor. Python's generational GC still runs.
        "--runner.postScriptGC", "false",
        # No page uses "magic" (bare expressions written to the page), and Streamlit
        # recompiles the app and page with its AST rewrite (~50 ms each) for every new tab.
        "--runner.magicEnabled", "false",
    ]  # fmt: skip


def _local(address: str) -> str:
    return "127.0.0.1" if address in ("0.0.0.0", "::") else address


def _open_browser_when_up(url: str, timeout: float = 30.0) -> None:
    """Open ``url`` in the user's browser once Streamlit answers its health check."""
    import time
    import urllib.request
    import webbrowser

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1):
                webbrowser.open(url)
                return
        except OSError:
            time.sleep(0.3)


def _skip_component_scan() -> None:
    """Streamlit scans the metadata of every installed distribution for "v2" custom components
    when its server starts: 0.7-1.1 s for this environment's 188 distributions on 2 busy
    cores, before the server answers. The dashboard uses no custom component, so the scan is
    replaced by its empty answer (a Streamlit without that scanner is left as it is)."""
    try:
        from streamlit.components.v2 import manifest_scanner
    except ImportError:
        return
    if hasattr(manifest_scanner, "scan_component_manifests"):
        manifest_scanner.scan_component_manifests = lambda *_args, **_kwargs: []


def cmd_dashboard(args: argparse.Namespace) -> int:
    import threading

    from tracker._cli_output import dumps, wants_json
    from tracker._config import resolve
    from tracker._db import open_database
    from tracker._exceptions import ConfigError

    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535, got {args.port}")
    settings = resolve(db_url=args.db, store_url=args.store, home=args.home)
    db = open_database(settings.db_url)  # one line if unreachable or out of date
    db.dispose()
    os.environ.update(
        TRACKER_HOME=str(settings.home),
        TRACKER_DB_URL=settings.db_url,
        TRACKER_STORE=settings.store_url,
        MLFLOW_TRACKING_URI=settings.mlflow_uri,
        # Streamlit reads these too; the flags below win, these cover its sub-steps.
        STREAMLIT_BROWSER_GATHER_USAGE_STATS="false",
        STREAMLIT_SERVER_HEADLESS="true",
    )
    if args.mlflow_ui:
        os.environ["TRACKER_MLFLOW_UI"] = args.mlflow_ui
    url = f"http://{_local(args.address)}:{args.port}"
    if wants_json(args):  # a server has no end to report at: its address, now, for scripts
        print(dumps({"url": url, "address": args.address, "port": args.port}),
              file=sys.__stdout__, flush=True)  # fmt: skip
        args.json_printed = True
    else:
        print(f"dashboard on http://{args.address}:{args.port} (Ctrl-C stops it)", flush=True)
    from dashboard import warm

    warm.in_background(args.address, args.port)
    if not args.headless:
        threading.Thread(target=_open_browser_when_up, args=(url,), daemon=True).start()
    from streamlit.web import cli as streamlit_cli

    _skip_component_scan()
    # Streamlit stops on SIGINT/SIGTERM itself (`docker stop` included) and returns here.
    streamlit_cli.main(args=streamlit_argv(args)[3:], prog_name="streamlit", standalone_mode=False)
    return 0
