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
from schema_support import migrated

from compute import doodl3
from tracker._config import resolve
from tracker._db import open_database
from tracker._queue import get_or_create_study
from tracker._schema import (
    ArrayRef,
    Ensemble,
    EnsembleMember,
    MorseGraph,
    Study,
    Task,
    TaskDependency,
)
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
        migrated(self.db)  # a copy of a migrated template
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
    # Before training: the Morse graph waits on the ensemble (computed by the work below).
    home.early = _cli(home, "enqueue", "morse", "--ensemble", "1", "--subdiv", "8")  # type: ignore[attr-defined]
    home.early_morse = None  # type: ignore[attr-defined]
    with home.db.session() as s:
        early = s.scalar(sa.select(MorseGraph))
        if early is not None:
            parents = s.scalars(sa.select(Task.kind).join(
                TaskDependency, TaskDependency.depends_on_id == Task.id
            ).where(TaskDependency.task_id == early.task_id)).all()  # fmt: skip
            home.early_morse = (early.id, s.get(Task, early.task_id).status, parents)  # type: ignore[attr-defined]
    home.morse_rows_before_work = home.count(MorseGraph)  # type: ignore[attr-defined]
    work = run_tracker("work", "--no-progress", env=home.env)
    assert work.returncode == 0, work.stderr[-3000:]
    return home


def test_a_morse_request_on_an_unfinished_ensemble_waits_for_its_training(trained: Home) -> None:
    """As a study file's [[morse]]: the graph is queued behind the ensemble's completing task,
    and one `tracker work` trains the ensemble, then computes the graph."""
    code, out, err = trained.early  # type: ignore[attr-defined]
    assert code == 0 and "Traceback" not in err, err
    assert "Morse graph 1 (new, waiting on the ensemble's training) of ensemble 1" in out
    assert trained.early_morse is not None  # type: ignore[attr-defined]
    mid, status, parents = trained.early_morse  # type: ignore[attr-defined]
    assert (status, parents) == ("waiting", ["ensemble.complete"])
    assert trained.morse_rows_before_work == 1  # type: ignore[attr-defined]
    with trained.db.session() as s:
        row = s.get(MorseGraph, mid)
        assert row.completed_at is not None and row.subdiv == 8 and row.n_nodes >= 1


def test_a_morse_request_on_a_failed_ensemble_is_one_line_naming_requeue(tmp_path: Path) -> None:
    """A Morse task waiting on a failed training could never run: refused, nothing written."""
    home = Home(tmp_path)
    code, _, err = _cli(home, "enqueue", "ensemble", "--setup", "doodl3-iris", "--models", "4",
                        "--epochs", "4", "--chunk", "2")  # fmt: skip
    assert code == 0, err
    with home.db.session() as s:
        broken = s.scalars(sa.select(Task).where(Task.kind == "ensemble.train")).first()
        s.execute(sa.update(Task).where(Task.id == broken.id)
                  .values(status="failed", error="RuntimeError: boom"))  # fmt: skip
    tasks = home.count(Task)
    code, _, err = _cli(home, "enqueue", "morse", "--ensemble", "1")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert f"ensemble 1 failed to train (task {broken.id} ensemble.train failed)" in lines[0]
    assert "tracker requeue --failed" in lines[0]
    assert home.count(Task) == tasks and home.count(MorseGraph) == 0


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
    code, out, err = _cli(trained, "enqueue", "morse", "--ensemble", "1", "--subdiv", "10",
                          "--seed", "2")  # fmt: skip
    assert code == 0 and "(new)" in out, err
    assert trained.drain(kinds=("morse",))["failed"] == 0
    with trained.db.session() as s:
        row = s.get(MorseGraph, int(out.split("Morse graph ")[1].split()[0]))
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
        (["enqueue", "morse", "--ensemble", "1", "--weights", "1"], "--weights must be 2..8"),
        (["enqueue", "morse", "--ensemble", "1", "--weights", "9"], "--weights must be 2..8"),
        (["enqueue", "morse", "--ensemble", "1", "--weights", "x"], "neither a count nor a list"),
        (["enqueue", "morse", "--ensemble", "1", "--weights", "3", "--subdiv", "2"],
         "--subdiv must be at least 3 (one split per axis of 3 weights)"),
        (["enqueue", "morse", "--ensemble", "1", "--weights", "a,b,a"], "names a parameter twice"),
        (["enqueue", "morse", "--ensemble", "1", "--study", ""], "non-empty"),
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


# --- issue 14: Figure 3's defaults (8), Conley-trivial nodes (9), K weights and iris_layers_2 (10)


def test_the_iris_defaults_are_figure_3s_450_epochs(tmp_path: Path) -> None:
    """Item 8: `enqueue ensemble --setup doodl3-iris` with no --epochs is iris_epoch_450;
    iris_layers_2 keeps the notebooks' 150."""
    home = Home(tmp_path)
    for setup in ("doodl3-iris", "doodl3-iris-layers-2"):
        code, _, err = _cli(home, "enqueue", "ensemble", "--setup", setup, "--models", "2")
        assert code == 0, err
    with home.db.session() as s:
        rows = {e.setup: e for e in s.scalars(sa.select(Ensemble))}
        assert rows["doodl3-iris"].epochs == 450 and rows["doodl3-iris-layers-2"].epochs == 150
        assert len(rows["doodl3-iris-layers-2"].param_names) == 21
        assert len(rows["doodl3-iris-layers-2"].kernel_columns) == 15
        assert "dense_1_kernel U(-1, 1)" in rows["doodl3-iris-layers-2"].config["init"]


@pytest.mark.slow
def test_the_published_iris_graph_is_what_the_defaults_give(tmp_path: Path) -> None:
    """Item 8: DOODL3's Figure 3 (iris_epoch_450, the two weights of largest spread, subdivision
    15) is a graph of 2 nodes, one of them an attractor. The whole default path: 100 models x
    450 epochs trained by `tracker work`, then the default Morse graph. The second node is a
    single box with a trivial Conley index (item 9). Several minutes on a loaded machine."""
    home = Home(tmp_path)
    code, out, err = _cli(home, "enqueue", "ensemble", "--setup", "doodl3-iris")
    assert code == 0 and "2 training task(s)" in out, err
    work = run_tracker("work", "--no-progress", env=home.env, timeout=900)
    assert work.returncode == 0, work.stderr[-3000:]
    code, _, err = _cli(home, "enqueue", "morse", "--ensemble", "1")
    assert code == 0, err
    assert home.drain(kinds=("morse",))["failed"] == 0
    with home.db.session() as s:
        ens, row = s.get(Ensemble, 1), s.scalar(sa.select(MorseGraph))
        final = home.store.read(s.get(ArrayRef, ens.final_array_id).path)
        assert (ens.n_models, ens.epochs, row.subdiv, row.pick) == (100, 450, 15, "max-variance")
        assert (row.n_nodes, row.n_attractors, row.n_nontrivial) == (2, 1, 1)
        columns, names = row.source["weight_columns"], row.weight_names
    # The notebooks' order: the second largest spread on the first axis, the largest second.
    std = final[:, :6].std(axis=0)
    assert list(columns) == [int(i) for i in np.argsort(std)[-2:]]
    assert std[columns[0]] < std[columns[1]] and names == [ens.param_names[c] for c in columns]


def test_nodes_with_a_trivial_conley_index_are_flagged_and_counted() -> None:
    """Item 9: a contraction's outer approximation has one attractor (Conley index of a stable
    fixed point) and one-box spurious recurrent sets beside it, whose index is trivial."""
    from compute.morse import compute_morse_graph, conley_trivial

    fixed = np.array([0.6, -0.4])
    result = compute_morse_graph(lambda p: 0.5 * p + 0.5 * fixed, [-1, -1], [1, 1], 10)
    attractor = result.nodes[result.attractors[0]]
    assert attractor["trivial"] is False and attractor["conley_index"][0] != "0"
    spurious = [n for n in result.nodes if n["trivial"]]
    assert spurious and all(set(n["conley_index"]) == {"0"} for n in spurious)
    assert result.n_nontrivial == 1 and len(result.nodes) == 1 + len(spurious)
    plain = compute_morse_graph(lambda p: 0.5 * p + 0.5 * fixed, [-1, -1], [1, 1], 10,
                                conley=False)  # fmt: skip
    assert plain.n_nontrivial is None and all(n["trivial"] is None for n in plain.nodes)
    assert conley_trivial(["0", "0", "0"]) and not conley_trivial(["x-1", "0", "0"])
    assert conley_trivial([]) is None


def test_the_stored_graph_counts_and_shows_non_trivial_nodes(tmp_path: Path) -> None:
    """Item 9 through the tracker: the count is stored beside the total and shown."""
    from tracker.morse.plots import dot_source

    home = Home(tmp_path)
    eid = _contraction_ensemble(home, np.array([0.5, -0.5, 0.25, 1.0, -1.0, 0.0]))
    code, _, err = _cli(home, "enqueue", "morse", "--ensemble", str(eid), "--subdiv", "10")
    assert code == 0, err
    assert home.drain(kinds=("morse",))["failed"] == 0
    with home.db.session() as s:
        row = s.scalar(sa.select(MorseGraph))
        trivial = [n for n in row.graph["nodes"] if n["trivial"]]
        assert row.n_nontrivial == row.n_nodes - len(trivial) >= 1 and trivial
    code, shown, _ = _cli(home, "show", "morse", str(row.id))
    assert code == 0
    assert f"{row.n_nodes} node(s) ({row.n_nontrivial} with a non-trivial Conley index)" in shown
    node = trivial[0]
    assert f"  node {node['id']}: {node['n_boxes']} box(es), Conley index (0, 0, 0) trivial" in shown
    assert f'"{node["id"]}" [shape=ellipse] [style="filled,dashed"]' in dot_source(row.graph)


def test_the_grid_corner_map_in_three_dimensions_is_cmgdbs() -> None:
    """Item 10: the vertex-cached box map and the box grid hold for K > 2 weights."""
    import CMGDB

    from compute.morse import GridCornerMap, box_counts, compute_morse_graph, retract_points

    def f(p: np.ndarray) -> np.ndarray:
        return np.column_stack([np.sin(p[:, 1]), p[:, 0] * p[:, 2], 0.3 * p[:, 2] ** 2])

    lo, hi = [-1.0, -2.0, 0.0], [3.0, 1.0, 2.0]
    assert box_counts(10, 3) == [16, 8, 8] and box_counts(15, 2) == [256, 128]
    grid = GridCornerMap(f, lo, hi, 10)
    w = (np.array(hi) - np.array(lo)) / np.array([16, 8, 8])
    cells = np.random.default_rng(1).integers(0, [16, 8, 8], size=(40, 3))
    rects = np.hstack([np.array(lo) + cells * w, np.array(lo) + (cells + 1) * w])
    assert np.allclose(grid(rects), CMGDB.BoxMapBatch(f, rects, padding=True), atol=1e-9)
    fixed = np.array([0.3, -0.2, 0.5])
    result = compute_morse_graph(lambda p: 0.5 * p + 0.5 * fixed, [-1] * 3, [1] * 3, 10)
    assert result.shape == (8, 8, 16) and result.morse_sets.shape == result.retraction.shape
    box = result.nodes[result.attractors[0]]["bbox"]
    assert all(box[d] <= fixed[d] <= box[3 + d] for d in range(3))
    assert retract_points(result, fixed[None, :])[0] == result.attractors[0]
    assert _fixed_on_morse_sets(result.morse_sets, result.retraction)


def test_a_morse_graph_over_three_weights_and_explicit_weights(tmp_path: Path) -> None:
    """Item 10: `--weights 3` (notebook order), `--weights NAME,INDEX`, `--study`, the plots."""
    home = Home(tmp_path)
    fixed = np.array([0.5, -0.5, 0.25, 1.0, -1.0, 0.0])
    eid = _contraction_ensemble(home, fixed)
    code, out, err = _cli(home, "enqueue", "morse", "--ensemble", str(eid), "--weights", "3",
                          "--subdiv", "9", "--study", "three")  # fmt: skip
    assert code == 0 and "in study 'three'" in out, err
    code, _, err = _cli(home, "enqueue", "morse", "--ensemble", str(eid), "--weights",
                        "dense_kernel_0_0,5", "--subdiv", "8")  # fmt: skip
    assert code == 0, err
    assert home.drain(kinds=("morse",))["failed"] == 0
    with home.db.session() as s:
        three, pair = s.scalars(sa.select(MorseGraph).order_by(MorseGraph.id)).all()
        assert s.get(Study, three.study_id).name == "three"
        early = home.store.read(s.get(ArrayRef, s.get(Ensemble, eid).early_array_id).path)
        sets = home.store.read(s.get(ArrayRef, three.morse_sets_array_id).path)
        retraction = home.store.read(s.get(ArrayRef, three.retraction_array_id).path)
        final = home.store.read(s.get(ArrayRef, s.get(Ensemble, eid).final_array_id).path)
        assert len(three.weight_names) == 3 and three.n_attractors == 1
        assert pair.pick == "explicit" and pair.source["weight_columns"] == [0, 5]
        assert pair.weight_names == ["dense_kernel_0_0", "dense_kernel_1_2"]
        cols = three.source["weight_columns"]
        attractor = next(n for n in three.graph["nodes"] if n["attractor"])
    std = final[:, :6].std(axis=0)
    assert cols == [int(i) for i in np.argsort(std)[-3:]]
    assert sets.shape == retraction.shape == (8, 8, 8)
    assert all(attractor["bbox"][d] <= fixed[c] <= attractor["bbox"][3 + d]
               for d, c in enumerate(cols))  # fmt: skip
    assert _fixed_on_morse_sets(sets, retraction)
    assert early.shape[1] == 9
    code, plotted, err = _cli(home, "plot", "morse", str(three.id), "--out",
                              str(home.settings.home / "p"))  # fmt: skip
    assert code == 0 and len(plotted.split()) == 6, err
    for argv, message in (
        (["--weights", "dense_kernel_9_9,1"], "has no parameter 'dense_kernel_9_9'"),
        (["--weights", "7"], "has 6 kernel weights, fewer than --weights 7"),
        (["--weights", "0,dense_kernel_0_0"], "names a parameter twice"),
    ):
        before = home.count(MorseGraph)
        code, _, err = _cli(home, "enqueue", "morse", "--ensemble", str(eid), *argv)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
        assert home.count(MorseGraph) == before


def test_iris_layers_2_is_two_softmax_layers_with_keras_initialisers() -> None:
    """Item 10: DOODL3's iris_layers_2, Dense(3, softmax) -> Dense(3, softmax); the second
    kernel keeps Keras's Glorot-uniform default, U(-1, 1)."""
    import torch

    setup = "doodl3-iris-layers-2"
    names = doodl3.param_names(setup)
    assert len(names) == 21 and names[9] == "dense_1_kernel_0_0"
    out = doodl3.train_chunk(setup, list(range(40)), seed=0, epochs=2, early_epoch=0,
                             batch_size=5)  # fmt: skip
    init = out.early
    first, second = init[:, :6], init[:, 9:18]
    assert np.abs(first).max() <= 2 and np.abs(first).max() > 1.5
    assert np.abs(second).max() <= 1 and np.abs(second).max() > 0.8
    assert np.all(init[:, 6:9] == 0) and np.all(init[:, 18:] == 0)
    assert np.isfinite(out.final).all() and not np.array_equal(out.early, out.final)
    # The stacked forward pass is softmax(x W + b) W1 + b1 per model.
    x = doodl3.load_split(setup, 0).test_x[:4].numpy().astype(np.float64)
    f = out.final.astype(np.float64)
    params = [torch.tensor(f[:, :6].reshape(-1, 2, 3)), torch.tensor(f[:, 6:9]),
              torch.tensor(f[:, 9:18].reshape(-1, 3, 3)), torch.tensor(f[:, 18:])]  # fmt: skip
    xs = torch.tensor(np.broadcast_to(x, (40, *x.shape)).copy())
    logits = doodl3._logits(setup, params, xs, None).numpy()
    for m in (0, 39):
        z = x @ f[m, :6].reshape(2, 3) + f[m, 6:9]
        hidden = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        assert np.allclose(logits[m], hidden @ f[m, 9:18].reshape(3, 3) + f[m, 18:], atol=1e-12)
