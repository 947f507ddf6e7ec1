"""The Dask worker plugin that routes each local worker's third-party logs to the file
``tracker._logs`` names. Apart from ``tracker._logs`` because importing distributed costs
~0.3 s, which `tracker work`'s loops in threads (no Dask) need not pay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from tracker._logs import route_to_file


class LogToFile(WorkerPlugin):
    """A Dask worker plugin: the same routing in each worker process."""

    name = "tracker-log-to-file"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)

    def setup(self, worker: Any) -> None:
        route_to_file(self.path)
