"""End to end: a small sweep with several direction seeds, `tracker work`, `tracker meta`, and
what MLflow holds afterwards (read back with the MLflow client)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import one_line_error, run_tracker, tracker_env

STUDY = """
study = "tiny"

[[model]]
name = "mlp-bs{batch_size}-lr{lr}"
architecture = "mlp"
arch = { widths = [8] }
dataset = "iris"
optimizer = "sgd"
lr = [0.05, 0.2]
batch_size = [16, 64]
epochs = 2
seed = 0

[[surface]]
x = "-1:1:5"
seeds = "0-1"
"""


def _ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def worked(tmp_path_factory):
    root = tmp_path_factory.mktemp("meta")
    env = tracker_env(root)
    (root / "study.toml").write_text(STUDY)
    _ok(run_tracker("enqueue", str(root / "study.toml"), env=env))
    _ok(run_tracker("work", "--no-progress", env=env, timeout=600))
    return root, env


def test_training_runs_carry_curves_config_json_and_tags(worked):
    from mlflow.tracking import MlflowClient

    root, _env = worked
    client = MlflowClient(tracking_uri=f"sqlite:///{root / '.tracker' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracker/tiny")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 4
    for run in runs:
        assert json.loads(run.data.params["arch_config"]) == {"activation": "relu", "widths": [8]}
        files = {f.path for f in client.list_artifacts(run.info.run_id, "training")}
        assert files == {"training/curves.png", "training/curves.pdf", "training/arch_config.json"}
        local = client.download_artifacts(run.info.run_id, "tracker/ids.json", str(root))
        ids = json.loads(Path(local).read_text())
        assert ids["tracker.model_id"] == run.data.tags["tracker.model_id"]
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert [m.step for m in history] == [0, 1, 2]


def test_meta_ranks_seed_averaged_measures_and_logs_them_on_each_run(worked):
    from mlflow.tracking import MlflowClient

    root, env = worked
    out = json.loads(_ok(run_tracker("meta", "--study", "tiny", "--json", "--draws", "50",
                                     env=env)))  # fmt: skip
    rise = [c for c in out["correlations"]
            if c["kind"] == "rise_r050" and c["target"] == "gap" and c["epoch"] == 2]  # fmt: skip
    assert len(rise) == 1 and rise[0]["n_models"] == 4 and rise[0]["mean_seeds"] == 2
    assert -1 <= rise[0]["tau"] <= 1 and set(rise[0]["psi_axes"]) == {"batch_size", "lr"}
    assert out["mlflow_runs"] == 4
    again = json.loads(_ok(run_tracker("meta", "--study", "tiny", "--json", "--draws", "50",
                                       "--no-mlflow", env=env)))  # fmt: skip
    assert again["correlations"] == out["correlations"]  # the bootstrap is seeded
    client = MlflowClient(tracking_uri=f"sqlite:///{root / '.tracker' / 'mlflow.db'}")
    for run in client.search_runs([client.get_experiment_by_name("tracker/tiny").experiment_id]):
        keys = set(run.data.metrics)
        definition = rise[0]["definition_id"]
        assert f"measure/rise_r050/def{definition}/epoch2" in keys
        assert f"measure/rise_r050/def{definition}/epoch2/se" in keys
        assert run.data.tags[f"tracker.measure_def.{definition}"] == rise[0]["definition"]
        assert {f.path for f in client.list_artifacts(run.info.run_id, "tracker")} >= {
            "tracker/ids.json", "tracker/measures.json"}
        plots = {f.path for f in client.list_artifacts(run.info.run_id, "surfaces")}
        measured = {f"surfaces/def{definition}-epoch2.png", f"surfaces/def{definition}-epoch2.pdf"}
        # Beside the measure's figure, each of the run's two seed surfaces logged its own curve.
        own = plots - measured
        assert measured <= plots and len(own) == 4
        assert all(p.startswith("surfaces/surface-") and p.endswith(("-1d.png", "-1d.pdf"))
                   for p in own)  # fmt: skip
    table = _ok(run_tracker("meta", "--study", "tiny", "--no-mlflow", "--draws", "50", env=env))
    assert "rise_r050" in table and "gap = train_acc - test_acc" in table


def test_bad_meta_input_is_one_line(worked):
    _root, env = worked
    one_line_error(run_tracker("meta", "--study", "nope", env=env), "no study 'nope'", code=2)
    one_line_error(run_tracker("meta", "--study", "tiny", "--draws", "0", env=env), "--draws",
                   code=2)  # fmt: skip


def test_surface_seeds_on_the_command_line(worked):
    _root, env = worked
    out = _ok(run_tracker("enqueue", "surface", "--model", "1", "--x", "-1:1:3", "--seeds", "5-7",
                          env=env))  # fmt: skip
    assert out.count("new, ") == 3
    one_line_error(run_tracker("enqueue", "surface", "--model", "1", "--x", "-1:1:3",
                               "--y", "-1:1:3", "--seeds", "0-2", env=env), "two apart", code=2)  # fmt: skip
    one_line_error(run_tracker("enqueue", "surface", "--model", "1", "--pca", "--x", "-1:1:3",
                               "--y", "-1:1:3", "--seeds", "0-2", env=env), "--seeds", code=2)  # fmt: skip
