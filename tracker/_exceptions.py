"""Every error a tracker user can see.

    TrackerError                 base; the CLI prints its message on one line and exits non-zero
    ├── ConfigError              a malformed URL, option or environment variable
    ├── DatabaseUnreachable      the database server does not answer
    ├── SchemaOutOfDate          the database is not at the code's migration head
    ├── NotFound                 an unknown study, task or array id
    ├── SpecError                an invalid study spec or enqueue request
    │   └── UserCodeError        the user's code a spec names cannot be imported or misbehaves
    ├── StoreError               the array store cannot be opened or written
    │   └── CorruptArray         an array a row references is missing or unreadable
    ├── QueueError               a queue operation that the task's state forbids
    ├── LeaseLost                a task's lease was taken by another worker
    ├── QueryRejected            SQL typed into the dashboard that is not one read-only query
    └── NoGPU                    `--cuda` asked for on a machine without a usable GPU

Each message says what is wrong and how to fix it.
"""

from __future__ import annotations


class TrackerError(Exception):
    """Base class of the errors the tracker reports to users."""

    exit_code = 2


class ConfigError(TrackerError):
    """A setting (URL, option, environment variable) is malformed."""


class DatabaseUnreachable(TrackerError):
    """The configured database cannot be reached."""


class SchemaOutOfDate(TrackerError):
    """The database schema is not the one this code expects."""


class NotFound(TrackerError):
    """A study, task, array or other row named by the user does not exist."""


class SpecError(TrackerError):
    """A study spec or enqueue request is invalid."""


class UserCodeError(SpecError):
    """Code a spec names (``module:callable``, an entry point) cannot be imported or fails.

    A worker stores its message alone (one line naming the module and the fix), never a
    traceback: the fix is on the machine (install the code), not in the tracker.
    """


class StoreError(TrackerError):
    """The array store cannot be opened or written."""


class CorruptArray(StoreError):
    """An array referenced by a row is missing or cannot be read."""


class QueueError(TrackerError):
    """A queue operation that the task's current state does not allow."""


class LeaseLost(TrackerError):
    """The worker no longer holds the lease of the task it is running."""


class QueryRejected(TrackerError):
    """User-written SQL that the read-only SQL box refuses, or that the database rejected."""


class NoGPU(TrackerError):
    """CUDA workers were requested but no GPU (or no dask-cuda) is available."""
