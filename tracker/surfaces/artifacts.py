"""The task kind ``surface.artifacts``: a finished surface's figures on its model's MLflow run.

Enqueued with every surface, waiting on its ``surface.complete``: when the last tile is in and
the surface is summarised, this task draws the surface as `tracker plot surface` does (a line
for 1D, contours for 2D; PNG and PDF) and logs the files under ``surfaces/`` on the model's
training run (a retrained network's surface: on the retrain's run), with a
``tracker.surface.<id>`` tag naming the figure.

Why a task of its own rather than logging where the surface completes: tiles and the
completing task run on GPU workers too, and a GPU box has no MLflow (benchmarks/gpu_wheels.sh
leaves it out; tests/core/test_gpu_check.py holds the surface path to that). This kind is in
``MLFLOW_KINDS``: a worker without MLflow never claims it, one with MLflow (the CPU workers)
does. The body is idempotent: logging again replaces the same artifact paths. A model without
a run (imported from a file and never trained here) or whose run lives in another tracking
store gets nothing, and the task says why in its result.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from tracker._context import TaskContext
from tracker._exceptions import SpecError
from tracker._registry import task_kind
from tracker._schema import Checkpoint, Model, Retrain, Surface

ARTIFACT_FOLDER = "surfaces"


@task_kind("surface.artifacts")
def surface_artifacts(ctx: TaskContext) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException

    from tracker._mlflow import client_for, log_files, tag
    from tracker.surfaces.cli import plot_surface_files
    from tracker.surfaces.results import load_surface

    surface_id = int(ctx.payload["surface_id"])
    with ctx.session() as session:
        surface = session.get(Surface, surface_id)
        if surface is None:  # a SpecError: the queue does not retry it
            raise SpecError(f"surface {surface_id} no longer exists")
        ckpt = session.get(Checkpoint, surface.checkpoint_id) if surface.checkpoint_id else None
        model = session.get(Model, ckpt.model_id) if ckpt is not None else None
        run_id = model.mlflow_run_id if model is not None else None
        owner = "the model"
        if surface.retrain_id is not None:  # a retrained network's surface: the retrain's run
            retrain = session.get(Retrain, surface.retrain_id)
            run_id, owner = (retrain.mlflow_run_id if retrain else None), "the retrain"
        if run_id is None:
            return {"surface_id": surface_id, "logged": [], "skipped": f"{owner} has no MLflow run"}
        client = client_for(ctx.mlflow_uri)
        try:
            client.get_run(run_id)
        except MlflowException:
            return {"surface_id": surface_id, "logged": [],
                    "skipped": f"run {run_id} is not in this tracking store"}  # fmt: skip
        data = load_surface(session, ctx.store, surface_id)
        with tempfile.TemporaryDirectory() as tmp:
            paths = plot_surface_files(data, Path(tmp), ["contour"])  # 1D: the curve
            ctx.check_lease()
            log_files(client, run_id, paths, ARTIFACT_FOLDER)
            names = sorted(p.name for p in paths)
    tag(client, run_id, {f"tracker.surface.{surface_id}": data.label[:5000]})
    return {"surface_id": surface_id, "run_id": run_id,
            "logged": [f"{ARTIFACT_FOLDER}/{n}" for n in names]}  # fmt: skip
