"""Waking idle workers as soon as work appears, instead of on their next poll.

An idle worker used to sleep between claims with a back-off of up to half a second, so every
stage of a dependency chain (directions -> tiles -> completion) could wait that long for a
second worker to notice it. A waker ends the sleep early when the queue may have changed:

- SQLite: ``PRAGMA data_version`` on a connection of the waker's own changes whenever another
  connection commits to the file. Reading it costs microseconds and takes no lock. The waker
  checks it 5 ms after a claim found nothing, then ever less often while nothing changes, up
  to every 50 ms: an idle loop of `tracker work`'s threads woke its process every 5 ms for
  the whole of a long task in another loop, taking the GIL from it 200 times a second. Worker
  loops of the same process need no check: ``notify_workers`` also wakes them at once. A
  claim that finds nothing writes nothing and so does not wake the other idle workers (no
  wake-up storm).
- PostgreSQL: ``LISTEN`` on a channel that the queue ``NOTIFY``s (in the same transaction)
  when tasks become pending: enqueue, dependencies released, retries, requeues. The
  notification is delivered at commit, never for a rolled-back change.

The sleep still ends after ``timeout`` whatever happens: a missed wake-up (a connection
hiccup) costs at most one poll period, as before.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)

CHANNEL = "tracker_tasks"
SQLITE_CHECK_SECONDS = 0.005  # the first check after a claim that found nothing
SQLITE_MAX_CHECK_SECONDS = 0.05  # checks back off (x2 each) to this while nothing changes

# Worker loops in threads of this process: notify_workers bumps the count and wakes them.
_LOCAL = threading.Condition()
_local_changes = 0


def notify_workers(conn: sa.Connection) -> None:
    """Tell workers that tasks became pending: PostgreSQL listeners (delivered at commit) and
    the worker loops of this process (at once: on SQLite the waking claim waits for this
    transaction's write lock, so it sees the commit)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"NOTIFY {CHANNEL}")
    global _local_changes
    with _LOCAL:
        _local_changes += 1
        _LOCAL.notify_all()


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
        self.local = _local_changes
        self.check = SQLITE_CHECK_SECONDS

    def _read(self) -> int:
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            try:
                current = self._read()
            except sqlite3.Error:  # busy or checkpointing: fall back to sleeping this period
                current = self.version
            if current != self.version or _local_changes != self.local:
                self.version, self.local = current, _local_changes
                self.check = SQLITE_CHECK_SECONDS
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with _LOCAL:
                if _local_changes == self.local:
                    _LOCAL.wait(min(self.check, left))
            self.check = min(self.check * 2, SQLITE_MAX_CHECK_SECONDS)

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
