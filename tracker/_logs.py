"""Where other libraries' chatter goes during `tracker work`: a log file, not the terminal.

MLflow's INFO lines, Dask's notes (a port in use, a worker restarted), PHATE's and
scikit-learn's warnings are useful when something goes wrong and noise otherwise: they are
written to ``TRACKER_HOME/logs/work.log``, in this process and in each local Dask worker (a
worker plugin, tracker._logplugin, sets the same up there). The terminal keeps the progress
and the tracker's own messages. Workers joined to an external scheduler keep logging to their
stderr, which is what `docker logs` shows.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

# Loggers of the libraries whose messages go to the file only.
THIRD_PARTY = ("mlflow", "alembic", "distributed", "dask", "phate", "graphtools", "tasklogger",
               "py.warnings", "urllib3", "git")  # fmt: skip
FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"


def log_path(home: Path) -> Path:
    return home / "logs" / "work.log"


def route_to_file(path: str | Path) -> None:
    """Send the third-party loggers and Python warnings of this process to ``path``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    target = str(Path(path).absolute())
    if any(isinstance(h, logging.FileHandler) and h.baseFilename == target
           for name in THIRD_PARTY for h in logging.getLogger(name).handlers):  # fmt: skip
        return  # routed already (a plugin registered again after a lost worker)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(logging.INFO)
    logging.captureWarnings(True)
    # MLflow installs its own stderr handler on import unless told not to; workers inherit this.
    os.environ["MLFLOW_CONFIGURE_LOGGING"] = "false"
    for name in THIRD_PARTY:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if isinstance(old, logging.StreamHandler) and not isinstance(old, logging.FileHandler):
                logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = False
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
