"""What a task body receives: its claimed task, the array store, its lease and database.

Kept apart from the worker loop so task kinds and the registry can name it without importing
the loop (which imports the registry).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from tracker._db import Database
from tracker._exceptions import ConfigError, LeaseLost
from tracker._queue import ClaimedTask
from tracker._store import ArraySpec, ArrayStore


@dataclass
class TaskContext:
    """What a task body sees: its payload, the array store, and its lease."""

    task: ClaimedTask
    store: ArrayStore
    lease_lost: threading.Event = field(default_factory=threading.Event)
    arrays: list[ArraySpec] = field(default_factory=list)
    db: Database | None = None
    mlflow_uri: str | None = None
    # Blocks of shared arrays this task wrote: (path, start, stop), recorded at completion.
    blocks: list[tuple[str, list[int], list[int]]] = field(default_factory=list)

    @property
    def id(self) -> int:
        return self.task.id

    @property
    def payload(self) -> dict[str, Any]:
        return self.task.payload

    @property
    def attempt(self) -> int:
        return self.task.attempt

    def check_lease(self) -> None:
        """Stop early (raise LeaseLost) if another worker has taken this task over."""
        if self.lease_lost.is_set():
            raise LeaseLost(f"task {self.task.id} lost its lease")

    def write_array(
        self, path: str, data: np.ndarray, chunks: tuple[int, ...] | None = None
    ) -> ArraySpec:
        """Write a whole array; its row is recorded when the task is marked done."""
        self.check_lease()
        spec = self.store.write(path, data, chunks)
        self.arrays.append(spec)
        return spec

    def write_block(self, path: str, selection: tuple[slice, ...], data: np.ndarray) -> None:
        """Write this task's block (whole chunks) of a shared array, and remember it as the
        task's, so `tracker requeue --broken` recomputes this task if those chunks break."""
        self.check_lease()
        self.store.write_block(path, selection, data)
        start = [int(s.start or 0) for s in selection]
        stop = [int(s.stop) if s.stop is not None else -1 for s in selection]
        self.blocks.append((path, start, stop))

    def record_array(self, spec: ArraySpec) -> None:
        """Record an array written block by block (``store.write_block``) as this task's."""
        self.arrays.append(spec)

    def session(self) -> Session:
        """A read session on the tracker database (rows the task body needs to look up)."""
        if self.db is None:
            raise ConfigError("this task context has no database: run the task through a worker")
        return Session(self.db.engine)
