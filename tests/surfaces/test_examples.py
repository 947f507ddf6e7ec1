"""The shipped study files and the demo behind the README's first command."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cli_support import run_tracker, tracker_env

from tracker import studyfile as _studyfile
from tracker.studyfile import demo_study
from tracker.training.rows import check_model

DEMO_STUDY = demo_study()
EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.toml"))


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"demo.toml", "seed001_minibatch_grids.toml", "seed004_vgg9_1d_2d.toml",
            "doodl3_figure3.toml"} <= names  # fmt: skip


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_study_files_are_valid(path: Path) -> None:
    study = _studyfile.load(path)
    assert (study.models and study.surfaces) or (study.ensembles and study.morse)
    for model in study.models:
        check_model(model)


def test_seed001_layout_is_pairs_by_epochs_with_minibatch_grids() -> None:
    study = _studyfile.load(
        EXAMPLES[[p.name for p in EXAMPLES].index("seed001_minibatch_grids.toml")]
    )
    assert len(study.surfaces) == 3 * 5  # 3 direction pairs x 5 checkpoints
    seeds = {(s.x_direction.seed, s.y_direction.seed) for s in study.surfaces}
    assert seeds == {(0, 1), (2, 3), (4, 5)}
    assert {s.evaluation.minibatches for s in study.surfaces} == {3}
    assert {s.evaluation.bn for s in study.surfaces} == {"train"}


def test_the_demo_file_is_the_demo() -> None:
    assert (EXAMPLES[0].parent / "demo.toml").read_text() == DEMO_STUDY


def test_tracker_demo_runs_the_small_study(tmp_path: Path) -> None:
    env = tracker_env(tmp_path)
    result = run_tracker("demo", "--no-progress", env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "mlp-bs16" in out and "mlp-bs512" in out and "rise@0.5 2D" in out
    assert "mlflow ui --backend-store-uri" in out
    plots = tmp_path / ".tracker" / "plots" / "demo"
    assert len(list(plots.glob("*.png"))) >= 5 and len(list(plots.glob("*.pdf"))) >= 5
    # Its worker loops run as threads of one process: every stored loss is a cross-entropy
    # (loops that shared an evaluator once stored negative ones).
    with sqlite3.connect(tmp_path / ".tracker" / "tracker.db") as conn:
        lows = [row[0] for row in conn.execute("SELECT min_loss FROM surfaces")]
    assert len(lows) == 5 and all(low > 0 for low in lows), lows
    # Running it again resumes: nothing new is queued and it still prints the table.
    again = run_tracker("demo", "--no-progress", env=env, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "mlp-bs512" in again.stdout
