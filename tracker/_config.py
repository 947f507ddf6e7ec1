"""Where the tracker keeps its state: database URL, array store, MLflow.

The embedded defaults keep everything under one folder, ``./.tracker`` unless
``TRACKER_HOME`` says otherwise. ``TRACKER_DB_URL``, ``TRACKER_STORE`` and
``MLFLOW_TRACKING_URI`` move each part elsewhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tracker._exceptions import ConfigError


@dataclass(frozen=True)
class Settings:
    """Resolved locations of the tracker's database, array store and MLflow."""

    home: Path
    db_url: str
    store_url: str
    mlflow_uri: str

    @property
    def is_embedded_db(self) -> bool:
        return self.db_url.startswith("sqlite")


def resolve(
    db_url: str | None = None,
    store_url: str | None = None,
    home: str | os.PathLike[str] | None = None,
) -> Settings:
    """Resolve settings: explicit arguments, then environment variables, then defaults."""
    home_path = Path(home or os.environ.get("TRACKER_HOME") or ".tracker").absolute()
    url = db_url or os.environ.get("TRACKER_DB_URL") or f"sqlite:///{home_path / 'tracker.db'}"
    store = store_url or os.environ.get("TRACKER_STORE") or str(home_path / "store.zarr")
    mlflow_uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home_path / 'mlflow.db'}"
    if not url.strip():
        raise ConfigError("the database URL is empty: set TRACKER_DB_URL or pass --db")
    return Settings(home=home_path, db_url=url, store_url=store, mlflow_uri=mlflow_uri)


def prepared_folder() -> Path:
    """Where this machine keeps the prepared databases that new homes copy (the tracker's
    schema, tracker._cliutil; MLflow's tables, tracker._mlflow): $TRACKER_MLFLOW_TEMPLATE_DIR,
    else the user's cache folder."""
    folder = os.environ.get("TRACKER_MLFLOW_TEMPLATE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tracker"
    )
    return Path(folder)


def env_seconds(name: str, default: float, *, zero_ok: bool) -> float:
    """A duration in seconds from the environment variable ``name`` (unset or blank: ``default``);
    anything else than a finite number >= 0 (> 0 unless ``zero_ok``) is one line naming it."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (0 <= value < float("inf")) or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise ConfigError(f"{name}={raw!r} is not a number of seconds {bound}: "
                          f"unset it or give e.g. {default:g}")  # fmt: skip
    return value
