"""The level-set method (seed 002) through the queue, MLflow and `tracker plot levelset`: both
task kinds run through `tracker work`, the rows and arrays land, the figures are written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from cli_support import run_tracker, tracker_env

from compute import levelset as ls


def _json(value: object) -> object:
    """A JSON column read with raw SQL: text on SQLite, decoded on PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else value


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`tracker ARGV` in this process (its imports are paid once); exit code, stdout, stderr."""
    from tracker.cli import main

    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line_error(result: tuple[int, str, str], needle: str) -> None:
    code, _, err = result
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and needle in lines[0], err


def test_levelset_and_baseline_run_through_the_queue_and_plot(
    tmp_path: Path, db: object, db_url: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # `db`: the database is migrated already (a copy of the suite's template).
    env = tracker_env(tmp_path, db_url, str(tmp_path / "store.zarr"))
    for key in ("TRACKER_HOME", "TRACKER_DB_URL", "TRACKER_STORE"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = ("enqueue", "levelset", "--setup", "IRIS_FF", "--runs", "2",
            "--max-predictor-steps", "60", "--phase1-epochs", "3")  # fmt: skip
    assert "(2 new)" in _cli(capsys, *args)[1]
    assert "(0 new)" in _cli(capsys, *args)[1]
    assert _cli(capsys, "enqueue", "l2-baseline", "--setup", "IRIS_FF", "--lambdas", "0,1e-3",
                "--runs", "1", "--epochs", "3")[0] == 0  # fmt: skip
    _one_line_error(_cli(capsys, "enqueue", "levelset", "--setup", "IRIS"), "IRIS_FF")
    _one_line_error(_cli(capsys, "enqueue", "l2-baseline", "--setup", "IRIS_FF", "--lambdas",
                         "0,1e-3,x"), "'x' is not a number")  # fmt: skip
    # A real `tracker work` process; its worker loops in threads (a Dask worker process, a
    # fresh interpreter, would add ~5 CPU-s and check nothing more here).
    work = run_tracker("work", "--no-progress", env=env)
    assert work.returncode == 0, work.stderr

    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        tasks = conn.execute(sa.text("SELECT kind, status FROM tasks ORDER BY id")).all()
        runs = conn.execute(sa.text(
            "SELECT r.stop_reason, r.n_predictor_steps, r.final_weight_norm_sq, r.l0, "
            "r.final_train_loss, r.snapshot_steps, r.mlflow_run_id, a.path, a.shape "
            "FROM levelset_runs r JOIN arrays a ON a.id = r.trace_array_id ORDER BY r.run_index"
        )).all()  # fmt: skip
        l2 = conn.execute(sa.text(
            "SELECT l2_lambda, final_test_loss, final_penalty, mlflow_run_id FROM l2_baseline_runs"
        )).all()  # fmt: skip
    engine.dispose()
    # The two bad requests wrote nothing: 2 traversals + 2 baseline runs (and the measures
    # refresh a finished traversal asks for).
    assert sorted(t.kind for t in tasks if t.kind != "measures.refresh") == (
        ["levelset.l2"] * 2 + ["levelset.run"] * 2
    )
    assert {t.status for t in tasks} == {"done"}
    for r in runs:
        assert r.stop_reason == "step_cap" and r.n_predictor_steps == 60
        assert abs(r.final_train_loss - r.l0) <= 1e-5
        assert _json(r.shape) == [60, len(ls.TRACE_FIELDS)]
        assert _json(r.snapshot_steps) == [0, 50, 60]
    assert runs[0].l0 != runs[1].l0  # two seeds
    assert sorted(row.l2_lambda for row in l2) == [0.0, 1e-3]
    assert all(row.final_test_loss > 0 for row in l2)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / '.tracker' / 'mlflow.db'}")
    assert client.get_run(runs[0].mlflow_run_id).info.status == "FINISHED"
    logged = client.get_metric_history(runs[0].mlflow_run_id, "angle_deg")
    assert sorted(m.step for m in logged) == [0, 10, 20, 30, 40, 50, 59]  # every 10th + last
    assert client.get_run(l2[0].mlflow_run_id).info.status == "FINISHED"
    # One name per summary metric: `final_*`, never `final_final_*` (issue 14, item 13).
    traversal = client.get_run(runs[0].mlflow_run_id).data.metrics
    baseline = client.get_run(l2[0].mlflow_run_id).data.metrics
    for metrics in (traversal, baseline):
        assert not [k for k in metrics if k.startswith("final_final_")], sorted(metrics)
    assert {"final_angle", "final_weight_norm_sq", "final_train_loss", "final_train_acc",
            "final_test_loss", "final_test_acc", "l0"} <= set(traversal), sorted(traversal)
    assert traversal["final_train_loss"] == pytest.approx(runs[0].final_train_loss)
    assert {"final_train_loss", "final_test_loss", "final_penalty"} <= set(baseline), sorted(
        baseline
    )

    out = tmp_path / "plots"
    code, printed, _ = _cli(capsys, "plot", "levelset", "--setup", "IRIS_FF", "--out", str(out))
    assert code == 0 and "levelset" in printed and "0.001" in printed
    for name in ("fig2.png", "fig2.pdf", "fig7.png", "fig7.pdf", "table1.csv"):
        assert (out / f"levelset-IRIS_FF-{name}").stat().st_size > 0
    with open(out / "levelset-IRIS_FF-table1.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [(r["method"], r["l2_lambda"], r["n_runs"]) for r in table] == [
        ("levelset", "", "2"), ("l2", "0.0", "1"), ("l2", "0.001", "1")]  # fmt: skip
