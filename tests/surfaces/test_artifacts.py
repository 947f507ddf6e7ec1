"""A finished surface logs its own figures on its model's MLflow run (issue 16): the follow-up
task ``surface.artifacts`` waits on the surface, and only a worker with MLflow claims it."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from cli_support import run_tracker, tracker_env

from tracker._config import resolve
from tracker._db import open_database
from tracker._schema import Model, Surface, Task


def _ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_the_models_run_gets_the_line_and_the_contour_after_tracker_work(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    env = tracker_env(tmp_path)
    _ok(run_tracker("enqueue", "model", "--arch", "mlp", "--widths", "8", "--dataset", "iris",
                    "--epochs", "1", "--name", "m", env=env))  # fmt: skip
    _ok(run_tracker("enqueue", "surface", "--model", "m", "--x", "-1:1:5", env=env))
    _ok(run_tracker("enqueue", "surface", "--model", "m", "--x", "-1:1:4", "--y", "-1:1:3",
                    env=env))  # fmt: skip
    # Worker loops in the `tracker work` process (no Dask cluster): the artifacts follow-up
    # is claimed the same way by any worker with MLflow.
    _ok(run_tracker("work", "--no-progress", env=env, timeout=600))

    settings = resolve(home=tmp_path / ".tracker")
    db = open_database(settings.db_url)
    with db.session() as s:
        run_id = s.scalar(sa.select(Model.mlflow_run_id))
        one_d, two_d = s.scalars(sa.select(Surface.id).order_by(Surface.id)).all()
        tasks = s.scalars(sa.select(Task).where(Task.kind == "surface.artifacts")).all()
        assert len(tasks) == 2 and all(t.status == "done" for t in tasks)
    db.dispose()
    client = MlflowClient(tracking_uri=settings.mlflow_uri)
    files = {f.path for f in client.list_artifacts(run_id, "surfaces")}
    assert files == {f"surfaces/surface-{one_d}-1d.png", f"surfaces/surface-{one_d}-1d.pdf",
                     f"surfaces/surface-{two_d}-contour.png",
                     f"surfaces/surface-{two_d}-contour.pdf"}  # fmt: skip
    png = Path(client.download_artifacts(run_id, f"surfaces/surface-{two_d}-contour.png",
                                         str(tmp_path)))  # fmt: skip
    pdf = Path(client.download_artifacts(run_id, f"surfaces/surface-{one_d}-1d.pdf", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    tags = client.get_run(run_id).data.tags
    assert tags[f"tracker.surface.{two_d}"].startswith(f"surface {two_d}: m, epoch 1")


def test_a_worker_without_mlflow_leaves_the_artifacts_to_one_that_has_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process: the surface is computed, its artifacts task stays pending, a worker with
    MLflow then logs them."""
    import tracker._registry as registry
    from tracker._migrate import upgrade
    from tracker._queue import get_or_create_study
    from tracker._worker import WorkerConfig, run_worker
    from tracker.surfaces.rows import SurfaceSpec, add_surface, parse_grid
    from tracker.training.rows import ModelSpec, add_model

    settings = resolve(home=tmp_path / ".tracker")
    settings.home.mkdir(parents=True)
    db = open_database(settings.db_url, check=False)
    upgrade(db)
    with db.session() as s:
        study = get_or_create_study(s, "default")
        model, _ = add_model(s, study, ModelSpec(architecture="mlp", dataset="iris", epochs=1,
                                                 arch_config={"widths": [4]}))  # fmt: skip
        add_surface(s, study, SurfaceSpec(model=model.id, x=parse_grid("-1:1:3")))
    config = WorkerConfig(db_url=settings.db_url, store_url=settings.store_url,
                          mlflow_uri=settings.mlflow_uri)  # fmt: skip
    monkeypatch.setattr(registry, "mlflow_installed", lambda: False)
    assert run_worker(config)["failed"] == 0

    def state() -> dict[str, str]:
        with db.session() as s:
            return dict(s.execute(sa.select(Task.kind, Task.status)).tuples().all())

    assert state()["surface.complete"] == "done" and state()["surface.artifacts"] == "pending"
    monkeypatch.undo()
    assert run_worker(config)["done"] == 1
    assert state()["surface.artifacts"] == "done"
    db.dispose()
