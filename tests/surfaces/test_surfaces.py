"""Loss surfaces end to end through the queue: train, directions, tiles, completion.

Each test enqueues a real study file, drains it with the real worker loop (in this process,
or in a worker process that is killed), and checks the stored rows and Zarr arrays against
an independent computation.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import torch
from schema_support import migrated
from torch.nn import functional as F

from compute import data as data_mod
from compute import models as models_mod
from compute.state import load_flat
from tracker._config import resolve
from tracker._db import open_database
from tracker._schema import ArrayRef, Checkpoint, Direction, Model, Surface, Task
from tracker._store import ArrayStore
from tracker._worker import WorkerConfig, run_worker
from tracker.studyfile import enqueue_study
from tracker.surfaces.results import load_surface

CNN = 'architecture = "cnn"\narch = { channels = [4, 8], hidden = [16], batchnorm = true }'
STUDY = f"""
study = "t"

[[model]]
name = "cnn"
{CNN}
dataset = "digits"
optimizer = "sgd"
lr = 0.05
momentum = 0.9
batch_size = 64
epochs = 3
seed = 1
checkpoints = [0, 1, 2]

[[model]]
name = "mlp"
architecture = "mlp"
arch = {{ widths = [16], activation = "tanh" }}
dataset = "digits"
batch_size = 128
epochs = 2

[[model]]
name = "reg"
architecture = "mlp"
arch = {{ widths = [8] }}
dataset = "autompg"
lr = 0.01
batch_size = 32
epochs = 1

[[surface]]
models = ["reg"]
x = "-1:1:5"
metrics = ["loss"]

[[surface]]
models = ["cnn"]
x = "-1:1:5"
y = "-0.5:0.5:4"
tile = [2, 3]
subset = 200
bn = "eval"

[[surface]]
models = ["cnn"]
x = "-1:1:3"
y = "-1:1:3"
minibatches = 2
minibatch_size = 64
bn = "train"
pairs = 2

[[surface]]
models = ["mlp"]
x = "-1:1:7"
tile = 3

[[pca]]
model = "cnn"
x = "-2:2:3"
y = "-2:2:3"
"""


class Home:
    """A tracker installation in a temp folder: SQLite (or ``db_url``), Zarr, MLflow, all real."""

    def __init__(self, root: Path, db_url: str | None = None) -> None:
        self.root = root
        self.settings = resolve(db_url=db_url, home=root / ".tracker")
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.db = open_database(self.settings.db_url, check=False)
        migrated(self.db)  # a copy of a migrated template
        self.store = ArrayStore(self.settings.store_url)

    def enqueue(self, text: str) -> dict:
        path = self.root / "study.toml"
        path.write_text(textwrap.dedent(text))
        return enqueue_study(self.db, path)

    def config(self, **kw) -> WorkerConfig:
        return WorkerConfig(db_url=self.settings.db_url, store_url=self.settings.store_url,
                            mlflow_uri=self.settings.mlflow_uri, **kw)  # fmt: skip

    def drain(self, **kw) -> dict:
        return run_worker(self.config(**kw))

    def statuses(self) -> dict[str, int]:
        with self.db.session() as s:
            rows = s.execute(sa.select(Task.status, sa.func.count()).group_by(Task.status)).all()
        return dict(rows)


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Home:
    """The study above, enqueued and drained once for the tests that only read it."""
    home = Home(tmp_path_factory.mktemp("surfaces"))
    counts = home.enqueue(STUDY)
    assert counts["models_new"] == 3 and counts["surfaces_new"] == 6
    stats = home.drain()
    assert stats["failed"] == 0, home.statuses()
    assert home.statuses() == {"done": sum(home.statuses().values())}
    return home


def _vector(home: Home, s, array_id: int) -> torch.Tensor:
    ref = s.get(ArrayRef, array_id)
    return torch.from_numpy(home.store.read(ref.path).astype(np.float32))


def _by_hand(
    home: Home, surface_id: int, points: list[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Recompute grid points without the engine: build, load centre + a d1 + b d2, run."""
    with home.db.session() as s:
        surf = s.get(Surface, surface_id)
        ckpt = s.get(Checkpoint, surf.checkpoint_id)
        model_row = s.get(Model, ckpt.model_id)
        centre = _vector(home, s, ckpt.array_id)
        d1 = _vector(home, s, s.get(Direction, surf.x_direction_id).array_id)
        d2 = _vector(home, s, s.get(Direction, surf.y_direction_id).array_id)
        layout = ckpt.layout
        xs = np.linspace(surf.x_min, surf.x_max, surf.nx)
        ys = np.linspace(surf.y_min, surf.y_max, surf.ny)
        ds = data_mod.load_dataset(model_row.dataset, seed=0)
        x, y = ds.split(surf.split)
        if surf.subset_size:
            groups = [data_mod.fixed_subset(x, y, surf.subset_size, 0)]
        elif surf.n_minibatches:
            b = surf.minibatch_size
            groups = [
                (x[i * b : (i + 1) * b], y[i * b : (i + 1) * b]) for i in range(surf.n_minibatches)
            ]
        else:
            groups = [(x, y)]
        net = models_mod.build_model(model_row.architecture, model_row.arch_config,
                                     input_shape=ds.input_shape, num_classes=ds.num_classes,
                                     seed=99)  # fmt: skip
        bn = surf.bn_mode
    loss = np.zeros((len(groups), len(points)))
    acc = np.zeros_like(loss)
    for k, (i, j) in enumerate(points):
        theta = centre.double() + xs[i] * d1.double() + ys[j] * d2.double()
        for g, (gx, gy) in enumerate(groups):
            load_flat(net, theta.float(), layout)
            net.train(bn == "train")
            with torch.no_grad():
                out = net(gx)
            loss[g, k] = float(F.cross_entropy(out, gy))
            acc[g, k] = float((out.argmax(1) == gy).float().mean())
    return loss, acc


@pytest.mark.parametrize("bn", ["eval", "train"])
def test_stored_surface_equals_an_independent_recomputation(done: Home, bn: str) -> None:
    with done.db.session() as s:
        sid = s.scalar(sa.select(Surface.id).where(Surface.bn_mode == bn, Surface.ny.is_not(None),
                                                   Surface.split == "train").order_by(Surface.id))  # fmt: skip
        data = load_surface(s, done.store, sid)
    points = [(0, 0), (data.surface.nx - 1, data.surface.ny - 1), (data.surface.nx // 2, 1)]
    loss, acc = _by_hand(done, sid, points)
    for k, (i, j) in enumerate(points):
        np.testing.assert_allclose(data.loss[:, j, i], loss[:, k], rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(data.acc[:, j, i], acc[:, k], atol=1e-6)


def test_rows_arrays_and_summaries_are_complete(done: Home) -> None:
    with done.db.session() as s:
        surfaces = s.scalars(sa.select(Surface).order_by(Surface.id)).all()
        assert len(surfaces) == 6
        reg = surfaces[0]
        data = load_surface(s, done.store, reg.id)
        assert np.isnan(data.acc).all() and np.isfinite(data.loss).all()  # MSE, no accuracy
        for surf in surfaces:
            assert surf.completed_at is not None and surf.loss_array_id and surf.acc_array_id
            data = load_surface(s, done.store, surf.id)
            groups = surf.n_minibatches or 1
            assert data.loss.shape == (groups, surf.ny or 1, surf.nx)
            assert np.isfinite(data.loss).all()
            assert surf.id == reg.id or np.isfinite(data.acc).all()
            z = data.loss.mean(axis=0)
            assert surf.min_loss == pytest.approx(float(z.min()), rel=1e-6)
            # The centre (0, 0) is a grid point of every surface here but the 4-row one.
            if surf.ny is None:
                assert surf.centre_loss == pytest.approx(float(z[0, surf.nx // 2]), rel=1e-6)
            assert surf.rise_r050 is not None and surf.flatness_width is not None
            tiles = s.scalar(sa.select(sa.func.count()).select_from(Task).where(
                Task.kind == "surface.tile", Task.payload["surface_id"].as_integer() == surf.id))  # fmt: skip
            nx_t = -(-surf.nx // surf.tile_nx)
            ny_t = -(-(surf.ny or 1) // (surf.tile_ny or 1))
            assert tiles == nx_t * ny_t
        # One grid per minibatch: the two minibatches give different surfaces.
        mb = next(x for x in surfaces if x.n_minibatches == 2)
        data = load_surface(s, done.store, mb.id)
        assert not np.allclose(data.loss[0], data.loss[1])


def test_checkpoints_and_the_mlflow_run(done: Home) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(done.settings.mlflow_uri)
    with done.db.session() as s:
        model = s.scalar(sa.select(Model).where(Model.name == "cnn"))
        ckpts = s.scalars(sa.select(Checkpoint).where(Checkpoint.model_id == model.id).order_by(Checkpoint.epoch)).all()  # fmt: skip
        assert [c.epoch for c in ckpts] == [0, 1, 2, 3]
        assert all(c.array_id is not None and c.train_loss is not None for c in ckpts)
        assert ckpts[-1].train_loss < ckpts[0].train_loss
        assert model.test_acc == pytest.approx(ckpts[-1].test_acc)
        run = client.get_run(model.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["tracker.model_id"] == str(model.id)
    assert run.data.tags["tracker.study"] == "t"
    assert run.data.params["batch_size"] == "64"
    history = client.get_metric_history(run.info.run_id, "test_acc")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]


def test_pca_directions_and_projection(done: Home) -> None:
    with done.db.session() as s:
        d0, d1 = s.scalars(sa.select(Direction).where(Direction.kind == "pca").order_by(Direction.pca_component)).all()  # fmt: skip
        assert 0 < d1.explained_variance <= d0.explained_variance <= 1
        a = _vector(done, s, d0.array_id)
        b = _vector(done, s, d1.array_id)
        assert float(a @ b) == pytest.approx(0.0, abs=1e-4)
        surf = s.scalar(sa.select(Surface).where(Surface.x_direction_id == d0.id))
        data = load_surface(s, done.store, surf.id)
    assert data.trajectory is not None
    assert data.trajectory[:, 0].tolist() == [0, 1, 2, 3]
    # The final checkpoint is the centre: it projects to the origin.
    np.testing.assert_allclose(data.trajectory[-1, 1:], [0.0, 0.0], atol=1e-5)


def test_enqueueing_the_same_study_again_changes_nothing(done: Home) -> None:
    before = done.statuses()
    counts = done.enqueue(STUDY)
    assert counts["models_new"] == 0 and counts["surfaces_new"] == 0
    assert done.statuses() == before


def _worker_process(home: Home, kinds: list[str], lease: float) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        from tracker._worker import WorkerConfig, run_worker
        run_worker(WorkerConfig(db_url={home.settings.db_url!r}, store_url={home.settings.store_url!r},
                                mlflow_uri={home.settings.mlflow_uri!r}, kinds={tuple(kinds)!r},
                                lease_seconds={lease}, max_batch=1))
    """)
    env = dict(os.environ, TRACKER_TORCH_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


RESUME = f"""
study = "resume"
[[model]]
name = "cnn"
{CNN}
dataset = "digits"
batch_size = 64
epochs = 1
[[surface]]
x = "-1:1:12"
y = "-1:1:12"
tile = [2, 2]
"""


def _surface_loss(home: Home) -> np.ndarray:
    with home.db.session() as s:
        sid = s.scalar(sa.select(Surface.id))
        return load_surface(s, home.store, sid).loss


def test_a_killed_worker_resumes_to_bitwise_equal_values(tmp_path: Path) -> None:
    clean = Home(tmp_path / "clean")
    clean.enqueue(RESUME)
    assert clean.drain()["failed"] == 0
    expected = _surface_loss(clean)

    home = Home(tmp_path / "killed")
    home.enqueue(RESUME)
    home.drain(kinds=("train", "direction"))

    def tiles_done() -> int:
        with home.db.session() as s:
            return s.scalar(sa.select(sa.func.count()).select_from(Task).where(
                Task.kind == "surface.tile", Task.status == "done"))  # fmt: skip

    proc = _worker_process(home, ["surface.tile"], lease=1.0)
    try:
        _wait(lambda: tiles_done() >= 3, 120, "the worker to finish some tiles")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    left = 36 - tiles_done()
    assert left > 0, "the worker finished every tile before it was killed: make the grid bigger"
    stats = home.drain(lease_seconds=1.0)
    assert stats["failed"] == 0
    got = _surface_loss(home)
    assert got.tobytes() == expected.tobytes()


def test_a_killed_training_leaves_a_failed_mlflow_run(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    home = Home(tmp_path)
    home.enqueue("""
        study = "kill"
        [[model]]
        name = "slow"
        architecture = "mlp"
        arch = { widths = [256, 256] }
        dataset = "mnist5k"
        batch_size = 8
        epochs = 20
    """)

    def run_id() -> str | None:
        with home.db.session() as s:
            return s.scalar(sa.select(Model.mlflow_run_id))

    proc = _worker_process(home, ["train"], lease=1.0)
    try:
        _wait(lambda: run_id() is not None, 120, "the training run to start")
        first = run_id()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    client = MlflowClient(home.settings.mlflow_uri)
    assert client.get_run(first).info.status == "RUNNING"  # nobody closed it: the worker died
    # The next attempt closes the dead run as FAILED and trains in a new one. Fewer epochs
    # would change the spec, so cut this attempt short by lowering max_tasks: run it fully.
    with home.db.session() as s:
        # Keep the retry short: one epoch of 8 steps (500 steps at the first attempt's 8).
        s.execute(sa.update(Model).values(epochs=1, batch_size=500))
    assert home.drain(lease_seconds=1.0)["failed"] == 0
    assert client.get_run(first).info.status == "FAILED"
    second = run_id()
    assert second != first and client.get_run(second).info.status == "FINISHED"


@pytest.mark.postgres
def test_a_study_drains_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    home = Home(tmp_path, db_url=pg_url)
    home.enqueue(f"""
        study = "pg"
        [[model]]
        name = "cnn"
        {CNN}
        dataset = "digits"
        epochs = 1
        [[surface]]
        x = "-1:1:6"
        y = "-1:1:5"
        tile = [3, 2]
        subset = 100
        bn = "train"
    """)
    stats = home.drain()
    with home.db.session() as s:
        errors = s.scalars(sa.select(Task.error).where(Task.status == "failed")).all()
    assert stats["failed"] == 0, errors
    assert set(home.statuses()) == {"done"}
    with home.db.session() as s:
        surf = s.scalar(sa.select(Surface))
        data = load_surface(s, home.store, surf.id)
        assert surf.completed_at is not None and surf.flatness_width is not None
    assert data.loss.shape == (1, 5, 6) and np.isfinite(data.loss).all()


def test_seed001_panel_and_pca_plots_are_drawn(done: Home, tmp_path: Path) -> None:
    from tracker.surfaces.cli import plot_panel_files as _plot_panel
    from tracker.surfaces.cli import plot_surface_files

    with done.db.session() as s:
        pair_ids = s.scalars(sa.select(Surface.id).where(Surface.n_minibatches == 2).order_by(Surface.id)).all()  # fmt: skip
        assert len(pair_ids) == 2  # two direction pairs, each with a grid per minibatch
        files = _plot_panel(s, done.store, list(pair_ids), tmp_path, True, False)
        pca = s.scalar(sa.select(Surface.id).join(Direction, Direction.id == Surface.x_direction_id).where(Direction.kind == "pca"))  # fmt: skip
        files += plot_surface_files(load_surface(s, done.store, pca), tmp_path, ["contour"])
    assert sorted(p.suffix for p in files) == [".pdf", ".pdf", ".png", ".png"]
    assert all(p.stat().st_size > 1000 for p in files)


THREADED = """
study = "threads"

[[model]]
name = "mlp"
architecture = "mlp"
arch = { widths = [32] }
dataset = "digits"
batch_size = 128
epochs = 1

[[surface]]
models = ["mlp"]
x = "-1:1:12"
y = "-1:1:12"
tile = [3, 2]
"""


def test_threaded_loops_share_no_evaluator_and_give_the_engines_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tracker work`'s default in-process loops take tiles of one surface at the same time;
    each loop evaluates on its own working copy, so the stored grid is bitwise what the engine
    gives for the whole grid at once (a shared evaluator mixed the loops' points: negative
    cross-entropies in `tracker demo`)."""
    from compute.engine import SurfaceEvaluator
    from tracker._work import work

    monkeypatch.setattr(os, "cpu_count", lambda: 3)  # three loops, whatever the machine has
    monkeypatch.setenv("TRACKER_TORCH_THREADS", "1")
    home = Home(tmp_path)
    home.enqueue(THREADED)
    summary = work(home.settings, progress=False, quiet=True)
    assert summary.failed == 0 and summary.workers == 3, summary
    with home.db.session() as s:
        data = load_surface(s, home.store, s.scalar(sa.select(Surface.id)))
        ckpt = s.get(Checkpoint, data.surface.checkpoint_id)
        centre = _vector(home, s, ckpt.array_id)
        dirs = [_vector(home, s, s.get(Direction, d).array_id)
                for d in (data.surface.x_direction_id, data.surface.y_direction_id)]  # fmt: skip
        layout = ckpt.layout
    ds = data_mod.load_dataset("digits", seed=0)
    net = models_mod.build_model("mlp", {"widths": [32]}, input_shape=ds.input_shape,
                                 num_classes=ds.num_classes, seed=7)  # fmt: skip
    evaluator = SurfaceEvaluator(net, layout, centre, dirs, [ds.split("train")],
                                 loss="cross_entropy", bn_mode="eval", device="cpu")  # fmt: skip
    gx, gy = np.meshgrid(data.xs, data.ys)
    whole = evaluator.evaluate(np.column_stack([gx.ravel(), gy.ravel()]))
    stored = data.loss[0].ravel()
    assert stored.min() > 0
    np.testing.assert_array_equal(stored, whole["loss"][0].astype(stored.dtype))
