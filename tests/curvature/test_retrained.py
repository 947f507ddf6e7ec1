"""Curvature of retrained networks (issue 15: "trained, imported, retrained"): `tracker enqueue
hessian --retrains` measures saves of jump-and-retrain trajectories, waits for unfinished
retrains, and one real `tracker work` fills rows that equal exact Hessians at the stored
trajectory weights; the rows stay out of the per-epoch plots and the meta-analysis, go with
their retrain, and bad requests write nothing. Their eigenvectors are directions: `tracker
enqueue surface --retrain R` runs a surface along them around the retrained network."""

from __future__ import annotations

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
from tracker._schema import (
    ArrayRef,
    Checkpoint,
    Direction,
    HessianSpectrum,
    Model,
    Retrain,
    Surface,
    Task,
)
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


def _main(h: Home, *argv: str) -> str:
    """`tracker ARGV` in this process; its standard output (a module fixture has no capsys)."""
    import contextlib
    import io

    from tracker.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["--db", h.settings.db_url, "--store", h.settings.store_url,
                     "--home", str(h.settings.home), *argv])  # fmt: skip
    assert code == 0, argv
    return buf.getvalue()


def _work(h: Home) -> None:
    """One real `tracker work` (a process), after which every task is done."""
    work = run_tracker("work", "--no-progress", env=h.env, timeout=900)
    assert work.returncode == 0, work.stderr[-3000:]
    with h.db.session() as s:
        failed = s.execute(sa.select(Task.kind, Task.error).where(Task.status != "done")).all()
    assert failed == [], failed


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    """A tanh MLP, two retrains of it, their spectra enqueued before anything ran, and one
    real `tracker work` for all of it."""
    h = Home(tmp_path_factory.mktemp("retrained"))

    def cli(*argv: str) -> str:
        return _main(h, *argv)

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
    _work(h)
    return h


def _path_of(s: Any, array_id: int) -> str:
    return s.get(ArrayRef, array_id).path


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


def _exact(h: Home, retrain_id: int, save: int, step: torch.Tensor | None = None) -> np.ndarray:
    """The Hessian of the mean cross-entropy on the subset at the trajectory's save (moved by
    ``step`` when given), float64."""
    weights, layout, spec = _trajectory_weights(h, retrain_id, save)
    if step is not None:
        weights = weights + step
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
        # One eigenvector direction per eigenvalue, stored as the row's eigenvectors are.
        directions = {
            (d.hessian_spectrum_id, d.eigen_index): (d.checkpoint_a_id, _path_of(s, d.array_id))
            for d in s.scalars(sa.select(Direction).where(
                Direction.hessian_spectrum_id.in_(home.ids["last"])))
        }  # fmt: skip
    eigen_rows = [r for r in rows if r.measure == "eigen"]
    assert sorted(directions) == sorted((r.id, i) for r in eigen_rows for i in range(2))
    for r in eigen_rows:
        with home.db.session() as s:
            vectors = home.store.read(_path_of(s, r.eigenvectors_array_id))
        for i in range(2):
            ckpt_id, path = directions[(r.id, i)]
            assert ckpt_id == r.checkpoint_id
            assert home.store.read(path).tobytes() == vectors[i].tobytes()
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

    row = next(r for r in _rows(home, home.ids["last"]) if r.measure == "eigen")
    code, out, err = home.cli(capsys, "show", "hessian", str(row.id))
    assert code == 0, err
    assert f"retrain {row.retrain_id} save 2 (jumped from epoch {row.epoch})" in out
    assert f"surface with --retrain {row.retrain_id} --save 2 --x-direction hessian:I" in out
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


def _surface_id(out: str) -> int:
    return int(out.split()[1])  # "surface 7 (new, 1 tile task(s)) in study ..."


@pytest.fixture(scope="module")
def around(home: Home) -> dict[str, Any]:
    """Surfaces along Hessian eigenvectors enqueued after the spectra ran: around the first
    retrain's last save (1D, and 2D along eigenvectors 0 and 1) and around the model's final
    checkpoint (the checkpoint the retrains jumped from, which also has newer retrain
    eigenvectors in the same study); an eigen measure from before retrained networks'
    eigenvectors were directions (its direction rows deleted) asked for again; then one more
    real `tracker work`."""
    ids: dict[str, Any] = {}
    eigen = [r for r in _rows(home, home.ids["last"]) if r.measure == "eigen"]
    spectrum = min(eigen, key=lambda r: r.retrain_id)
    ids["spectrum"] = spectrum
    grid = ["--subset", str(SUBSET), "--metrics", "loss"]
    ids["line"] = _surface_id(_main(
        home, "enqueue", "surface", "--model", "mlp", "--retrain", str(spectrum.retrain_id),
        "--x-direction", "hessian:0", "--x=-0.1:0.1:21", *grid))  # fmt: skip
    ids["plane"] = _surface_id(_main(
        home, "enqueue", "surface", "--model", "mlp", "--retrain", str(spectrum.retrain_id),
        "--save", "2", "--x-direction", "hessian:0", "--y-direction", "hessian:1",
        "--x=-0.1:0.1:3", "--y=-0.1:0.1:3", *grid))  # fmt: skip
    ids["map"] = _surface_id(_main(
        home, "enqueue", "surface", "--model", "mlp", "--retrain", str(spectrum.retrain_id),
        "--x-direction", "hessian:0", "--x=-0.1:0.1:3", "--curvature", "--curvature-tol", "1e-6",
        "--curvature-max-iter", str(PARAMS), *grid))  # fmt: skip
    ids["newer"] = _ids(_main(home, "enqueue", "hessian", "--model", "mlp", "--retrains", "all",
                              "--saves", "1", "--subset", str(SUBSET), "--top-k", "1"))  # fmt: skip
    ids["own_line"] = _surface_id(_main(
        home, "enqueue", "surface", "--model", "mlp", "--x-direction", "hessian:0",
        "--x=-0.1:0.1:21", *grid))  # fmt: skip
    # An eigen measure of revision 0015: done, no direction rows.
    old = min((r for r in _rows(home, home.ids["all_saves"]) if r.save_index == 0),
              key=lambda r: r.retrain_id)  # fmt: skip
    with home.db.session() as s:
        s.execute(sa.delete(Direction).where(Direction.hessian_spectrum_id == old.id))
        s.commit()
    again = _ids(_main(home, "enqueue", "hessian", "--model", "mlp", "--retrains", "all",
                       "--saves", "all", "--subset", str(SUBSET), "--top-k", "1",
                       "--study", "saves"))  # fmt: skip
    assert again == home.ids["all_saves"]
    with home.db.session() as s:
        ids["old"] = old
        ids["old_status"] = {
            r.id: s.get(Task, r.task_id).status for r in _rows(home, home.ids["all_saves"])
        }
    _work(home)
    return ids


def _surface(h: Home, sid: int) -> tuple[Surface, Direction, np.ndarray]:
    with h.db.session() as s:
        surface = s.get(Surface, sid)
        direction = s.get(Direction, surface.x_direction_id)
        loss = h.store.read(_path_of(s, surface.loss_array_id)).astype(np.float64)
        s.expunge_all()
    return surface, direction, loss


def test_a_surface_around_a_retrained_network_curves_by_its_top_eigenvalue(
    home: Home, around: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's eigenvector test at a retrained network: the 1D surface along the top
    eigenvector of the retrain's last save is centred on that save's weights (its centre loss
    is the loss there) and its second difference at 0 is the save's top eigenvalue (2%)."""
    spectrum = around["spectrum"]
    surface, direction, loss = _surface(home, around["line"])
    assert (surface.retrain_id, surface.save_index) == (spectrum.retrain_id, 2)
    assert surface.checkpoint_id == spectrum.checkpoint_id
    assert (direction.hessian_spectrum_id, direction.eigen_index) == (spectrum.id, 0)
    weights, layout, spec = _trajectory_weights(home, spectrum.retrain_id, 2)
    ds = spec.load_data()
    net = spec.build(ds)
    load_flat(net, weights, layout)
    x, y = data_mod.fixed_subset(*ds.split("train"), SUBSET, 0)
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(net.double().eval()(x.double()), y).item()
    f = loss[0, 0]
    mid = surface.nx // 2
    assert surface.centre_loss == pytest.approx(expected, rel=1e-5)
    assert f[mid] == pytest.approx(expected, rel=1e-5)
    step = (surface.x_max - surface.x_min) / (surface.nx - 1)
    for k in (1, 2):
        second = (f[mid + k] - 2 * f[mid] + f[mid - k]) / (k * step) ** 2
        assert second == pytest.approx(spectrum.eigenvalues[0], rel=0.02), (k, second)
    plane, x_direction, grid = _surface(home, around["plane"])
    assert x_direction.id == direction.id
    with home.db.session() as s:
        y_dir = s.get(Direction, plane.y_direction_id)
        assert (y_dir.hessian_spectrum_id, y_dir.eigen_index) == (spectrum.id, 1)
    assert grid.shape == (1, 3, 3) and grid[0, 1, 1] == pytest.approx(expected, rel=1e-5)
    code, out, err = home.cli(capsys, "show", "surface", str(around["line"]))
    assert code == 0, err
    assert f"retrain {spectrum.retrain_id} save 2 (jumped from epoch {spectrum.epoch})" in out
    code, out, err = home.cli(capsys, "show", "study", "rt")
    assert code == 0, err
    table = out.split("\nsurfaces:")[1].splitlines()
    row = next(line for line in table if line.split()[:1] == [str(around["line"])])
    assert f"retrain {spectrum.retrain_id} save 2" in row, row
    # Plotted and exported as any other surface.
    folder = home.settings.home / "retrained-plots"
    code, _, err = home.cli(capsys, "plot", "surface", str(around["plane"]), "--out", str(folder))
    assert code == 0, err
    assert any(p.suffix == ".png" for p in folder.iterdir())
    for fmt in ("h5", "vtp", "csv"):
        target = home.settings.home / f"plane.{fmt}"
        code, _, err = home.cli(capsys, "export", "surface", str(around["plane"]), "--format",
                                fmt, "--out", str(target))  # fmt: skip
        assert code == 0 and target.stat().st_size > 0, (fmt, err)


def test_the_curvature_map_around_a_retrained_network_is_its_hessians(
    home: Home, around: dict[str, Any]
) -> None:
    """Goldstein's lambda_max at the centre of a retrained network's --curvature surface is the
    save's top eigenvalue; off the centre it is the exact Hessian's at the displaced weights."""
    spectrum = around["spectrum"]
    with home.db.session() as s:
        surface = s.get(Surface, around["map"])
        hi = home.store.read(_path_of(s, surface.lambda_max_array_id))
        d = torch.from_numpy(home.store.read(
            _path_of(s, s.get(Direction, surface.x_direction_id).array_id)))  # fmt: skip
    assert hi.shape == (1, 1, 3)
    assert hi[0, 0, 1] == pytest.approx(spectrum.eigenvalues[0], rel=1e-4)
    exact = np.linalg.eigvalsh(_exact(home, spectrum.retrain_id, 2, 0.1 * d))
    assert hi[0, 0, 2] == pytest.approx(exact[-1], rel=1e-4)
    assert hi[0, 0, 2] != pytest.approx(hi[0, 0, 1], rel=1e-4)  # it moved with the weights


def test_a_checkpoints_surface_keeps_to_the_checkpoints_own_eigenvectors(
    home: Home, around: dict[str, Any]
) -> None:
    """The retrains jumped from the final checkpoint, so their eigenvector directions name it
    too, and newer ones than the checkpoint's own: a surface around the checkpoint still runs
    along the checkpoint's eigenvector."""
    surface, direction, _ = _surface(home, around["own_line"])
    assert surface.retrain_id is None and surface.save_index is None
    assert direction.hessian_spectrum_id == home.ids["own"][0]
    with home.db.session() as s:
        newer = s.scalar(sa.select(sa.func.max(Direction.id)).where(
            Direction.hessian_spectrum_id.in_(around["newer"])))  # fmt: skip
    assert newer is not None and newer > direction.id


def test_an_eigen_measure_from_before_directions_gets_them_when_asked_again(
    home: Home, around: dict[str, Any]
) -> None:
    """A retrained network's eigen measure from revision 0015 has no direction rows: asked for
    again, it gets them and runs again (alone) to write their arrays, bit for bit the same."""
    old = around["old"]
    statuses = around["old_status"]
    assert statuses.pop(old.id) == "pending"
    assert set(statuses.values()) == {"done"}
    new = _rows(home, [old.id])[0]
    assert new.eigenvalues == old.eigenvalues
    with home.db.session() as s:
        d = s.scalar(sa.select(Direction).where(Direction.hessian_spectrum_id == old.id))
        vectors = home.store.read(_path_of(s, new.eigenvectors_array_id))
        assert home.store.read(_path_of(s, d.array_id)).tobytes() == vectors[0].tobytes()


def test_surfaces_around_retrained_networks_stay_out_of_the_meta_analysis(
    home: Home, around: dict[str, Any]
) -> None:
    from tracker.meta.rows import surface_samples

    with home.db.session() as s:
        study_id = s.scalar(sa.select(Model.study_id))
        sources = {x.source for x in surface_samples(s, home.store, study_id)}
        in_view = set(s.scalars(sa.text("SELECT surface_id FROM v_surfaces")))
    assert sources == {f"surface:{around['own_line']}"}
    assert around["own_line"] in in_view
    assert not {around["line"], around["plane"]} & in_view


def test_a_retrained_networks_surface_figures_go_to_the_retrains_run(
    home: Home, around: dict[str, Any]
) -> None:
    from mlflow.tracking import MlflowClient

    with home.db.session() as s:
        run_id = s.get(Retrain, around["spectrum"].retrain_id).mlflow_run_id
    client = MlflowClient(tracking_uri=home.settings.mlflow_uri)
    tags = client.get_run(run_id).data.tags
    label = tags.get(f"tracker.surface.{around['line']}", "")
    assert f"retrain {around['spectrum'].retrain_id} save 2" in label, tags
    assert client.list_artifacts(run_id, "surfaces")


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


# A model, a retrain of it, its spectra at every save and a surface around each save.
RETRAINED_STUDY = """
study = "rt-surfaces"

[[model]]
name = "mlp"
architecture = "mlp"
arch = { widths = [4] }
dataset = "digits"
epochs = 1

[[retrain]]
model = "mlp"
seeds = [0]
steps = [0.5]
epochs = 1

[[hessian]]
models = ["mlp"]
retrains = "all"
saves = "all"
top_k = 1

[[surface]]
models = ["mlp"]
retrains = "all"
saves = "all"
x = "-0.1:0.1:3"
x_direction = "hessian:0"
"""


def test_a_study_files_hessian_table_measures_the_files_own_retrains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h = Home(tmp_path)
    study = tmp_path / "rt.toml"
    study.write_text(RETRAINED_STUDY.replace("rt-surfaces", "rt-file")
                     .replace("seeds = [0]", "seeds = [0, 1]").split("[[surface]]")[0])  # fmt: skip
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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--retrain", "99", "--x-direction", "hessian:0"], "retrain 99 is not a retrain of model 1"),
        (["--retrain", "1", "--save", "5", "--x-direction", "hessian:0"], "has saves 0..1"),
        (["--retrain", "1"], "give --x-direction hessian:I"),
        (["--retrain", "1", "--x-direction", "hessian:0", "--y=-1:1:3"],
         "--y-direction hessian:J for a 2D one"),
        (["--retrain", "1", "--epoch", "1", "--x-direction", "hessian:0"], "drop --epoch"),
        (["--save", "1", "--x-direction", "hessian:0"], "add --retrain R"),
        (["--retrain", "1", "--pca"], "drop --interpolate/--pca"),
        (["--retrain", "1", "--x-direction", "hessian:0"],
         "no Hessian eigenvector 0 at save 1 of retrain 1: make it first with `tracker enqueue "
         "hessian --model 1 --retrains 1 --saves 1 --top-k 1`"),
    ],
)
def test_bad_retrained_surfaces_are_one_line_and_write_nothing(
    fresh: Home, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    before = (fresh.count(Task), fresh.count(Surface), fresh.count(Direction))
    code, _, err = fresh.cli(capsys, "enqueue", "surface", "--model", "mlp", "--x=-1:1:3", *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert message in err and "Traceback" not in err
    assert (fresh.count(Task), fresh.count(Surface), fresh.count(Direction)) == before


def test_a_retrained_surface_waits_for_its_spectrum_and_goes_with_its_retrain(
    fresh: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    """Enqueued before anything ran: the tiles wait on the spectrum's task, which waits on the
    retrain's; deleting the retrain takes the spectrum, its directions and the surface."""
    code, out, err = fresh.cli(capsys, "enqueue", "hessian", "--model", "mlp", "--retrains",
                               "all", "--top-k", "2")  # fmt: skip
    assert code == 0, err
    code, out, err = fresh.cli(capsys, "enqueue", "surface", "--model", "mlp", "--retrain", "1",
                               "--x-direction", "hessian:1", "--x=-1:1:3")  # fmt: skip
    assert code == 0, err
    sid = _surface_id(out)
    with fresh.db.session() as s:
        surface = s.get(Surface, sid)
        spectrum = s.get(HessianSpectrum, s.get(Direction, surface.x_direction_id).hessian_spectrum_id)
        retrain = s.get(Retrain, 1)
        assert (surface.retrain_id, surface.save_index) == (1, 1)
        assert (spectrum.retrain_id, spectrum.save_index) == (1, 1)

        def parents(task_id: int) -> set[int]:
            return set(s.scalars(sa.text(
                "SELECT depends_on_id FROM task_dependencies WHERE task_id = :t"
            ).bindparams(t=task_id)))  # fmt: skip

        tile_task = s.scalar(sa.text("SELECT task_id FROM tiles WHERE surface_id = :s")
                             .bindparams(s=sid))  # fmt: skip
        assert spectrum.task_id in parents(tile_task)
        assert parents(spectrum.task_id) == {retrain.task_id}
    # The notebook API makes the same row.
    import tracker

    client = tracker.connect(db=fresh.settings.db_url, store=fresh.settings.store_url,
                             home=fresh.settings.home)  # fmt: skip
    assert client.enqueue_surface("mlp", x=(-1, 1, 3), x_direction="hessian:1", retrain=1) == sid
    with pytest.raises(tracker.SpecError, match="give --x-direction hessian:I"):
        client.enqueue_surface("mlp", x=(-1, 1, 3), retrain=1)
    code, _, err = fresh.cli(capsys, "delete", "retrains", "1")
    assert code == 0, err
    assert (fresh.count(Surface), fresh.count(HessianSpectrum)) == (0, 0)
    with fresh.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Direction)
                        .where(Direction.kind == "hessian")) == 0  # fmt: skip


def test_a_study_files_surface_table_centres_on_the_files_own_retrains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """retrains = "all" in a [[surface]] table: one surface per save of every retrain the file
    makes, each along the eigenvector of its own save; refused in study-file words without
    eigenvector directions, or without the [[hessian]] table that makes them."""
    h = Home(tmp_path)
    study = tmp_path / "rt.toml"
    study.write_text(RETRAINED_STUDY)
    code, out, err = h.cli(capsys, "enqueue", str(study))
    assert code == 0, err
    assert "2 surface(s) (2 new)" in out
    with h.db.session() as s:
        pairs = []
        for surface in s.scalars(sa.select(Surface).order_by(Surface.id)):
            spectrum = s.get(HessianSpectrum,
                             s.get(Direction, surface.x_direction_id).hessian_spectrum_id)  # fmt: skip
            pairs.append(((surface.retrain_id, surface.save_index),
                          (spectrum.retrain_id, spectrum.save_index)))  # fmt: skip
    rid = pairs[0][0][0]
    assert pairs == [((rid, 0), (rid, 0)), ((rid, 1), (rid, 1))]
    for old, new, message in (
        ('x_direction = "hessian:0"\n', "", 'set x_direction = "hessian:I"'),
        ('saves = "all"\ntop_k', 'saves = "last"\ntop_k',
         'no Hessian eigenvector 0 at save 0 of retrain 2: add a [[hessian]] table with models '
         '= ["mlp"], retrains = "all", saves covering 0 and top_k = 1'),
        ('retrains = "all"\nsaves = "all"\nx =', 'saves = "all"\nx =', 'add retrains = "all"'),
        ('retrains = "all"\nsaves = "all"\nx =', 'retrains = "all"\nepochs = [1]\nx =',
         "give one of them"),
    ):
        text = RETRAINED_STUDY.replace("rt-surfaces", f"rt-bad-{len(message)}")
        assert old in text
        study.write_text(text.replace(old, new))
        before = (h.count(Surface), h.count(Task))
        code, _, err = h.cli(capsys, "enqueue", str(study))
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "[[surface]] number 1" in err and message in err, err
        assert (h.count(Surface), h.count(Task)) == before
    # The surfaces a file may make count the retrains' saves too, once they are known.
    import tracker.studyfile

    monkeypatch.setattr(tracker.studyfile, "MAX_SURFACES", 1)
    study.write_text(RETRAINED_STUDY.replace("rt-surfaces", "rt-many"))
    before = (h.count(Surface), h.count(Task))
    code, _, err = h.cli(capsys, "enqueue", str(study))
    assert code == 2 and "makes 2 surfaces (retrains x saves)" in err, err
    assert (h.count(Surface), h.count(Task)) == before


def test_deleting_the_model_takes_its_retrains_eigenvectors_and_surfaces(
    fresh: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    """The model's rows form a cycle of tables (retrain -> its jump direction, spectrum ->
    retrain, eigenvector direction -> spectrum), never of rows: all of it goes, children first."""
    for argv in (
        ["enqueue", "hessian", "--model", "mlp", "--retrains", "all", "--saves", "all"],
        ["enqueue", "hessian", "--model", "mlp", "--top-k", "1"],
        ["enqueue", "surface", "--model", "mlp", "--retrain", "1", "--x-direction", "hessian:0",
         "--x=-1:1:3"],
        ["enqueue", "surface", "--model", "mlp", "--x-direction", "hessian:0", "--x=-1:1:3"],
    ):  # fmt: skip
        code, _, err = fresh.cli(capsys, *argv)
        assert code == 0, err
    with fresh.db.session() as s:
        model_id = s.scalar(sa.select(Model.id).where(Model.name == "mlp"))
        jump = s.get(Retrain, 1).direction_id
    assert jump is not None
    code, _, err = fresh.cli(capsys, "delete", "models", str(model_id))
    assert code == 0, err
    with fresh.db.session() as s:
        left = {
            cls.__name__: s.scalar(sa.select(sa.func.count()).select_from(cls)
                                   .where(cls.model_id == model_id))
            for cls in (Retrain, HessianSpectrum, Direction, Checkpoint)
        }  # fmt: skip
        assert s.get(Direction, jump) is None
    assert set(left.values()) == {0}, left
    assert fresh.count(Surface) == 0
    assert fresh.count(Model) == 1  # "other"
