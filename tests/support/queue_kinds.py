"""Task kinds used by the queue tests (a plugin: `tracker work --plugin queue_kinds`)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from tracker import task_kind
from tracker._context import TaskContext


def append_line(path: str, line: str) -> None:
    """Append one line atomically (O_APPEND), so concurrent writers never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@task_kind("test.append")
def append_id(ctx: TaskContext) -> dict[str, Any]:
    """Sleep a little (optional), then append this task's id to the log."""
    time.sleep(float(ctx.payload.get("seconds", 0.0)))
    append_line(ctx.payload["log"], str(ctx.id))
    return {"pid": os.getpid()}


@task_kind("test.hang_once")
def hang_once(ctx: TaskContext) -> dict[str, Any]:
    """On the first run: announce the pid and hang (the test kills us). Then finish."""
    if ctx.attempt == 1 and ctx.task.lease_losses == 0:
        append_line(ctx.payload["started"], f"{ctx.id} {os.getpid()}")
        time.sleep(3600)
    spec = ctx.write_array(f"test/{ctx.id}/result", np.arange(4.0) * ctx.id)
    append_line(ctx.payload["log"], str(ctx.id))
    return {"path": spec.path}


@task_kind("test.fail")
def always_fail(ctx: TaskContext) -> None:
    raise ValueError(f"task {ctx.id} is designed to fail")


@task_kind("test.array")
def write_array(ctx: TaskContext) -> dict[str, Any]:
    spec = ctx.write_array(f"test/{ctx.id}/values", np.full((3, 4), float(ctx.payload["value"])))
    return {"path": spec.path}


def read_log(path: str | Path) -> list[int]:
    p = Path(path)
    return [int(x) for x in p.read_text().split()] if p.exists() else []


@task_kind("test.noisy")
def noisy(ctx: TaskContext) -> None:
    """Write a lot to stderr, as progress bars and warnings do."""
    import sys

    sys.stderr.write("x" * int(ctx.payload.get("bytes", 100_000)) + "\n")
    sys.stderr.flush()
    append_line(ctx.payload["log"], str(ctx.id))


@task_kind("test.where")
def where_computed(ctx: TaskContext) -> dict[str, Any]:
    """Say which device a kind computing here would use (training.kinds.device())."""
    from tracker._device import cpu_only
    from tracker.training.kinds import device

    time.sleep(float(ctx.payload.get("seconds", 0.0)))
    return {"device": str(device()), "cpu_only": cpu_only()}
