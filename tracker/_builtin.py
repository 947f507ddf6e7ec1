"""Built-in task kinds that need nothing but the tracker: deployment smoke tests."""

from __future__ import annotations

import time
from typing import Any

from tracker._context import TaskContext
from tracker._registry import task_kind


@task_kind("noop")
def noop(ctx: TaskContext) -> dict[str, Any] | None:
    """Do nothing, or sleep ``seconds``: checks that workers reach the database and store."""
    seconds = float(ctx.payload.get("seconds", 0.0))
    if seconds > 0:
        time.sleep(seconds)
    return None
