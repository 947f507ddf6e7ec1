"""Command-line parser of `tracker dashboard`. No torch or streamlit import at module top."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(
    *, sub: Any, enqueue: Any, plot: Any, export: Any, common: argparse.ArgumentParser
) -> None:
    """Add `tracker dashboard` to the `tracker` parser."""
    from tracker._cliutil import lazy_command

    p = sub.add_parser(
        "dashboard",
        parents=[common],
        help="a read-only Streamlit dashboard over the database, store and MLflow",
    )
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    p.add_argument(
        "--address",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 serves other machines)",
    )
    p.add_argument(
        "--headless",
        action="store_true",
        help="do not open a browser window (servers, CI); the server never prompts either way",
    )
    p.add_argument(
        "--mlflow-ui",
        metavar="URL",
        help="MLflow UI address for run links (default: MLFLOW_TRACKING_URI if it is http, "
        "else http://127.0.0.1:5000)",
    )
    p.set_defaults(func=lazy_command("tracker._cmd_dashboard", "cmd_dashboard"))
