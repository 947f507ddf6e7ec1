"""Curvature of retrained networks (issue 15: "trained, imported, retrained"): `tracker enqueue
hessian --retrains` measures saves of jump-and-retrain trajectories, waits for unfinished
retrains, and one real `tracker work` fills rows that equal exact Hessians at the stored
trajectory weights; the rows stay out of the per-epoch plots and the meta-analysis, go with
their retrain, and bad requests write nothing."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
import torch
from cli_support import run_tracker, tracker_env
from hessian_support import exact_cross_entropy_hessian
from schema_support import migrated

from compute import data as data_mod
from compute.state import load_flat
from compute.train import TrainSpec
from tracker._config import resolve
from tracker._db import open_database
from tracker._schema import ArrayRef, Checkpoint, Direction, HessianSpectrum, Model, Retrain, Task
from tracker._store import ArrayStore

SUBSET = 300
PARAMS = 64 * 4 + 4 + 4 * 10 + 10  # 310: the digits MLP [4]


class Home:
    def __init__(self, root: Path) -> None:
        self.settings = resolve(home=root / ".tracker")
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.db = open_database(self.settings.db_url, check=False)
        migrated(self.db)  # a copy of a migrated template
        self.env = tracker_env(root)
        self.store = ArrayStore(self.settings.store_url)
        self.ids: dict[str, Any] = {}

    def cli(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        """`tracker ARGV` in this process (cheaper than a process)."""
        from tracker.cli import main

        capsys.readouterr()
        code = main(["--db", self.settings.db_url, "--store", self.settings.store_url,
                     "--home", str(self.settings.home), *argv])  # fmt: skip
        out = capsys.readouterr()
        return code, out.out, out.err

    def count(self, cls: type) -> int:
        with self.db.session() as s:
            return int(s.scalar(sa.select(sa.func.count()).select_from(cls)))


def _ids(out: str) -> list[int]:
    return [int(i) for i in out.split("spectra ")[1].split(" ")[0].split(",")]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    """A tanh MLP, two retrains of it, their spectra enqueued before anything ran, and one
    real `tracker work` for all of it."""
    h = Home(tmp_path_factory.mktemp("retrained"))

    def cli(*argv: str) -> str:
        import contextlib
        import io

        from tracker.cli import main

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = main(["--db", h.settings.db_url, "--store", h.settings.store_url,
                         "--home", str(h.settings.home), *argv])  # fmt: skip
        assert code == 0, argv
        return buf.getvalue()

    cli("enqueue", "model", "--name", "mlp", "--arch", "mlp", "--widths", "4", "--activation",
        "tanh", "--dataset", "digits", "--epochs", "2", "--batch-size", "64", "--study", "rt")  # fmt: skip
    cli("enqueue", "retrain", "--model", "mlp", "--seeds", "0-1", "--steps", "0.5",
        "--epochs", "1", "--saves-per-epoch", "2", "--batch-size", "64")  # fmt: skip
    exact = ["enqueue", "hessian", "--model", "mlp", "--retrains", "all", "--subset",
             str(SUBSET), "--top-k", "2", "--trace", "--probes", "200", "--max-iter",
             str(PARAMS), "--tol", "1e-6"]  # fmt: skip
    h.ids["last"] = _ids(cli(*exact))
    h.ids["again"] = _ids(cli(*exact))  # the same request finds the same rows
    h.ids["all_saves"] = _ids(cli("enqueue", "hessian", "--model", "mlp", "--retrains", "all",
                                  "--saves", "all", "--subset", str(SUBSET), "--top-k", "1",
                                  "--study", "saves"))  # fmt: skip
    # The model's own final checkpoint, for the meta-analysis and the per-epoch plot.
    h.ids["own"] = _ids(cli("enqueue", "hessian", "--model", "mlp", "--subset", str(SUBSET),
                            "--top-k", "1"))  # fmt: skip
    with h.db.session() as s:
        h.ids["waiting"] = sorted(set(s.scalars(
            sa.select(Task.status).join(HessianSpectrum, HessianSpectrum.task_id == Task.id)
            .where(HessianSpectrum.id.in_(h.ids["last"]))
        )))  # fmt: skip
    work = run_tracker("work", "--no-progress", env=h.env, timeout=900)
    assert work.returncode == 0, work.stderr[-3000:]
    with h.db.session() as s:
        failed = s.execute(sa.select(Task.kind, Task.error).where(Task.status != "done")).all()
    assert failed == [], failed
    return h


def _rows(h: Home, ids: list[int]) -> list[HessianSpectrum]:
    with h.db.session() as s:
        rows = [s.get(HessianSpectrum, i) for i in ids]
        for r in rows:
            s.expunge(r)
    return rows


def _trajectory_weights(h: Home, retrain_id: int, save: int) -> tuple[torch.Tensor, Any, Any]:
    with h.db.session() as s:
        r = s.get(Retrain, retrain_id)
        path = s.get(ArrayRef, r.trajectory_array_id).path
        ckpt = s.get(Checkpoint, r.checkpoint_id)
        spec = TrainSpec.from_row(s.get(Model, r.model_id))
        layout = ckpt.layout
    weights = torch.from_numpy(h.store.read(path)[save].astype(np.float32))
    return weights, layout, spec


def _exact(h: Home, retrain_id: int, save: int) -> np.ndarray:
    """The Hessian of the mean cross-entropy on the subset at the trajectory's save, float64."""
    weights, layout, spec = _trajectory_weights(h, retrain_id, save)
    ds = spec.load_data()
    net = spec.build(ds)
    load_flat(net, weights, layout)
    net = net.double().eval()
    x, y = data_mod.fixed_subset(*ds.split("train"), SUBSET, 0)
    return exact_cross_entropy_hessian(net, x.double(), y)


def test_spectra_wait_for_the_retrains_and_equal_exact_hessians_at_their_last_save(
    home: Home,
) -> None:
    assert home.ids["waiting"] == ["waiting"]  # enqueued before the retrains ran
    assert home.ids["again"] == home.ids["last"]
    rows = _rows(home, home.ids["last"])
    assert sorted((r.retrain_id, r.measure) for r in rows) == sorted(
        (rid, m) for rid in {r.retrain_id for r in rows} for m in ("eigen", "trace")
    )
    assert len({r.retrain_id for r in rows}) == 2
    with home.db.session() as s:
        origin = {r.id: (r.checkpoint_id, s.get(Checkpoint, r.checkpoint_id).epoch)
                  for r in s.scalars(sa.select(Retrain))}  # fmt: skip
        # No eigenvector directions: surfaces centre on checkpoints, not on retrained networks.
        assert s.scalar(sa.select(sa.func.count()).select_from(Direction).where(
            Direction.hessian_spectrum_id.in_(home.ids["last"]))) == 0  # fmt: skip
    seen = set()
    for r in rows:
        assert r.save_index == 2  # 1 epoch x 2 saves per epoch, after the jump (save 0)
        assert (r.checkpoint_id, r.epoch) == origin[r.retrain_id]
        assert r.completed_at is not None
        assert (r.eigenvectors_array_id is not None) == (r.measure == "eigen")
        key = (r.retrain_id, r.save_index)
        if key in seen:
            continue
        seen.add(key)
        exact = np.linalg.eigvalsh(_exact(home, r.retrain_id, r.save_index))
        mine = {x.measure: x for x in rows if (x.retrain_id, x.save_index) == key}
        top = np.asarray(mine["eigen"].eigenvalues)
        np.testing.assert_allclose(top, exact[::-1][:2], rtol=1e-4)
        trace = mine["trace"]
        assert abs(trace.trace - exact.sum()) <= 4 * trace.trace_stderr
    # The two retrains' networks differ, and so do their curvatures.
    tops = {r.retrain_id: r.top_eigenvalue for r in rows if r.measure == "eigen"}
    assert len(set(tops.values())) == 2


def test_every_save_is_measured_and_save_zero_is_the_jump(home: Home) -> None:
    rows = _rows(home, home.ids["all_saves"])
    assert sorted((r.retrain_id, r.save_index) for r in rows) == sorted(
        (rid, i) for rid in {r.retrain_id for r in rows} for i in range(3)
    )
    # Save 0 is the jump itself: the trajectory's first row is theta* + step * direction.
    first = min(rows, key=lambda r: (r.retrain_id, r.save_index))
    weights, _, _ = _trajectory_weights(home, first.retrain_id, 0)
    exact = np.linalg.eigvalsh(_exact(home, first.retrain_id, 0))
    assert first.top_eigenvalue == pytest.approx(exact[-1], rel=1e-3)
    assert torch.isfinite(weights).all()


def test_measures_go_to_the_retrains_mlflow_run_at_the_save_step(home: Home) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=home.settings.mlflow_uri)
    for r in _rows(home, home.ids["last"]):
        if r.measure != "eigen":
            continue
        with home.db.session() as s:
            run_id = s.get(Retrain, r.retrain_id).mlflow_run_id
        history = client.get_metric_history(run_id, "hessian.top_eigenvalue")
        # Step = the save: this request's last save, and every save of the --saves all one.
        assert {m.step for m in history} == {0, 1, 2}
        assert any(m.step == 2 and m.value == pytest.approx(r.top_eigenvalue) for m in history)
        assert r.config["mlflow_logged"] is True


def test_show_names_the_retrain_and_plots_keep_to_checkpoints(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    from tracker.curvature.results import model_spectra, top_k_over_training

    row = _rows(home, home.ids["last"])[0]
    code, out, err = home.cli(capsys, "show", "hessian", str(row.id))
    assert code == 0, err
    assert f"retrain {row.retrain_id} save 2 (jumped from epoch {row.epoch})" in out
    code, out, err = home.cli(capsys, "show", "hessian", "--model", str(row.model_id))
    assert code == 0, err
    assert "retrain" in out.splitlines()[0] and "save" in out.splitlines()[0]
    with home.db.session() as s:
        spectra = model_spectra(s, row.model_id)
    epochs, values = top_k_over_training(spectra)
    own = _rows(home, home.ids["own"])[0]
    assert epochs.tolist() == [own.epoch]
    assert values[0, 0] == pytest.approx(own.top_eigenvalue)
    code, out, err = home.cli(capsys, "show", "study", "rt")
    assert code == 0, err
    assert "retrain saves" in out


def test_loss_checks_load_the_data_once_and_name_a_diverged_save(
    home: Home, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--retrains all --saves all` checks the loss at every save before it commits: the
    model's data set is loaded once for all of them, and a save whose weights diverged is
    refused by retrain and save, with nothing written."""
    loads: list[str] = []
    original = TrainSpec.load_data

    def counted(spec: TrainSpec) -> Any:
        loads.append(spec.dataset)
        return original(spec)

    monkeypatch.setattr(TrainSpec, "load_data", counted)
    code, out, err = home.cli(capsys, "enqueue", "hessian", "--model", "mlp", "--retrains",
                              "all", "--saves", "all", "--subset", str(SUBSET), "--trace",
                              "--study", "loss-checks")  # fmt: skip
    assert code == 0, err
    assert len(_ids(out)) == 12  # (top-k, trace) x 2 retrains x 3 saves: 6 weights checked
    assert loads == ["digits"]

    with home.db.session() as s:
        retrain = s.scalars(sa.select(Retrain).order_by(Retrain.id)).first()
        rid, good = retrain.id, retrain.trajectory_array_id
        path = s.get(ArrayRef, good).path
    trajectory = home.store.read(path).copy()
    trajectory[1] = np.nan  # save 1 diverged
    bad = home.store.write("test/nan-trajectory", trajectory)
    with home.db.session() as s:
        ref = ArrayRef(path=bad.path, shape=list(bad.shape), dtype=bad.dtype,
                       chunks=list(bad.chunks))  # fmt: skip
        s.add(ref)
        s.flush()
        s.get(Retrain, rid).trajectory_array_id = ref.id
        s.commit()
    try:
        spectra, tasks = home.count(HessianSpectrum), home.count(Task)
        code, _, err = home.cli(capsys, "enqueue", "hessian", "--model", "mlp", "--retrains",
                                str(rid), "--saves", "all", "--subset", str(SUBSET),
                                "--top-k", "1", "--study", "diverged")  # fmt: skip
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert f"retrain {rid}, save 1" in lines[0] and "finite loss" in lines[0], lines[0]
        assert (home.count(HessianSpectrum), home.count(Task)) == (spectra, tasks)
    finally:
        with home.db.session() as s:
            s.get(Retrain, rid).trajectory_array_id = good
            s.commit()


def test_the_meta_analysis_reads_only_the_checkpoints_spectra(home: Home) -> None:
    from tracker.meta.rows import curvature_samples

    with home.db.session() as s:
        study_id = s.scalar(sa.select(Model.study_id))
        samples = list(curvature_samples(s, home.store, study_id))
    sources = {x.source for x in samples}
    assert sources == {f"hessian_spectrum:{i}" for i in home.ids["own"]}


@pytest.fixture
def fresh(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Home:
    """A model with one retrain, nothing run."""
    h = Home(tmp_path)
    for argv in (
        ["enqueue", "model", "--name", "mlp", "--arch", "mlp", "--widths", "4", "--dataset",
         "digits", "--epochs", "1", "--study", "bad"],
        ["enqueue", "model", "--name", "other", "--arch", "mlp", "--widths", "5", "--dataset",
         "digits", "--epochs", "1", "--study", "bad"],
        ["enqueue", "retrain", "--model", "mlp", "--seeds", "0", "--steps", "0.5", "--epochs",
         "1"],
    ):  # fmt: skip
        code, _, err = h.cli(capsys, *argv)
        assert code == 0, err
    return h


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "mlp", "--retrains", "all", "--epochs", "0"], "give one of them"),
        (["--model", "mlp", "--saves", "all"], "add --retrains all"),
        (["--model", "mlp", "--retrains", "all", "--saves", "7"], "ask for saves below 2"),
        (["--model", "mlp", "--retrains", "99"], "are not retrains of model 1"),
        (["--model", "other", "--retrains", "all"], "model 2 has no retrains"),
        (["--model", "mlp", "--retrains", "1,x"], "is not all or retrain ids"),
        (["--model", "mlp", "--retrains", "all", "--saves", "-1"], "is not last, all or save"),
    ],
)
def test_bad_retrain_requests_are_one_line_and_write_nothing(
    fresh: Home, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    tasks, spectra = fresh.count(Task), fresh.count(HessianSpectrum)
    code, _, err = fresh.cli(capsys, "enqueue", "hessian", *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert message in err and "Traceback" not in err
    assert (fresh.count(Task), fresh.count(HessianSpectrum)) == (tasks, spectra)


def test_a_study_files_hessian_table_measures_the_files_own_retrains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h = Home(tmp_path)
    study = tmp_path / "rt.toml"
    study.write_text(
        textwrap.dedent("""
        study = "rt-file"

        [[model]]
        name = "mlp"
        architecture = "mlp"
        arch = { widths = [4] }
        dataset = "digits"
        epochs = 1

        [[retrain]]
        model = "mlp"
        seeds = [0, 1]
        steps = [0.5]
        epochs = 1

        [[hessian]]
        models = ["mlp"]
        retrains = "all"
        saves = "all"
        top_k = 1
    """)
    )
    code, _, err = h.cli(capsys, "enqueue", str(study))
    assert code == 0, err
    with h.db.session() as s:
        rows = s.scalars(sa.select(HessianSpectrum)).all()
        retrains = {r.id: r.task_id for r in s.scalars(sa.select(Retrain))}
        parents = {
            r.retrain_id: set(s.scalars(sa.text(
                "SELECT depends_on_id FROM task_dependencies WHERE task_id = :c"
            ).bindparams(c=r.task_id)))
            for r in rows
        }  # fmt: skip
    assert sorted((r.retrain_id, r.save_index) for r in rows) == [
        (rid, i) for rid in sorted(retrains) for i in range(2)
    ]
    assert all(parents[rid] == {task} for rid, task in retrains.items())
    bad = study.read_text().replace('saves = "all"', 'saves = "first"')
    study.write_text(bad)
    code, _, err = h.cli(capsys, "enqueue", str(study))
    assert code == 2 and 'saves in [[hessian]] number 1 must be "last" or "all"' in err


def test_deleting_a_retrain_deletes_its_spectra_and_their_tasks(
    fresh: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = fresh.cli(capsys, "enqueue", "hessian", "--model", "mlp", "--retrains",
                               "all", "--saves", "all", "--trace")  # fmt: skip
    assert code == 0, err
    spectra = _ids(out)
    assert len(spectra) == 4  # 2 saves x (eigen, trace)
    with fresh.db.session() as s:
        rid = s.scalar(sa.select(Retrain.id))
        tasks = set(s.scalars(sa.select(HessianSpectrum.task_id)))
    code, _, err = fresh.cli(capsys, "delete", "retrains", str(rid))
    assert code == 0, err
    assert fresh.count(HessianSpectrum) == 0
    with fresh.db.session() as s:
        assert not set(s.scalars(sa.select(Task.id).where(Task.id.in_(tasks))))
