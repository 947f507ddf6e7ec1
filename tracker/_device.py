"""Which device the tasks of this thread compute on.

A worker loop of the CPU pool beside `tracker work --cuda` runs in a process that can see
the GPUs (it is the command's own process), but it must leave them to the dask-cuda workers:
it computes on the CPU. The flag is per thread because each loop is one thread.
"""

from __future__ import annotations

import threading

_local = threading.local()


def set_cpu_only(flag: bool) -> None:
    """Make this thread's tasks compute on the CPU even where a GPU is visible."""
    _local.cpu_only = bool(flag)


def cpu_only() -> bool:
    return bool(getattr(_local, "cpu_only", False))
