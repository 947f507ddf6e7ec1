"""Level-set endpoints and Morse-graph counts as measures (issue 16), on rows made through the
queue: a traversal from a model's checkpoint gives measures of that checkpoint; a Morse graph
over an ensemble of one hyperparameter setting's seeds gives its counts to every member model
at the final epoch; a paper setup's traversal and a DOODL3 ensemble (no ``models`` row, so no
generalisation target) give none."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from schema_support import migrated

from tracker._config import resolve
from tracker._db import open_database
from tracker._queue import get_or_create_study
from tracker._schema import (
    Checkpoint,
    Ensemble,
    EnsembleMember,
    LevelSetRun,
    Measure,
    MeasureDefinition,
    Model,
    MorseGraph,
    Task,
)
from tracker._store import ArrayStore
from tracker._worker import WorkerConfig, run_worker
from tracker.meta.results import meta_table

MODEL = ("--arch", "mlp", "--widths", "8", "--dataset", "iris", "--epochs", "3",
         "--checkpoints", "1", "--batch-size", "16")  # fmt: skip


class Home:
    def __init__(self, root: Path, db_url: str | None = None) -> None:
        self.settings = resolve(db_url=db_url, home=root / ".tracker")
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.db = open_database(self.settings.db_url, check=False)
        migrated(self.db)  # a copy of the suite's migrated template
        self.store = ArrayStore(self.settings.store_url)

    def cli(self, *argv: str) -> tuple[int, str, str]:
        """`tracker ARGV` in this process: exit code, stdout, stderr."""
        from tracker.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*argv, "--db", self.settings.db_url, "--store",
                         self.settings.store_url, "--home", str(self.settings.home)])  # fmt: skip
        return code, out.getvalue(), err.getvalue()

    def ok(self, *argv: str) -> str:
        code, out, err = self.cli(*argv)
        assert code == 0, err
        return out

    def drain(self) -> None:
        stats = run_worker(WorkerConfig(db_url=self.settings.db_url,
                                        store_url=self.settings.store_url,
                                        mlflow_uri=self.settings.mlflow_uri))  # fmt: skip
        assert stats["failed"] == 0, stats


def _study_id(session, name: str) -> int:
    return get_or_create_study(session, name).id


def _measures(session, family: str) -> list[tuple[Measure, MeasureDefinition]]:
    return [tuple(r) for r in session.execute(
        sa.select(Measure, MeasureDefinition)
        .join(MeasureDefinition, MeasureDefinition.id == Measure.definition_id)
        .where(MeasureDefinition.family == family).order_by(Measure.id)
    ).all()]  # fmt: skip


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Home:
    """Two learning rates x three seeds of a tiny Iris MLP; a traversal from every final
    checkpoint; one ensemble per setting with Morse graphs (setting lr=0.1 twice, GP seeds 0
    and 1); beside them a paper setup's traversal and a DOODL3 ensemble with its graph."""
    home = Home(tmp_path_factory.mktemp("meta-methods"))
    for seed in range(3):
        for lr in ("0.1", "0.05"):
            home.ok("enqueue", "model", *MODEL, "--lr", lr, "--train-seed", str(seed),
                    "--study", "sw")  # fmt: skip
    out = home.ok("enqueue", "levelset", "--model", "all", "--study", "sw",
                  "--max-predictor-steps", "15", "--train-subset", "60")  # fmt: skip
    assert "6 traversal(s) from model checkpoints (6 new)" in out
    out = home.ok("enqueue", "ensemble", "--from-models", "settings", "--study", "sw",
                  "--early-epoch", "1")  # fmt: skip
    assert "2 ensemble(s) of models (2 new: 1, 2)" in out
    home.ok("enqueue", "levelset", "--setup", "IRIS_FF", "--runs", "1", "--phase1-epochs", "1",
            "--max-predictor-steps", "5", "--study", "sw")  # fmt: skip
    home.ok("enqueue", "ensemble", "--setup", "doodl3-iris", "--models", "4", "--epochs", "3",
            "--early-epoch", "1", "--study", "sw")  # fmt: skip
    home.drain()
    for ensemble, seed in (("1", "0"), ("1", "1"), ("2", "0"), ("3", "0")):
        home.ok("enqueue", "morse", "--ensemble", ensemble, "--subdiv", "8", "--gp-seed", seed)
    home.drain()  # the last task it runs is the study's measures.refresh: no `tracker meta`
    return home


def test_a_traversal_from_a_checkpoint_gives_endpoint_measures_of_that_checkpoint(
    sweep: Home,
) -> None:  # fmt: skip
    with sweep.db.session() as s:
        runs = s.scalars(sa.select(LevelSetRun).where(LevelSetRun.checkpoint_id.is_not(None))).all()
        assert len(runs) == 6
        measures = _measures(s, "levelset")
        by = {(m.checkpoint_id, d.kind): (m, d) for m, d in measures}
        for run in runs:
            ckpt = s.get(Checkpoint, run.checkpoint_id)
            assert ckpt.epoch == 3 and ckpt.model_id == run.model_id
            trace = _trace(s, sweep, run)
            start = dict(zip(run.trace_fields, trace[0], strict=True))
            m, d = by[(ckpt.id, "levelset_end_test_acc")]
            assert m.value == pytest.approx(run.final_test_acc) and m.model_id == run.model_id
            assert m.epoch == 3 and m.n_seeds == 1 and m.sources == [f"levelset_run:{run.id}"]
            assert d.split == "train" and d.subset_size == 60 and "max_predictor_steps=15" in d.key
            # The walk lowers the weight norm on the level set, and moved the weights.
            ratio = by[(ckpt.id, "levelset_norm_ratio")][0].value
            assert ratio == pytest.approx(math.sqrt(run.final_weight_norm_sq / start["weight_norm_sq"]))
            assert ratio < 1.0
            assert by[(ckpt.id, "levelset_distance")][0].value == pytest.approx(run.final_distance)
            assert run.final_distance > 0
            change = by[(ckpt.id, "levelset_test_loss_change")][0].value
            assert change == pytest.approx(run.final_test_loss - start["test_loss"])
            # The level set is the training loss's: the end's train loss is L0.
            assert by[(ckpt.id, "levelset_end_train_loss")][0].value == pytest.approx(run.l0, abs=1e-4)
    kinds = {d.kind for _, d in measures}
    assert {"levelset_end_train_loss", "levelset_end_train_acc", "levelset_end_test_loss",
            "levelset_end_test_acc", "levelset_end_weight_norm", "levelset_norm_ratio",
            "levelset_distance", "levelset_test_acc_change", "levelset_test_loss_change",
            "levelset_steps"} == kinds  # fmt: skip
    assert len(measures) == 6 * len(kinds)


def _trace(session, home: Home, run: LevelSetRun) -> np.ndarray:
    from tracker._arrays import read_array

    return np.asarray(read_array(session, home.store, run.trace_array_id))


def test_morse_counts_belong_to_every_member_of_the_setting(sweep: Home) -> None:
    with sweep.db.session() as s:
        graphs = s.scalars(sa.select(MorseGraph).order_by(MorseGraph.id)).all()
        by_ensemble: dict[int, list[MorseGraph]] = {}
        for g in graphs:
            by_ensemble.setdefault(g.ensemble_id, []).append(g)
        measures = _measures(s, "morse")
        for ensemble_id in (1, 2):
            ensemble = s.get(Ensemble, ensemble_id)
            assert ensemble.setup == "models" and ensemble.n_models == 3
            members = s.scalars(sa.select(EnsembleMember).where(
                EnsembleMember.ensemble_id == ensemble_id)).all()  # fmt: skip
            lrs = {s.get(Model, m.model_id).lr for m in members}
            assert len(lrs) == 1  # one setting over its seeds
            finals = {s.scalar(sa.select(Checkpoint.id).where(
                Checkpoint.model_id == m.model_id, Checkpoint.epoch == 3)) for m in members}  # fmt: skip
            mine = [(m, d) for m, d in measures if m.checkpoint_id in finals]
            counts = [g.n_attractors for g in by_ensemble[ensemble_id]]
            attractors = [(m, d) for m, d in mine if d.kind == "morse_attractors"]
            assert {m.checkpoint_id for m, _ in attractors} == finals
            for m, d in attractors:
                assert m.epoch == 3 and m.n_seeds == len(counts)  # GP seeds are seeds
                assert m.value == pytest.approx(sum(counts) / len(counts))
                assert d.key.startswith("morse_attractors of=setting-members early_epoch=1 "
                                        "pick=max-variance weights=2 subdiv=8 conley=True")  # fmt: skip
            assert {d.kind for _, d in mine} == {"morse_attractors", "morse_nodes", "morse_nontrivial"}
        # Ensemble 1's early and final arrays are its members' parameters.
        ensemble = s.get(Ensemble, 1)
        assert len(ensemble.param_names) == 4 * 8 + 8 + 8 * 3 + 3  # 4-8-3, biases included
        assert ensemble.param_names[0].endswith("weight_0_0")
        assert len(ensemble.kernel_columns) == 4 * 8 + 8 * 3


def test_a_setup_traversal_and_a_doodl3_ensemble_give_no_measure(sweep: Home) -> None:
    with sweep.db.session() as s:
        setup_run = s.scalar(sa.select(LevelSetRun).where(LevelSetRun.setup == "IRIS_FF"))
        doodl3 = s.scalar(sa.select(MorseGraph).where(MorseGraph.ensemble_id == 3))
        assert setup_run.trace_array_id is not None and doodl3.completed_at is not None
        assert setup_run.final_distance > 0  # recorded for every traversal
        sources = {src for m, _ in _measures(s, "levelset") + _measures(s, "morse")
                   for src in m.sources}  # fmt: skip
    assert f"levelset_run:{setup_run.id}" not in sources
    assert f"morse_graph:{doodl3.id}" not in sources


def test_the_meta_analysis_ranks_them_per_definition_over_the_study(sweep: Home) -> None:
    with sweep.db.session() as s:
        study_id = _study_id(s, "sw")
        table = meta_table(s, study_id, targets=("gap",), draws=20, seed=0)
    rows = {c.kind: c for c in table if c.kind.startswith(("levelset_", "morse_"))}
    assert {"levelset_end_test_acc", "levelset_distance", "morse_attractors"} <= set(rows)
    assert all(c.n_models == 6 and c.epoch == 3 for c in rows.values())
    assert len({c.definition_id for c in table if c.kind == "morse_attractors"}) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["enqueue", "ensemble", "--from-models", "1,2", "--early-epoch", "1"], "differ in lr"),
        (["enqueue", "ensemble", "--from-models", "1,3", "--early-epoch", "3"], "--early-epoch"),
        (["enqueue", "levelset", "--model", "1", "--runs", "2"], "--runs does not go with --model"),
        (["enqueue", "levelset", "--model", "1", "--epoch", "2"], "no checkpoint at epoch 2"),
        (["enqueue", "levelset"], "give --setup NAME"),
    ],
)
def test_bad_requests_are_one_line_and_write_nothing(
    sweep: Home, argv: list[str], message: str
) -> None:
    with sweep.db.session() as s:
        before = s.scalar(sa.select(sa.func.count()).select_from(Task))
    code, _, err = sweep.cli(*argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    with sweep.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Task)) == before


@pytest.mark.postgres
def test_level_set_and_morse_measures_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    """One setting's three seeds, queued all at once (the traversals and the ensemble wait on
    the training, the Morse graph on the ensemble), drained once."""
    from tracker.morse.rows import MorseSpec, add_morse

    home = Home(tmp_path, pg_url)
    for seed in range(3):
        home.ok("enqueue", "model", *MODEL, "--lr", "0.1", "--train-seed", str(seed),
                "--study", "pg")  # fmt: skip
    home.ok("enqueue", "levelset", "--model", "all", "--study", "pg", "--max-predictor-steps", "10")
    home.ok("enqueue", "ensemble", "--from-models", "1,2,3", "--study", "pg")
    with home.db.session() as s:
        assert s.get(Ensemble, 1).early_epoch == 1  # the models' first kept checkpoint
        add_morse(s, None, MorseSpec(ensemble_id=1, subdiv=8))
    home.drain()  # measures refreshed by the queue itself
    with home.db.session() as s:
        levelset = _measures(s, "levelset")
        morse = _measures(s, "morse")
        graph = s.scalar(sa.select(MorseGraph))
    assert len({m.checkpoint_id for m, _ in levelset}) == 3
    attractors = [m for m, d in morse if d.kind == "morse_attractors"]
    assert len(attractors) == 3 and all(m.value == graph.n_attractors for m in attractors)
