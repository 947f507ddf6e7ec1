"""Morse graphs (seed 003) through the tracker: a DOODL3 ensemble goes through the queue to a
stored, shown and plotted Morse graph; bad requests are one line and write nothing."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from cli_support import run_tracker, tracker_env

from compute import doodl3
from tracker._config import resolve
from tracker._db import open_database
from tracker._migrate import upgrade
from tracker._queue import get_or_create_study
from tracker._schema import ArrayRef, Ensemble, EnsembleMember, MorseGraph, Task
from tracker._store import ArrayStore
from tracker._worker import WorkerConfig, run_worker


def _fixed_on_morse_sets(morse_sets: np.ndarray, retraction: np.ndarray) -> bool:
    inside = morse_sets >= 0
    return bool(inside.any()) and bool((retraction[inside] == morse_sets[inside]).all())


class Home:
    def __init__(self, root: Path, db_url: str | None = None) -> None:
        self.settings = resolve(db_url=db_url, home=root / ".tracker")
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.db = open_database(self.settings.db_url, check=False)
        upgrade(self.db, "head")
        self.store = ArrayStore(self.settings.store_url)
        self.env = tracker_env(root, self.settings.db_url, self.settings.store_url)

    def drain(self, **kw) -> dict:
        return run_worker(WorkerConfig(db_url=self.settings.db_url,
                                       store_url=self.settings.store_url,
                                       mlflow_uri=self.settings.mlflow_uri, **kw))  # fmt: skip

    def count(self, cls: type) -> int:
        with self.db.session() as s:
            return int(s.scalar(sa.select(sa.func.count()).select_from(cls)))


def _contraction_ensemble(home: Home, fixed: np.ndarray) -> int:
    """A finished ensemble whose final weights are a contraction of its early ones towards
    ``fixed`` (one value per kernel weight)."""
    early = np.random.default_rng(7).uniform(-2, 2, size=(60, 9)).astype(np.float32)
    final = early.copy()
    final[:, :6] = 0.4 * early[:, :6] + 0.6 * fixed
    with home.db.session() as s:
        study = get_or_create_study(s, "synthetic")
        ens = Ensemble(study_id=study.id, spec_hash="synthetic-contraction", setup="doodl3-iris",
                       n_models=60, epochs=2, early_epoch=1, batch_size=5, seed=0, data_seed=0,
                       chunk_size=60, param_names=doodl3.param_names("doodl3-iris"),
                       kernel_columns=list(range(6)), completed_at=sa.func.current_timestamp())  # fmt: skip
        s.add(ens)
        s.flush()
        for name, data in (("early", early), ("final", final)):
            spec = home.store.write(f"test/{ens.id}/{name}", data)
            ref = ArrayRef(path=spec.path, shape=list(spec.shape), dtype=spec.dtype,
                           chunks=list(spec.chunks))  # fmt: skip
            s.add(ref)
            s.flush()
            setattr(ens, f"{name}_array_id", ref.id)
        return ens.id


def test_the_stored_graph_of_a_contraction_has_one_attractor(tmp_path: Path, db_url: str) -> None:
    from tracker.morse.rows import MorseSpec, add_morse

    home = Home(tmp_path, db_url)
    fixed = np.array([0.5, -0.5, 0.25, 1.0, -1.0, 0.0])
    eid = _contraction_ensemble(home, fixed)
    spec = MorseSpec(ensemble_id=eid, subdiv=10, seed=1)
    with home.db.session() as s:
        _, new = add_morse(s, None, spec)
    assert new
    with home.db.session() as s:
        _, again = add_morse(s, None, spec)
    assert not again and home.count(Task) == 1
    assert home.drain()["failed"] == 0
    with home.db.session() as s:
        row = s.scalar(sa.select(MorseGraph))
        assert row.n_attractors == 1 and row.completed_at is not None
        assert row.gp_params["seed"] == 1 and row.gp_params["n_pairs"] == 60
        assert len(row.weight_names) == 2 and row.weight_names[0].startswith("dense_kernel_")
        attractor = next(n for n in row.graph["nodes"] if n["attractor"])
        x0, y0, x1, y1 = attractor["bbox"]
        cx, cy = fixed[row.source["weight_columns"]]
        assert x0 <= cx <= x1 and y0 <= cy <= y1
        sets = home.store.read(s.get(ArrayRef, row.morse_sets_array_id).path)
        retraction = home.store.read(s.get(ArrayRef, row.retraction_array_id).path)
    assert sets.shape == (32, 32) and sets.dtype == np.int32
    assert _fixed_on_morse_sets(sets, retraction)


def _cli(home: Home, *argv: str) -> tuple[int, str, str]:
    """`tracker ARGV` in this process (exit code, stdout, stderr): cheaper than a process."""
    from tracker.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*argv, "--db", home.settings.db_url, "--store", home.settings.store_url,
                     "--home", str(home.settings.home)])  # fmt: skip
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Home:
    """A 6-model Iris ensemble enqueued with the CLI and trained by `tracker work`."""
    home = Home(tmp_path_factory.mktemp("morse"))
    code, out, err = _cli(home, "enqueue", "ensemble", "--setup", "doodl3-iris", "--models", "6",
                          "--epochs", "4", "--chunk", "3")  # fmt: skip
    assert code == 0, err
    assert "ensemble 1 (new, 2 training task(s))" in out
    tasks = home.count(Task)
    code, out, _ = _cli(home, "enqueue", "ensemble", "--setup", "doodl3-iris", "--models", "6",
                        "--epochs", "4", "--chunk", "3")  # fmt: skip
    assert code == 0 and "ensemble 1 (already queued)" in out and home.count(Task) == tasks == 3
    code, _, home.early_error = _cli(home, "enqueue", "morse", "--ensemble", "1")  # type: ignore[attr-defined]
    assert code != 0
    home.morse_rows_before_work = home.count(MorseGraph)  # type: ignore[attr-defined]
    work = run_tracker("work", "--workers", "1", "--no-progress", env=home.env)
    assert work.returncode == 0, work.stderr[-3000:]
    return home


def test_a_morse_request_on_an_unfinished_ensemble_lists_what_is_pending(trained: Home) -> None:
    lines = trained.early_error.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and "Traceback" not in trained.early_error  # type: ignore[attr-defined]
    assert "ensemble 1 is not finished" in lines[0]
    assert "ensemble.train pending" in lines[0] and "ensemble.complete waiting" in lines[0]
    assert trained.morse_rows_before_work == 0  # type: ignore[attr-defined]


def test_the_ensemble_keeps_weights_metrics_and_one_mlflow_run(trained: Home) -> None:
    from mlflow.tracking import MlflowClient

    with trained.db.session() as s:
        ens = s.get(Ensemble, 1)
        assert ens.completed_at is not None and ens.chunk_size == 3
        early = trained.store.read(s.get(ArrayRef, ens.early_array_id).path)
        final = trained.store.read(s.get(ArrayRef, ens.final_array_id).path)
        loss = trained.store.read(s.get(ArrayRef, ens.loss_array_id).path)
        members = s.scalars(sa.select(EnsembleMember).order_by(EnsembleMember.model_index)).all()
        run_id = ens.mlflow_run_id
    assert early.shape == final.shape == (6, 9) and loss.shape == (6, 4)
    assert np.isfinite(final).all() and not np.array_equal(early, final)
    assert [m.model_index for m in members] == list(range(6))
    assert all(0 <= m.balanced_accuracy <= 1 and m.entropy >= 0 for m in members)
    # The chunks are the same models as one in-process chunk of the same spec.
    direct = doodl3.train_chunk("doodl3-iris", [3, 4, 5], seed=0, epochs=4, early_epoch=2,
                                batch_size=5)  # fmt: skip
    assert np.allclose(direct.final, final[3:], atol=1e-6)
    client = MlflowClient(trained.settings.mlflow_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["n_models"] == "6"
    history = client.get_metric_history(run_id, "model_entropy")
    assert sorted(m.step for m in history) == list(range(6))
    assert len(client.get_metric_history(run_id, "train_loss_mean")) == 4


def test_a_morse_graph_of_the_ensemble_is_stored_shown_and_plotted(trained: Home) -> None:
    code, _, err = _cli(trained, "enqueue", "morse", "--ensemble", "1", "--subdiv", "10",
                        "--seed", "2")  # fmt: skip
    assert code == 0, err
    assert trained.drain(kinds=("morse",))["failed"] == 0
    with trained.db.session() as s:
        row = s.scalar(sa.select(MorseGraph))
        retraction = trained.store.read(s.get(ArrayRef, row.retraction_array_id).path)
        sets = trained.store.read(s.get(ArrayRef, row.morse_sets_array_id).path)
        assert row.n_nodes == len(row.graph["nodes"]) >= 1 and row.n_attractors >= 1
        assert row.subdiv == 10 and row.source["ensemble_id"] == 1
    assert retraction.shape == (32, 32) and _fixed_on_morse_sets(sets, retraction)
    code, shown, _ = _cli(trained, "show", "morse", str(row.id))
    assert code == 0 and f"{row.n_nodes} node(s)" in shown
    code, plotted, err = _cli(trained, "plot", "morse", str(row.id), "--out",
                              str(trained.settings.home / "p"))  # fmt: skip
    assert code == 0, err
    files = [Path(p) for p in plotted.split()]
    names = sorted(p.name for p in files)
    assert names == sorted(f"morse-{row.id}-{k}.{e}" for k in ("graph", "sets", "violins")
                           for e in ("png", "pdf"))  # fmt: skip
    assert all(p.stat().st_size > 1000 for p in files)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["enqueue", "ensemble", "--setup", "doodl3-cifar"], "unknown setup 'doodl3-cifar'"),
        (["enqueue", "ensemble", "--setup", "doodl3-iris", "--models", "0"], "--models must be"),
        (["enqueue", "ensemble", "--setup", "doodl3-iris", "--epochs", "2", "--early-epoch", "2"],
         "--early-epoch must be in 0..1"),
        (["enqueue", "morse", "--ensemble", "1", "--subdiv", "19"], "add --force"),
        (["enqueue", "morse", "--ensemble", "1", "--subdiv", "25", "--force"], "above the limit"),
        (["enqueue", "morse", "--ensemble", "99"], "unknown ensemble id 99"),
        (["enqueue", "morse", "--ensemble", "1", "--pick", "median"], "unknown --pick 'median'"),
        (["show", "morse", "5"], "unknown Morse graph id 5"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    home = Home(tmp_path)
    code, _, err = _cli(home, *argv)
    err = err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and message in err, err
    assert home.count(Task) == home.count(Ensemble) == home.count(MorseGraph) == 0


@pytest.mark.postgres
def test_an_ensemble_trains_in_chunks_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    from tracker.morse.rows import EnsembleSpec, add_ensemble

    home = Home(tmp_path, pg_url)
    spec = EnsembleSpec(setup="doodl3-iris", n_models=3, epochs=2, early_epoch=1, chunk_size=2)
    with home.db.session() as s:
        add_ensemble(s, get_or_create_study(s, "pg"), spec)
    assert home.drain()["failed"] == 0
    with home.db.session() as s:
        ens = s.scalar(sa.select(Ensemble))
        final = home.store.read(s.get(ArrayRef, ens.final_array_id).path)
        members = s.scalars(sa.select(EnsembleMember.model_index)).all()
        assert ens.completed_at is not None and ens.mlflow_run_id
    assert sorted(members) == [0, 1, 2] and final.shape == (3, 9) and np.isfinite(final).all()
