"""Measures to MLflow: each model's training run gets its measures as metrics (so the MLflow UI
sorts runs by sharpness), the table as ``tracker/measures.json``, the seeds' surfaces of each
surface measure as ``surfaces/def<id>-epoch<epoch>.{png,pdf}`` (named by the rise_r050
definition), and tags that lead back to the tracker (the training run already carries
``tracker.model_id``; ``tracker.dashboard_url`` when ``TRACKER_DASHBOARD_URL`` is set).

Metric names: ``measure/<kind>/def<definition id>/epoch<epoch>`` (and ``.../se`` for the
standard error across seeds); the run's tags ``tracker.measure_def.<id>`` spell each
definition out. Logging again adds a newer value at step 0, which the UI shows.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._mlflow import client_for, log_files, tag
from tracker._schema import Measure, MeasureDefinition, Model
from tracker._store import ArrayStore
from tracker.meta.plots import plot_measure_surfaces
from tracker.meta.results import measure_rows


def metric_name(kind: str, definition_id: int, epoch: int) -> str:
    """An MLflow metric name for a measure (only the characters MLflow accepts)."""
    safe = re.sub(r"[^A-Za-z0-9_.\- /:]", "_", kind)
    return f"measure/{safe}/def{definition_id}/epoch{epoch}"


def publish_measures(session: Session, store: ArrayStore, uri: str | None, study_id: int) -> int:
    """Log every measure of the study on its model's run; return the runs updated."""
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    by_model: dict[int, list[dict[str, Any]]] = {}
    for row in measure_rows(session, study_id):
        by_model.setdefault(row["model_id"], []).append(row)
    client = client_for(uri)
    updated = 0
    for model_id, rows in by_model.items():
        model = session.get(Model, model_id)
        run_id = model.mlflow_run_id if model is not None else None
        if not run_id:
            continue
        try:
            client.get_run(run_id)
        except MlflowException:
            continue  # the run lives in another tracking store
        metrics, tags, now = [], {}, int(time.time() * 1000)
        for r in rows:
            name = metric_name(r["kind"], r["definition_id"], r["epoch"])
            tags[f"tracker.measure_def.{r['definition_id']}"] = str(r["definition"])[:5000]
            if r["value"] is not None:
                metrics.append(Metric(name, float(r["value"]), now, 0))
            if r["standard_error"] is not None:
                metrics.append(Metric(name + "/se", float(r["standard_error"]), now, 0))
        if url := os.environ.get("TRACKER_DASHBOARD_URL"):
            tags["tracker.dashboard_url"] = url
        for i in range(0, len(metrics), 900):
            client.log_batch(run_id, metrics=metrics[i : i + 900])
        tag(client, run_id, tags)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "measures.json"
            path.write_text(json.dumps(rows, indent=1, default=str))
            log_files(client, run_id, [path], "tracker")
            log_files(client, run_id, _surface_plots(session, store, model_id, Path(tmp)), "surfaces")
        updated += 1
    return updated


def _surface_plots(session: Session, store: ArrayStore, model_id: int, folder: Path) -> list[Path]:
    """One figure per surface measure definition and epoch of the model: its seeds' surfaces."""
    found = session.execute(
        sa.select(Measure.sources, Measure.epoch, MeasureDefinition.id, MeasureDefinition.key)
        .join(MeasureDefinition, MeasureDefinition.id == Measure.definition_id)
        .where(Measure.model_id == model_id, MeasureDefinition.family == "surface",
               MeasureDefinition.kind == "rise_r050")  # one figure per set of surfaces
    ).all()  # fmt: skip
    paths: list[Path] = []
    for sources, epoch, def_id, key in found:
        ids = [int(s.split(":")[1]) for s in sources if s.startswith("surface:")]
        title = f"model {model_id}, epoch {epoch}: {key.split(' ', 1)[1]}"
        paths += plot_measure_surfaces(session, store, ids, title, folder / f"def{def_id}-epoch{epoch}")
    return paths
