"""Loss-landscape experiment tracker: SQL rows, Zarr arrays, a work queue for Dask workers.

The public names are loaded on first use, so `tracker --help` never pays for SQLAlchemy,
Zarr or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ArraySpec",
    "ArrayStore",
    "ClaimedTask",
    "ConfigError",
    "CorruptArray",
    "Database",
    "DatabaseUnreachable",
    "LeaseLost",
    "NoGPU",
    "NotFound",
    "QueryRejected",
    "Queue",
    "QueueError",
    "SchemaOutOfDate",
    "Settings",
    "SpecError",
    "StoreError",
    "TaskContext",
    "TrackerError",
    "UserCodeError",
    "WorkerConfig",
    "connect",
    "enqueue",
    "get_or_create_study",
    "open_database",
    "resolve_settings",
    "run_worker",
    "task_kind",
]

_WHERE = {
    "ArraySpec": "tracker._store",
    "ArrayStore": "tracker._store",
    "ClaimedTask": "tracker._queue",
    "Queue": "tracker._queue",
    "enqueue": "tracker._queue",
    "get_or_create_study": "tracker._queue",
    "Database": "tracker._db",
    "open_database": "tracker._db",
    "Settings": "tracker._config",
    "resolve_settings": ("tracker._config", "resolve"),
    "TaskContext": "tracker._context",
    "WorkerConfig": "tracker._worker",
    "run_worker": "tracker._worker",
    "task_kind": "tracker._registry",
    "connect": "tracker.client",
    **{
        name: "tracker._exceptions"
        for name in (
            "ConfigError", "CorruptArray", "DatabaseUnreachable", "LeaseLost", "NoGPU",
            "NotFound", "QueryRejected", "QueueError", "SchemaOutOfDate", "SpecError", "StoreError", "TrackerError",
            "UserCodeError",
        )
    },
}  # fmt: skip


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'tracker' has no attribute {name!r}")
    module, attr = where if isinstance(where, tuple) else (where, name)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
