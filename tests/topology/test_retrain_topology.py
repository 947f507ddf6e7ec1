"""Jump-and-retrain topology end to end: study file -> `tracker work` -> rows, Zarr, MLflow,
plots; a killed retrain; bad requests; the same study on PostgreSQL."""

from __future__ import annotations

import os
import re
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
from cli_support import run_tracker, tracker_env
from schema_support import migrated
from sqlalchemy.orm import Session

from tracker._config import resolve
from tracker._db import open_database
from tracker._schema import (
    ArrayRef,
    Checkpoint,
    Direction,
    Embedding,
    Model,
    PersistenceDiagram,
    Retrain,
    Task,
    TrajectoryPoint,
)
from tracker._store import ArrayStore
from tracker.topology.rows import retrain_dir

STUDY = """
study = "topo"

[[model]]
name = "mlp"
architecture = "mlp"
arch = {{ widths = [16] }}
dataset = "digits"
lr = 0.1
momentum = 0.9
batch_size = 64
epochs = {base_epochs}

[[retrain]]
model = "mlp"
seeds = "0-1"
steps = [0.5, 1.0]
epochs = {epochs}
lr = 0.01
batch_size = {batch}

[[topology]]
model = "mlp"
loss = "test"
knn = 4
"""


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr[-3000:])
    err = result.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


class Home:
    def __init__(self, root: Path, db_url: str | None = None) -> None:
        self.root = root
        self.env = tracker_env(root, db_url=db_url)
        self.settings = resolve(db_url=db_url, home=root / ".tracker")
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.db = open_database(self.settings.db_url, check=False)
        migrated(self.db)  # a copy of a migrated template
        self.store = ArrayStore(self.settings.store_url)

    def study(self, text: str) -> Path:
        path = self.root / "study.toml"
        path.write_text(textwrap.dedent(text))
        return path

    def tracker(self, *args: str) -> subprocess.CompletedProcess:
        return run_tracker(*args, env=self.env)

    def trajectory(self, s: Session, retrain_id: int) -> np.ndarray:
        ref = s.get(ArrayRef, s.get(Retrain, retrain_id).trajectory_array_id)
        return self.store.read(ref.path)


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Home:
    """The small study (2 seeds x 2 steps x 3 epochs) enqueued and drained by `tracker work`."""
    home = Home(tmp_path_factory.mktemp("topo"))
    path = home.study(STUDY.format(base_epochs=3, epochs=3, batch=64))
    from tracker.studyfile import enqueue_study

    enqueue_study(home.db, path)  # in this process: a CLI process would import torch again
    out = _ok(home.tracker("work", "--no-progress"))
    assert "failed 0" in out
    return home


def test_rows_arrays_and_mlflow_runs_of_the_retrains(done: Home) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(done.settings.mlflow_uri)
    with done.db.session() as s:
        assert set(s.scalars(sa.select(Task.status))) == {"done"}
        model = s.scalar(sa.select(Model))
        retrains = s.scalars(sa.select(Retrain).order_by(Retrain.id)).all()
        assert sorted((r.seed, r.step_size) for r in retrains) == [(0, 0.5), (0, 1.0), (1, 0.5), (1, 1.0)]  # fmt: skip
        # One direction row per seed, shared by its step sizes: filter-normalised, biasbn off.
        dirs = {r.seed: s.get(Direction, r.direction_id) for r in retrains}
        assert len({d.id for d in dirs.values()}) == 2
        assert all(d.normalization == "filter" and d.ignore == "biasbn" for d in dirs.values())
        layout = s.get(Checkpoint, retrains[0].checkpoint_id).layout
        theta = done.store.read(s.get(ArrayRef, s.get(Checkpoint, retrains[0].checkpoint_id).array_id).path)  # fmt: skip
        for r in retrains:
            ref = s.get(ArrayRef, r.trajectory_array_id)
            assert tuple(ref.shape) == (4, len(theta)) and ref.chunks[0] == 1
            points = s.scalars(sa.select(TrajectoryPoint).where(TrajectoryPoint.retrain_id == r.id).order_by(TrajectoryPoint.save_index)).all()  # fmt: skip
            assert [(p.save_index, p.epoch) for p in points] == [(i, float(i)) for i in range(4)]
            assert all(p.train_loss is not None and p.test_acc is not None for p in points)
            assert all(p.val_loss is None for p in points)  # the data set has no validation split
            traj = done.trajectory(s, r.id)
            d = done.store.read(s.get(ArrayRef, dirs[r.seed].array_id).path)
            # Save 0 is the jump; the running statistics (none here) and biases do not move.
            np.testing.assert_allclose(traj[0], theta + r.step_size * d, atol=1e-6)
            bias = next(e for e in layout if len(e["shape"]) == 1)
            assert np.all(d[bias["offset"] : bias["offset"] + bias["size"]] == 0)
            run = client.get_run(r.mlflow_run_id)
            assert run.info.status == "FINISHED"
            assert run.data.tags["mlflow.parentRunId"] == model.mlflow_run_id
            assert run.data.tags["tracker.retrain_id"] == str(r.id)
            assert run.data.tags["tracker.task_id"] == str(r.task_id)
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "test_loss")) == [0, 1, 2, 3]  # fmt: skip


def test_embedding_equals_a_recomputation_from_the_stored_trajectories(done: Home) -> None:
    from compute.topology import phate_embedding, streamed_pca

    with done.db.session() as s:
        emb = s.scalar(sa.select(Embedding))
        order = done.store.read(s.get(ArrayRef, emb.order_array_id).path)
        coords = done.store.read(s.get(ArrayRef, emb.coords_array_id).path)
        potential = done.store.read(s.get(ArrayRef, emb.potential_array_id).path)
        layout = s.get(Checkpoint, s.scalar(sa.select(Retrain.checkpoint_id))).layout
        ids = emb.config["retrain_ids"]
        retrains = {r.id: r for r in s.scalars(sa.select(Retrain))}
        x = np.concatenate([done.trajectory(s, i) for i in ids])
        assert emb.n_samples == 16 and emb.t is not None and emb.t >= 1
    assert coords.shape == (16, 2) and potential.shape == (16, 16)
    # Sample order: seed, then step size, then epoch 0..3.
    assert order[:, 0].tolist() == [i for i in ids for _ in range(4)]
    assert order[:, 3].tolist() == [0.0, 1.0, 2.0, 3.0] * 4
    assert [(retrains[int(i)].seed, retrains[int(i)].step_size) for i in order[::4, 0]] == [(0, 0.5), (0, 1.0), (1, 0.5), (1, 1.0)]  # fmt: skip
    params = np.concatenate([np.arange(e["offset"], e["offset"] + e["size"]) for e in layout if e["kind"] == "param"])  # fmt: skip
    x = x[:, params]
    again = phate_embedding(streamed_pca(lambda c: x[:, c], 16, x.shape[1], 100).scores, emb.seed)
    assert again.t == emb.t
    np.testing.assert_allclose(again.potential, potential, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(again.coords, coords, rtol=1e-7, atol=1e-9)


def test_diagram_has_a_pair_per_sample_and_its_summaries(done: Home) -> None:
    from compute.topology import knn_edges, persistence_diagram, summarize_diagram

    with done.db.session() as s:
        row = s.scalar(sa.select(PersistenceDiagram))
        diagram = done.store.read(s.get(ArrayRef, row.diagram_array_id).path)
        emb = s.get(Embedding, row.embedding_id)
        potential = done.store.read(s.get(ArrayRef, emb.potential_array_id).path)
        order = done.store.read(s.get(ArrayRef, emb.order_array_id).path)
        losses = {(p.retrain_id, p.save_index): p.test_loss for p in s.scalars(sa.select(TrajectoryPoint))}  # fmt: skip
        columns = {k: getattr(row, k) for k in summarize_diagram(diagram)}
    assert row.loss_name == "test" and row.knn == 4 and not row.legacy
    assert (diagram[:, 2] == 0).sum() == emb.n_samples == row.h0_count
    assert (diagram[:, 0] <= diagram[:, 1]).all()
    assert columns == pytest.approx(summarize_diagram(diagram))
    values = np.array([losses[(int(r), int(i))] for r, i in zip(order[:, 0], order[:, 2], strict=True)])  # fmt: skip
    expected = persistence_diagram(values, knn_edges(potential, 4))
    assert diagram.tobytes() == expected.tobytes()


def _cli(home: Home, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`tracker ARGV` through cli.main in this process (torch is imported here already)."""
    from tracker.cli import main

    capsys.readouterr()
    code = main(["--db", home.settings.db_url, "--store", home.settings.store_url,
                 "--home", str(home.settings.home), *argv])  # fmt: skip
    out = capsys.readouterr()
    return code, out.out, out.err


def test_plots_and_idempotent_enqueue(done: Home, capsys: pytest.CaptureFixture[str]) -> None:
    from tracker.studyfile import enqueue_study

    with done.db.session() as s:
        before = s.scalar(sa.select(sa.func.count()).select_from(Task))
        eid = s.scalar(sa.select(Embedding.id))
        did = s.scalar(sa.select(PersistenceDiagram.id))
    counts = enqueue_study(done.db, done.root / "study.toml")
    assert counts["retrains_new"] == 0 and counts["topologies_new"] == 0
    code, out, _ = _cli(done, capsys, "enqueue", "topology", "--model", "mlp", "--knn", "4")
    assert code == 0 and f"embedding {eid}" in out and "already queued" in out
    with done.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Task)) == before
    files = _cli(done, capsys, "plot", "embedding", str(eid))[1].split()
    files += _cli(done, capsys, "plot", "persistence", str(did))[1].split()
    assert sorted(Path(f).suffix for f in files) == [".pdf", ".pdf", ".png", ".png"]
    assert all(Path(f).stat().st_size > 5000 for f in files)
    code, out, _ = _cli(done, capsys, "show", "study", "topo")
    assert code == 0 and "retrains:" in out and "persistence diagrams:" in out
    # The embedding row: id, model, 16 samples, PHATE seed 0, t, complete.
    assert re.search(rf"^{eid}\s+\d+\s+16\s+0\s+\d+\s+yes$", out, re.M), out


def test_plot_embedding_colour_choice_from_the_command_line(
    done: Home, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with done.db.session() as s:
        eid = s.scalar(sa.select(Embedding.id))
    # The command line's parsing and plots in this process (a process each would import
    # matplotlib and the plotting modules again); the refused choice below is a real process.
    for color, stem in (("loss", f"embedding-{eid}"), ("epoch", f"embedding-{eid}-epoch"),
                        ("seed", f"embedding-{eid}-seed")):  # fmt: skip
        code, out, err = _cli(done, capsys, "plot", "embedding", str(eid), "--color", color,
                              "--out", str(tmp_path))  # fmt: skip
        assert code == 0, err
        assert sorted(Path(f).name for f in out.split()) == [f"{stem}.pdf", f"{stem}.png"]
    bad = done.tracker("plot", "embedding", str(eid), "--color", "lr")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


BAD = [
    (["enqueue", "retrain", "--model", "mlp", "--steps", "0.5,0"], ["step size 0", "> 0"]),
    (["enqueue", "retrain", "--model", "mlp", "--steps", "-1"], ["step size -1"]),
    (["enqueue", "retrain", "--model", "99", "--steps", "1"], ["unknown model id 99"]),
    (["enqueue", "topology", "--model", "mlp", "--loss", "hinge"], ["unknown loss 'hinge'"]),
    (["enqueue", "topology", "--model", "mlp", "--loss", "val"], ["no validation split"]),
    (["enqueue", "topology", "--model", "mlp", "--knn", "16"], ["knn 16", "16 samples"]),
    (["plot", "embedding", "42"], ["unknown embedding id 42"]),
    (["plot", "persistence", "42"], ["unknown persistence diagram id 42"]),
]


def test_bad_requests_are_one_line_errors_and_write_nothing(
    done: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    with done.db.session() as s:
        before = s.scalar(sa.select(sa.func.count()).select_from(Task))
    for argv, needles in BAD:
        code, _, err = _cli(done, capsys, *argv)
        assert code == 2 and len(err.strip().splitlines()) == 1, (argv, err)
        assert all(n in err for n in needles), err
    # One as a real process: the message is all the user sees, no traceback.
    _one_line_error(done.tracker(*BAD[0][0]), *BAD[0][1])
    with done.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Task)) == before


def _worker(home: Home, lease: float) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        from tracker._worker import WorkerConfig, run_worker
        run_worker(WorkerConfig(db_url={home.settings.db_url!r}, store_url={home.settings.store_url!r},
                                mlflow_uri={home.settings.mlflow_uri!r}, kinds=("retrain",),
                                lease_seconds={lease}, max_batch=1))
    """)
    return subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, TRACKER_TORCH_THREADS="1"))  # fmt: skip


def test_a_killed_retrain_restarts_cleanly(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from compute.retrain import RetrainSpec, jump_and_retrain
    from compute.train import TrainSpec
    from tracker._worker import WorkerConfig, run_worker
    from tracker.studyfile import enqueue_study

    home = Home(tmp_path)
    study = STUDY.format(base_epochs=1, epochs=4, batch=32).replace('seeds = "0-1"', "seeds = [0]").replace("[0.5, 1.0]", "[0.5]")  # fmt: skip
    enqueue_study(home.db, home.study(study.split("[[topology]]")[0]))
    cfg = dict(db_url=home.settings.db_url, store_url=home.settings.store_url,
               mlflow_uri=home.settings.mlflow_uri)  # fmt: skip
    run_worker(WorkerConfig(**cfg, kinds=("train", "direction")))

    def started() -> str | None:
        with home.db.session() as s:
            return s.scalar(sa.select(Retrain.mlflow_run_id))

    with home.db.session() as s:
        r = s.scalar(sa.select(Retrain))
        chunk = Path(home.settings.store_url) / retrain_dir(r) / "trajectory" / "c" / "2" / "0"
    proc = _worker(home, lease=1.0)
    try:
        deadline = time.monotonic() + 120
        while not chunk.exists():  # killed once it has written save 2 of 5
            assert time.monotonic() < deadline and proc.poll() is None, (
                "the retrain never got going"
            )
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    first = started()
    with home.db.session() as s:
        assert s.scalar(sa.select(Task.status).where(Task.kind == "retrain")) == "running", "the retrain finished before it was killed: make it longer"  # fmt: skip
        assert s.scalar(sa.select(sa.func.count()).select_from(TrajectoryPoint)) == 0
    assert run_worker(WorkerConfig(**cfg, lease_seconds=1.0))["failed"] == 0
    client = MlflowClient(home.settings.mlflow_uri)
    with home.db.session() as s:
        r = s.scalar(sa.select(Retrain))
        points = s.execute(sa.select(TrajectoryPoint.save_index, TrajectoryPoint.test_loss).where(TrajectoryPoint.retrain_id == r.id).order_by(TrajectoryPoint.save_index)).all()  # fmt: skip
        ckpt = s.get(Checkpoint, r.checkpoint_id)
        theta = torch.from_numpy(home.store.read(s.get(ArrayRef, ckpt.array_id).path))
        d = torch.from_numpy(home.store.read(s.get(ArrayRef, s.get(Direction, r.direction_id).array_id).path))  # fmt: skip
        base = TrainSpec.from_row(s.get(Model, r.model_id))
        spec = RetrainSpec(seed=r.seed, step_size=r.step_size, epochs=r.epochs, lr=r.lr,
                           momentum=r.momentum, weight_decay=r.weight_decay, batch_size=r.batch_size)  # fmt: skip
        assert r.mlflow_run_id != first
        stored = home.trajectory(s, r.id)
    assert [i for i, _ in points] == list(range(5))  # every save once, none twice
    assert client.get_run(first).info.status == "FAILED"
    assert client.get_run(r.mlflow_run_id).info.status == "FINISHED"
    # The restarted run is the uninterrupted run, bit for bit.
    clean: list[np.ndarray] = []
    jump_and_retrain(base, spec, theta, d, ckpt.layout, on_save=lambda i, e, flat, m: clean.append(flat.copy()))  # fmt: skip
    assert stored.tobytes() == np.stack(clean).tobytes()


DIVERGING = """
[[model]]
name = "wild"
architecture = "mlp"
arch = { widths = [16] }
dataset = "digits"
epochs = 1
seed = 1

[[retrain]]
model = "wild"
seeds = [0]
steps = [0.5, 1.0]
epochs = 1
lr = 1e6

[[topology]]
model = "wild"
knn = 2
"""


@pytest.mark.postgres
def test_the_topology_study_drains_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    """The study on PostgreSQL, plus a model whose retrains diverge: their NaN losses are
    stored (JSONB refuses NaN in task results), and its embedding fails, naming them."""
    from tracker._worker import WorkerConfig, run_worker
    from tracker.studyfile import enqueue_study

    home = Home(tmp_path, db_url=pg_url)
    study = STUDY.format(base_epochs=1, epochs=1, batch=128).replace("knn = 4", "knn = 3")
    enqueue_study(home.db, home.study(study + DIVERGING))
    stats = run_worker(WorkerConfig(db_url=pg_url, store_url=home.settings.store_url,
                                    mlflow_uri=home.settings.mlflow_uri))  # fmt: skip
    with home.db.session() as s:
        failed = dict(s.execute(sa.select(Task.kind, Task.error).where(Task.status == "failed")).all())  # fmt: skip
        assert stats["failed"] == 1 and set(failed) == {"embedding", "persistence"}, failed
        wild = s.scalar(sa.select(Model.id).where(Model.name == "wild"))
        ids = s.scalars(sa.select(Retrain.id).where(Retrain.model_id == wild).order_by(Retrain.id)).all()  # fmt: skip
        assert f"retrain(s) {ids[0]}, {ids[1]} diverged" in failed["embedding"]
        losses = s.scalars(sa.select(TrajectoryPoint.test_loss).join(Retrain).where(Retrain.model_id == wild)).all()  # fmt: skip
        # Non-finite values are stored as NULL on both backends (issue 16).
        assert len(losses) == 4 and any(v is None for v in losses)
        row = s.scalar(sa.select(PersistenceDiagram).join(Embedding).where(Embedding.model_id != wild))  # fmt: skip
        assert row.h0_count == 8 and row.diagram_array_id is not None
        assert s.scalar(sa.select(sa.func.count()).select_from(TrajectoryPoint)) == 12
