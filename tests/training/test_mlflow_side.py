"""`tracker train` logs its MLflow run from a side process (tracker._mlflow_side): the run,
its metrics and files are what an in-process run gives, the command's own process never
imports MLflow, a failure still ends the run FAILED with the reason, and a side process that
dies makes the run's error one line naming it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import run_tracker, tracker_env
from mlflow.tracking import MlflowClient

from tracker._mlflow import SideProcess, discard_prestarted, prestart, tracked_run

TRAIN = ("train", "--arch", "mlp", "--widths", "8", "--dataset", "iris", "--epochs", "3",
         "--batch-size", "32", "--study", "side")  # fmt: skip


def _runs(db: Path) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("tracker/side")
    assert exp is not None
    return list(client.search_runs([exp.experiment_id]))


def test_tracker_train_logs_its_run_metrics_and_files_through_the_side_process(tmp_path: Path):
    env = tracker_env(tmp_path)
    r = run_tracker(*TRAIN, env=env)
    assert r.returncode == 0, r.stderr
    assert "INFO" not in r.stderr and "Traceback" not in r.stderr
    db = tmp_path / ".tracker" / "mlflow.db"
    (run,) = _runs(db)
    assert run.info.status == "FINISHED"
    assert run.info.run_id in r.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [0, 1, 2, 3]
    assert run.data.params["epochs"] == "3" and run.data.params["dataset"] == "iris"
    assert run.data.tags["tracker.study"] == "side"
    files = {a.path for a in client.list_artifacts(run.info.run_id, "training")}
    assert files == {"training/curves.png", "training/curves.pdf", "training/arch_config.json"}
    ids = client.download_artifacts(run.info.run_id, "tracker/ids.json", str(tmp_path))
    assert json.loads(Path(ids).read_text())["tracker.study"] == "side"
    # The final loss logged is the model row's.
    assert f"train loss {history[-1].value:.4f}" in r.stdout


SCRIPT = """
import sys
from tracker._mlflow import prestart, tracked_run
prestart(sys.argv[1])
with tracked_run(sys.argv[1], study="side", name="m", params={"a": 1, "b": [1, 2]},
                 tags={"t": "x"}, use_prestarted=True) as run:
    for step in range(3):
        run.logger.metrics({"loss": 1.0 / (step + 1), "none": None}, step=step)
print(run.run_id, "mlflow" in sys.modules, run.side is not None)
"""


def test_the_parent_process_never_imports_mlflow(tmp_path: Path):
    db = tmp_path / "mlflow.db"
    out = subprocess.run([sys.executable, "-c", SCRIPT, f"sqlite:///{db}"], capture_output=True,
                         text=True, timeout=120, check=True)  # fmt: skip
    run_id, imported, side = out.stdout.split()
    assert imported == "False" and side == "True"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"a": "1", "b": "[1, 2]"}
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [1.0, 0.5, 1 / 3]
    assert "none" not in run.data.metrics


def test_a_failing_body_ends_the_side_run_failed_with_its_reason(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    prestart(uri)
    ids: list[str] = []
    with pytest.raises(ValueError, match="diverged"), tracked_run(
        uri, study="side", name="m", params={}, tags={}, use_prestarted=True
    ) as run:
        ids.append(run.run_id)
        side = run.side
        assert side is not None
        run.logger.metrics({"loss": 2.0}, step=0)
        raise ValueError("the loss diverged")
    assert side.proc.returncode == 0  # it ended with the run, not left behind
    got = MlflowClient(tracking_uri=uri).get_run(ids[0])
    assert got.info.status == "FAILED"
    assert got.data.tags["tracker.failure"] == "ValueError: the loss diverged"
    assert got.data.metrics["loss"] == 2.0


def test_a_dead_side_process_is_one_line_naming_it(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    prestart(uri)
    with pytest.raises(RuntimeError, match="MLflow's logging process stopped") as err, \
            tracked_run(uri, study="side", name="m", params={}, tags={},
                        use_prestarted=True) as run:  # fmt: skip
        assert run.side is not None
        run.side.proc.kill()
        run.side.proc.wait()
        run.side.call("training_files", history=[], params={}, tags={}, name="m")
    assert "\n" not in str(err.value)


def test_an_unused_side_process_is_stopped(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    prestart(uri)
    from tracker import _mlflow

    side: SideProcess = _mlflow._PRESTARTED[uri]
    discard_prestarted()
    assert side.proc.poll() is not None and not _mlflow._PRESTARTED
    # Without a prestarted process the run is logged in-process, as before.
    with tracked_run(uri, study="side", name="m", params={}, tags={},
                     use_prestarted=True) as run:  # fmt: skip
        assert run.side is None and run.client is not None
