"""A task kind that talks like the libraries do: MLflow INFO lines and a Python warning."""

from __future__ import annotations

import logging
import warnings

from tracker import task_kind
from tracker._context import TaskContext


@task_kind("test.chatty")
def chatty(ctx: TaskContext) -> None:
    logging.getLogger("mlflow.tracking").info("MLFLOW-CHATTER %s", ctx.id)
    warnings.warn(f"PHATE-CHATTER {ctx.id}: did not converge", RuntimeWarning, stacklevel=1)
