"""Warm the dashboard's imports while the first browser is still loading Streamlit's page.

`tracker dashboard` starts :func:`in_background` just before the Streamlit server. The thread
waits until the server accepts connections (so it does not slow the server's own start), then
imports what the pages import and draws one tiny figure of each kind: the first visitor's
page run finds pandas, SQLAlchemy, Plotly and matplotlib loaded instead of loading them
itself (measured: the first page run was 2-5 s of imports on 2 busy cores, the browser's own
boot of Streamlit's page ~1-2 s, and the two now overlap).

Nothing here touches the database or the store, and a failure only means a colder first page.
torch, Dask, MLflow and Zarr are not imported: the pages load them only when they need them
(Zarr for stored arrays, MLflow for training curves), so the method modules that read arrays
(tracker.surfaces.results, tracker.levelsets.results) are left to their pages too.
"""

from __future__ import annotations

import importlib
import logging
import socket
import threading
import time

log = logging.getLogger(__name__)

# What the Overview (the first page a visitor sees) needs first, then the other pages.
MODULES = (
    "pandas",
    "pyarrow",
    "sqlalchemy.orm",
    "dashboard.common",
    "tracker._status",
    "tracker._provenance",
    "plotly.graph_objects",
    "plotly.subplots",
    "dashboard.render",
    "dashboard.interactive",
    "tracker.meta.results",
    "tracker.morse.plots",
)
SERVER_WAIT_S = 60.0


def _listening(address: str, port: int) -> bool:
    host = "127.0.0.1" if address in ("", "0.0.0.0", "::") else address
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _first_figures() -> None:
    """Draw one tiny figure of each kind: their lazy set-up (matplotlib's fonts, Plotly's
    validators, Arrow's conversion of a frame) is paid here, not in a visitor's page run."""
    import numpy as np
    import pandas as pd
    import plotly.graph_objects as go
    import pyarrow as pa

    from dashboard import render

    z = np.arange(9.0).reshape(1, 3, 3)
    s = {"id": 0, "label": "warm-up", "xs": np.arange(3.0), "ys": np.arange(3.0), "loss": z}
    render.png(render.side_by_side([s], "loss", False, "heatmap"))
    go.Figure([go.Surface(z=z[0]), go.Heatmap(z=z[0]), go.Scatter(y=[0, 1])]).to_json()
    pa.Table.from_pandas(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))


def warm(address: str, port: int, modules: tuple[str, ...] = MODULES) -> None:
    """Once the server at ``address:port`` accepts connections, import ``modules`` and draw
    the first figures."""
    deadline = time.monotonic() + SERVER_WAIT_S
    while not _listening(address, port):
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)
    try:
        for name in modules:
            importlib.import_module(name)
        _first_figures()
    except Exception as err:  # a colder first page, nothing worse
        log.debug("dashboard warm-up stopped: %s", err)


def in_background(address: str, port: int) -> threading.Thread:
    """Run :func:`warm` in a daemon thread (it never holds the server up)."""
    thread = threading.Thread(target=warm, args=(address, port), name="dashboard-warm", daemon=True)
    thread.start()
    return thread
