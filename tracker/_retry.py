"""Riding out brief database outages: which errors are transient, and retrying through them.

A PostgreSQL restart, a dropped connection or a serialization failure should cost a worker a
few seconds, not its run. Such errors are retried with exponential backoff for a window
(``TRACKER_DB_RETRY_SECONDS``, default 120 s); after that the caller gets DatabaseUnreachable
with one line. Errors that are not transient (a constraint, a bug) are raised at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import exc as sa_exc

from tracker._config import env_seconds
from tracker._exceptions import DatabaseUnreachable

log = logging.getLogger("tracker.retry")

T = TypeVar("T")

DEFAULT_RETRY_SECONDS = 120.0
RETRY_ENV = "TRACKER_DB_RETRY_SECONDS"

# SQLSTATEs worth another try: connection exceptions (class 08), the server shutting down or
# starting (57P01-57P03), too many connections, serialization failures and deadlocks.
_TRANSIENT_STATES = {"57P01", "57P02", "57P03", "53300", "40001", "40P01"}
_TRANSIENT_TEXT = (
    "database is locked",
    "connection refused",
    "server closed the connection",
    "connection is closed",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "could not connect",
    "connection timeout",
    "consuming input failed",
    "ssl syscall",
)


def retry_window() -> float:
    """Seconds to keep retrying, from the environment (0 turns retrying off)."""
    return env_seconds(RETRY_ENV, DEFAULT_RETRY_SECONDS, zero_ok=True)


def is_transient(err: BaseException) -> bool:
    """Whether ``err`` is a database error that the same call may survive a moment later."""
    if isinstance(err, DatabaseUnreachable):
        return True
    if not isinstance(err, sa_exc.DBAPIError):
        return False
    if err.connection_invalidated:
        return True
    orig = err.orig
    state = getattr(orig, "sqlstate", None) or ""
    if state.startswith("08") or state in _TRANSIENT_STATES:
        return True
    if isinstance(err, sa_exc.OperationalError | sa_exc.InterfaceError):
        text = str(orig).lower()
        return any(marker in text for marker in _TRANSIENT_TEXT)
    return False


def retrying(fn: Callable[[], T], *, what: str, window: float | None = None) -> T:
    """``fn()``, retried through transient database errors for ``window`` seconds."""
    limit = retry_window() if window is None else window
    deadline = time.monotonic() + limit
    pause = 0.1
    while True:
        try:
            return fn()
        except Exception as err:
            if not is_transient(err):
                raise
            left = deadline - time.monotonic()
            first = (str(getattr(err, "orig", None) or err).strip().splitlines() or [""])[0]
            if left <= 0:
                raise DatabaseUnreachable(
                    f"the database did not answer {what} for {limit:.0f} s ({first}): check "
                    f"that it is up, then run the command again (${RETRY_ENV} sets the wait)"
                ) from None
            log.warning("database unavailable during %s (%s); retrying in %.1f s", what, first, pause)
            time.sleep(min(pause, left))
            pause = min(pause * 2, 5.0)
