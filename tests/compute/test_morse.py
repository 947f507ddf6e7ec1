"""Morse graphs (seed 003): known maps give known graphs, the retraction fixes Morse sets, and a
DOODL3 ensemble goes through the queue to a stored, plotted Morse graph."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from cli_support import run_tracker, tracker_env

from compute import doodl3
from compute.morse import NONE, MorseResult, compute_morse_graph, pick_weights
from tracker._config import resolve
from tracker._db import open_database
from tracker._migrate import upgrade
from tracker._queue import get_or_create_study
from tracker._schema import ArrayRef, Ensemble, EnsembleMember, MorseGraph, Task
from tracker._store import ArrayStore
from tracker._worker import WorkerConfig, run_worker


def _leslie(p: np.ndarray) -> np.ndarray:
    x, y = p[:, 0], p[:, 1]
    return np.column_stack([(19.6 * x + 23.68 * y) * np.exp(-0.1 * (x + y)), 0.7 * x])


def _fixed_on_morse_sets(morse_sets: np.ndarray, retraction: np.ndarray) -> bool:
    inside = morse_sets >= 0
    return bool(inside.any()) and bool((retraction[inside] == morse_sets[inside]).all())


# --- known maps -------------------------------------------------------------------------------


def test_a_contraction_has_one_attractor_holding_its_fixed_point() -> None:
    fixed = np.array([0.6, -0.4])
    result = compute_morse_graph(lambda p: 0.5 * p + 0.5 * fixed, [-1, -1], [1, 1], 10)
    assert len(result.attractors) == 1
    x0, y0, x1, y1 = result.nodes[result.attractors[0]]["bbox"]
    assert x0 <= fixed[0] <= x1 and y0 <= fixed[1] <= y1
    assert result.shape == (32, 32)
    # Every box flows into the attractor's neighbourhood: no box reaches nothing.
    assert (result.retraction >= 0).all()
    assert _fixed_on_morse_sets(result.morse_sets, result.retraction)


@pytest.fixture(scope="module")
def leslie() -> MorseResult:
    return compute_morse_graph(_leslie, [-0.001, -0.001], [90.0, 70.0], 16)


def test_the_leslie_map_gives_a_chain_of_three_morse_sets_with_conley_indices(
    leslie: MorseResult,
) -> None:
    result = leslie
    assert result.edges == [(1, 0), (2, 1)]
    assert result.attractors == [0]
    assert [n["conley_index"] for n in result.nodes] == [
        ["x^3-1", "0", "0"], ["0", "x^2+x+1", "0"], ["0", "0", "0"],
    ]  # fmt: skip
    assert result.nodes[2]["n_boxes"] == 1  # the fixed point at the origin


def test_the_retraction_is_the_identity_on_morse_sets_and_sends_boxes_down_the_order(
    leslie: MorseResult,
) -> None:
    result = leslie
    assert _fixed_on_morse_sets(result.morse_sets, result.retraction)
    # The top node (the origin) is reached only from its own box; every other box retracts to
    # a node, which is the greatest it reaches (1 above 0: boxes reaching 1 retract to 1).
    values, counts = np.unique(result.retraction, return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist(), strict=True))[2] == 1
    assert set(values.tolist()) <= {0, 1, 2}


def test_pick_weights_takes_the_most_or_least_varying_candidates() -> None:
    rng = np.random.default_rng(0)
    final = rng.normal(size=(50, 5)) * np.array([1.0, 5.0, 0.1, 3.0, 0.01])
    assert pick_weights(final, [0, 1, 2, 3, 4], "max-variance") == [1, 3]
    assert pick_weights(final, [0, 1, 2, 3, 4], "min-variance") == [4, 2]
    assert pick_weights(final, [0, 2, 3], "max-variance") == [3, 0]


def test_same_spec_trains_the_same_numbers_and_the_setups_have_their_sizes() -> None:
    a = doodl3.train_chunk("doodl3-iris", [0, 1], seed=3, epochs=3, early_epoch=1, batch_size=5)
    b = doodl3.train_chunk("doodl3-iris", [0, 1], seed=3, epochs=3, early_epoch=1, batch_size=5)
    assert np.array_equal(a.final, b.final) and np.array_equal(a.early, b.early)
    assert a.final.shape == (2, 9) and not np.array_equal(a.early, a.final)
    # Kernels start in U(-2, 2), biases at zero (Keras's defaults kept by DOODL3).
    m = doodl3.train_chunk("doodl3-mnist", [0, 1], seed=0, epochs=1, early_epoch=0, batch_size=128)
    assert m.final.shape == (2, 58) and len(doodl3.kernel_columns("doodl3-mnist")) == 54
    bias = [i for i, n in enumerate(doodl3.param_names("doodl3-mnist")) if "bias" in n]
    assert np.all(m.early[:, bias] == 0) and np.abs(m.early).max() <= 2.0
    assert np.all((m.accuracy >= 0) & (m.accuracy <= 1)) and np.all(m.entropy >= 0)


# --- through the queue ------------------------------------------------------------------------


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
    from tracker._cmd_morse import MorseSpec, add_morse

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


def test_an_unknown_retraction_point_is_none() -> None:
    from compute.morse import retract_points

    result = compute_morse_graph(lambda p: 0.5 * p, [-1, -1], [1, 1], 6)
    assert retract_points(result, np.array([[5.0, 5.0]]))[0] == NONE
    assert retract_points(result, np.array([[0.01, 0.01]]))[0] >= 0


def test_the_grid_corner_map_equals_cmgdbs_corner_box_map() -> None:
    import CMGDB

    from compute.morse import GridCornerMap

    rng = np.random.default_rng(1)
    lo, hi = [-1.0, -2.0], [3.0, 1.0]
    grid = GridCornerMap(_leslie, lo, hi, 7)  # 16 x 8 boxes
    w = (np.array(hi) - np.array(lo)) / np.array([16, 8])
    cells = rng.integers(0, [16, 8], size=(50, 2))
    rects = np.hstack([np.array(lo) + cells * w, np.array(lo) + (cells + 1) * w])
    off_grid = np.array([[0.1, 0.2, 0.3, 0.45]])  # not a box of the grid: evaluated directly
    rects = np.vstack([rects, off_grid])
    expected = CMGDB.BoxMapBatch(_leslie, rects, padding=True)
    assert np.allclose(grid(rects), expected, rtol=1e-12, atol=1e-9)


def test_stacked_models_compute_what_each_network_computes_alone() -> None:
    """The stacked forward pass (models as conv groups, Keras's channels-last flatten) equals
    each model run as an ordinary torch network."""
    import torch
    import torch.nn.functional as F

    split = doodl3.load_split("doodl3-mnist", 0)
    x = split.test_x[:5]
    params = [torch.tensor(np.stack(g), dtype=torch.float32)
              for g in zip(*(doodl3._init("doodl3-mnist", 0, i) for i in range(3)), strict=True)]  # fmt: skip
    params[1] += torch.tensor([[0.1, -0.2]])  # non-zero biases, so their use is checked too
    params[3] += torch.tensor([[0.3, 0.05]])
    stacked = doodl3._logits("doodl3-mnist", params, x.unsqueeze(0).expand(3, *x.shape), None)
    for m in range(3):
        ck, cb, dk, db = (p[m] for p in params)
        z = F.relu(F.conv2d(x, ck.permute(3, 2, 0, 1), cb))  # [5, 2, 26, 26]
        z = F.max_pool2d(z, 7).permute(0, 2, 3, 1).reshape(5, 18)  # (h, w, c) flatten
        assert torch.allclose(stacked[m], z @ dk + db, atol=1e-4)
    xi = doodl3.load_split("doodl3-iris", 0).test_x[:7]
    w, b = torch.randn(2, 2, 3), torch.randn(2, 3)
    out = doodl3._logits("doodl3-iris", [w, b], xi.unsqueeze(0).expand(2, *xi.shape), None)
    assert torch.allclose(out[1], xi @ w[1] + b[1], atol=1e-6)


@pytest.mark.postgres
def test_an_ensemble_trains_in_chunks_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    from tracker._cmd_morse import EnsembleSpec, add_ensemble

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
