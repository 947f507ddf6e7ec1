"""Waking idle workers as soon as work appears, instead of on their next poll.

An idle worker used to sleep between claims with a back-off of up to half a second, so every
stage of a dependency chain (directions -> tiles -> completion) could wait that long for a
second worker to notice it. A waker ends the sleep early when the queue may have changed:

- SQLite: ``PRAGMA data_version`` on a connection of the waker's own changes whenever another
  connection commits to the file. Reading it costs microseconds and takes no lock, so the
  waker checks it every few milliseconds. A claim that finds nothing writes nothing and so
  does not wake the other idle workers (no wake-up storm).
- PostgreSQL: ``LISTEN`` on a channel that the queue ``NOTIFY``s (in the same transaction)
  when tasks become pending: enqueue, dependencies released, retries, requeues. The
  notification is delivered at commit, never for a rolled-back change.

The sleep still ends after ``timeout`` whatever happens: a missed wake-up (a connection
hiccup) costs at most one poll period, as before.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)

CHANNEL = "tracker_tasks"
SQLITE_CHECK_SECONDS = 0.005


def notify_workers(conn: sa.Connection) -> None:
    """Tell listening workers that tasks became pending (PostgreSQL; delivered at commit)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"NOTIFY {CHANNEL}")


class Waker:
    """Sleeps until ``timeout`` passes (the fallback for any backend)."""

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True when woken by a change before that."""
        time.sleep(max(timeout, 0.0))
        return False

    def close(self) -> None:
        pass


class SqliteWaker(Waker):
    def __init__(self, path: str) -> None:
        # Read-only, autocommit: PRAGMA data_version needs no transaction and takes no lock.
        self.conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        self.version = self._read()

    def _read(self) -> int:
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                current = self._read()
            except sqlite3.Error:  # busy or checkpointing: fall back to sleeping this period
                current = self.version
            if current != self.version:
                self.version = current
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(SQLITE_CHECK_SECONDS, left))

    def close(self) -> None:
        self.conn.close()


class PostgresWaker(Waker):
    RECONNECT_SECONDS = 2.0

    def __init__(self, url: sa.URL) -> None:
        self.params = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.conn: Any = None
        self.next_connect = 0.0
        self._connect()
        if self.conn is None:
            raise ConnectionError("cannot LISTEN for new tasks")

    def _connect(self) -> None:
        import psycopg

        self.next_connect = time.monotonic() + self.RECONNECT_SECONDS
        try:
            self.conn = psycopg.connect(self.params, autocommit=True, connect_timeout=5)
            self.conn.execute(f"LISTEN {CHANNEL}")
        except Exception:  # the server is restarting: poll, and listen again later
            log.debug("cannot LISTEN", exc_info=True)
            self.conn = None

    def wait(self, timeout: float) -> bool:
        if self.conn is None and time.monotonic() >= self.next_connect:
            self._connect()
        if self.conn is None:
            time.sleep(max(timeout, 0.0))
            return False
        woken = False
        try:
            for _ in self.conn.notifies(timeout=max(timeout, 0.0), stop_after=1):
                woken = True
        except Exception:  # a dropped connection (a server restart): poll, reconnect later
            log.debug("LISTEN connection failed", exc_info=True)
            self.close()
            time.sleep(max(timeout, 0.0))
        return woken

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None


def open_waker(url: str) -> Waker:
    """The best waker for the database at ``url``; plain sleeping if it cannot be opened."""
    try:
        parsed = sa.engine.make_url(url)
        backend = parsed.get_backend_name()
        if backend == "sqlite" and parsed.database and parsed.database != ":memory:":
            return SqliteWaker(parsed.database)
        if backend == "postgresql":
            return PostgresWaker(parsed)
    except Exception:  # waking early is an optimisation: never stop a worker for it
        log.warning("cannot watch the queue for changes; polling instead", exc_info=True)
    return Waker()
