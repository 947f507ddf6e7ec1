"""Seed-parity options of issue 14 from the command line: Goldstein's h5 layout (split names,
dir_file, projection file), PCA plots, per-axis direction options, label corruption, BatchNorm
recompute and the l-berg gradient arrow. One home (SQLite, Zarr, MLflow), drained in-process."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import h5py
import numpy as np
import pytest

from tracker._config import resolve
from tracker._worker import WorkerConfig, run_worker
from tracker.cli import main


class Home:
    """A tracker home driven through ``tracker.cli.main`` (in-process) and drained in-process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.settings = resolve(home=root / ".tracker")
        assert main(self.args("db", "upgrade")) == 0

    def args(self, *argv: str) -> list[str]:
        return ["--home", str(self.root / ".tracker"), *argv]

    def run(self, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
        capsys.readouterr()
        code = main(self.args(*argv))
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    def error(self, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
        capsys.readouterr()
        code = main(self.args(*argv))
        _, err = capsys.readouterr()
        assert code == 2, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        return err

    def drain(self) -> None:
        stats = run_worker(WorkerConfig(db_url=self.settings.db_url,
                                        store_url=self.settings.store_url,
                                        mlflow_uri=self.settings.mlflow_uri))  # fmt: skip
        assert stats["failed"] == 0, stats

    def rows(self, sql: str) -> list[tuple]:
        with sqlite3.connect(self.root / ".tracker" / "tracker.db") as conn:
            return conn.execute(sql).fetchall()


def _surface_id(out: str) -> str:
    return out.split("surface ")[1].split()[0]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    """Digits MLPs with checkpoints at epochs 0-2: models 1, 2, 3 (seeds 0, 1, 2)."""
    root = tmp_path_factory.mktemp("parity")
    h = Home(root)
    for name, seed in (("a", "0"), ("b", "1"), ("c", "2")):
        assert main(h.args("train", "--arch", "mlp", "--widths", "16", "--dataset", "digits",
                           "--epochs", "3", "--lr", "0.1", "--batch-size", "64", "--seed", seed,
                           "--name", name, "--checkpoints", "0,1,2")) == 0  # fmt: skip
    return h


def test_h5_export_keeps_the_split_names_and_dir_file_and_imports_by_split(home, capsys) -> None:
    """Issue 14 item 4."""
    sid = _surface_id(home.run(capsys, "enqueue", "surface", "--model", "1", "--x", "-1:1:3",
                               "--y", "-1:1:3", "--split", "test"))  # fmt: skip
    home.drain()
    out = home.root / "t.h5"
    printed = home.run(capsys, "export", "surface", sid, "--format", "h5", "--out", str(out))
    dir_path = home.root / "t-directions.h5"
    assert printed.split() == [str(out), str(dir_path)]
    with h5py.File(out, "r") as f:
        assert {"test_loss", "test_acc", "dir_file"} <= set(f) and "train_loss" not in f
        assert f["dir_file"][()].decode() == str(dir_path)
        exported = np.asarray(f["test_loss"])
    with h5py.File(dir_path, "r") as f:
        assert set(f) == {"xdirection", "ydirection"}

    err = home.error(capsys, "import", "h5", str(out))
    assert "no 'train_loss' grid" in err and "test" in err
    new = _surface_id(home.run(capsys, "import", "h5", str(out), "--split", "test"))
    assert home.rows(f"SELECT split FROM surfaces WHERE id = {new}") == [("test",)]
    again = home.root / "again.h5"
    home.run(capsys, "export", "surface", new, "--format", "h5", "--out", str(again))
    with h5py.File(again, "r") as f:
        np.testing.assert_allclose(np.asarray(f["test_loss"]), exported, rtol=1e-6)


def test_pca_surfaces_plot_with_every_kind_and_export_the_projection(home, capsys) -> None:
    """Issue 14 item 5: the default kinds (3d included) on a PCA surface, labels with the
    explained variance, a multi-id plot, and the projected path in Goldstein's file layout."""
    from tracker._db import open_database
    from tracker._store import ArrayStore
    from tracker.surfaces.cli import _pca_options
    from tracker.surfaces.results import load_surface

    pca = _surface_id(home.run(capsys, "enqueue", "surface", "--model", "1", "--pca",
                               "--x", "-1:1:3", "--y", "-1:1:3"))  # fmt: skip
    plain = _surface_id(home.run(capsys, "enqueue", "surface", "--model", "1", "--x", "-1:1:3",
                                 "--y", "-1:1:3", "--seed", "7"))  # fmt: skip
    home.drain()
    plots = home.run(capsys, "plot", "surface", pca, plain, "--out", str(home.root / "plots"))
    files = [Path(p) for p in plots.split()]
    assert len(files) == 2 * 2 * 4 and all(p.stat().st_size > 1000 for p in files)

    db = open_database(home.settings.db_url)
    with db.session() as s:
        data = load_surface(s, ArrayStore(home.settings.store_url), int(pca))
        options = _pca_options(data)
        ratios = [data.x_direction.explained_variance, data.y_direction.explained_variance]
    assert options["xlabel"] == f"PC1 ({100 * ratios[0]:.1f}%)"
    assert options["ylabel"] == f"PC2 ({100 * ratios[1]:.1f}%)"
    assert options["trajectory_labels"] == [0, 1, 2, 3]

    out = home.root / "pca.h5"
    printed = home.run(capsys, "export", "surface", pca, "--format", "h5", "--out", str(out))
    proj = home.root / "pca-projection.h5"
    assert str(proj) in printed.split()
    with h5py.File(proj, "r") as f:
        np.testing.assert_allclose(np.asarray(f["proj_xcoord"]), data.trajectory[:, 1])
        np.testing.assert_allclose(np.asarray(f["proj_ycoord"]), data.trajectory[:, 2])
    with h5py.File(home.root / "pca-directions.h5", "r") as f:
        np.testing.assert_allclose(np.asarray(f["explained_variance_ratio_"]), ratios)


def _grid(home: Home, capsys, sid: str, what: str = "loss") -> np.ndarray:
    out = home.root / f"grid-{sid}-{what}.h5"
    home.run(capsys, "export", "surface", sid, "--format", "h5", "--out", str(out))
    with h5py.File(out, "r") as f:
        name = next(n for n in f if n.endswith(f"_{what}"))
        return np.asarray(f[name], dtype=np.float64)


def test_per_axis_directions_same_dir_third_model_and_explicit_loss(home, capsys) -> None:
    """Issue 14 item 6 (the direction and loss options; the plot flags are issue 19's)."""
    grid = ("--x", "-1:1:3", "--y", "-1:1:3")
    axes = _surface_id(home.run(capsys, "enqueue", "surface", "--model", "1", *grid,
                                "--xnorm", "layer", "--xignore", "none", "--ynorm", "model"))  # fmt: skip
    same = _surface_id(home.run(capsys, "enqueue", "surface", "--model", "1", *grid, "--same-dir",
                                "--seed", "3"))  # fmt: skip
    plane = _surface_id(home.run(capsys, "enqueue", "surface", "--interpolate", "1", "2",
                                 "--y-model", "3", "--x", "0:1:2", "--y", "0:1:2"))  # fmt: skip
    line = _surface_id(home.run(capsys, "enqueue", "surface", "--interpolate", "1", "3",
                                "--x", "0:1:2"))  # fmt: skip
    mse = _surface_id(home.run(capsys, "enqueue", "surface", "--model", "1", *grid, "--seed", "5",
                               "--loss", "mse"))  # fmt: skip
    ce = _surface_id(home.run(capsys, "enqueue", "surface", "--model", "1", *grid, "--seed", "5",
                              "--loss", "cross-entropy"))  # fmt: skip
    home.drain()

    rows = home.rows(
        "SELECT s.id, x.normalization, x.\"ignore\", y.normalization, y.\"ignore\", x.id, y.id, "
        "y.kind, y.checkpoint_b_id, s.eval_config FROM surfaces s JOIN directions x ON "
        "x.id = s.x_direction_id JOIN directions y ON y.id = s.y_direction_id"
    )
    by_id = {str(r[0]): r[1:] for r in rows}
    assert by_id[axes][:4] == ("layer", "none", "model", "biasbn")
    assert by_id[same][4] == by_id[same][5]  # one direction row on both axes
    (c_final,) = home.rows("SELECT max(id) FROM checkpoints WHERE model_id = 3")[0]
    assert by_id[plane][6:8] == ("interpolation", c_final)
    assert '"loss": "mse"' in by_id[mse][8] and '"loss": "cross_entropy"' in by_id[ce][8]

    z = _grid(home, capsys, same)  # f(centre + (a + b) d): symmetric in a and b
    np.testing.assert_allclose(z, z.T, rtol=1e-6)
    # (x, y) = (0, 1) of the plane is theta_C, the end of the line from A to C.
    np.testing.assert_allclose(_grid(home, capsys, plane)[1, 0], _grid(home, capsys, line)[1],
                               rtol=1e-6)  # fmt: skip
    mse_loss, ce_loss = _grid(home, capsys, mse), _grid(home, capsys, ce)
    assert (mse_loss < 0.2).all() and (ce_loss > mse_loss).all()  # softmax vs one-hot: <= 2/10
    np.testing.assert_array_equal(_grid(home, capsys, mse, "acc"), _grid(home, capsys, ce, "acc"))

    home.run(capsys, "enqueue", "model", "--arch", "mlp", "--dataset", "autompg", "--name", "reg")
    assert "regression" in home.error(capsys, "enqueue", "surface", "--model", "reg", "--x",
                                      "-1:1:3", "--loss", "cross-entropy")  # fmt: skip
    assert "--interpolate" in home.error(capsys, "enqueue", "surface", "--model", "1",
                                         "--x", "-1:1:3", "--y-model", "3")  # fmt: skip
    assert "third model" in home.error(capsys, "enqueue", "surface", "--interpolate", "1", "2",
                                       "--y-model", "1", "--x", "0:1:2", "--y", "0:1:2")  # fmt: skip
    assert "--y" in home.error(capsys, "enqueue", "surface", "--model", "1", "--x", "-1:1:3",
                               "--same-dir")  # fmt: skip


def test_study_files_take_the_direction_and_loss_options(home, capsys) -> None:
    """Issue 14 item 6 from a study file: same_dir, loss and an interpolation's y_model."""
    study = home.root / "options.toml"
    study.write_text("""
study = "default"

[[surface]]
models = [1]
x = "-1:1:3"
y = "-1:1:3"
direction = { seed = 11, norm = "layer" }
same_dir = true
loss = "mse"

[[interpolation]]
from = 1
to = 2
y_model = 3
x = "0:1:3"
y = "0:1:3"
""")
    before = home.rows("SELECT max(id) FROM surfaces")[0][0]
    home.run(capsys, "enqueue", str(study))
    rows = home.rows(
        "SELECT s.x_direction_id = s.y_direction_id, s.eval_config, y.kind, y.checkpoint_b_id "
        f"FROM surfaces s JOIN directions y ON y.id = s.y_direction_id WHERE s.id > {before} "
        "ORDER BY s.id"
    )
    (c_final,) = home.rows("SELECT max(id) FROM checkpoints WHERE model_id = 3")[0]
    assert rows[0][0] == 1 and '"loss": "mse"' in rows[0][1]
    assert rows[1][2:] == ("interpolation", c_final)


def test_corrupt_test_is_recorded_on_the_model_row(home, capsys) -> None:
    """Issue 14 item 3 from the CLI and a study file."""
    home.run(capsys, "enqueue", "model", "--arch", "mlp", "--dataset", "digits", "--name",
             "noisy", "--label-corruption", "0.3", "--corrupt-test")  # fmt: skip
    study = home.root / "noisy.toml"
    study.write_text('study = "noisy"\n[[model]]\nname = "noisy-file"\narchitecture = "mlp"\n'
                     'dataset = "digits"\nlabel_corruption = 0.2\n'
                     'data = { corrupt_test = true }\n')  # fmt: skip
    home.run(capsys, "enqueue", str(study))
    rows = home.rows("SELECT name, label_corruption, dataset_config FROM models "
                     "WHERE name LIKE 'noisy%' ORDER BY id")  # fmt: skip
    assert [(r[0], r[1]) for r in rows] == [("noisy", 0.3), ("noisy-file", 0.2)]
    assert all('"corrupt_test": true' in r[2] for r in rows)
    assert "label_corruption P > 0" in home.error(
        capsys, "enqueue", "model", "--arch", "mlp", "--dataset", "digits", "--corrupt-test"
    )


def test_bn_recompute_is_recorded_and_computed(home, capsys) -> None:
    """Issue 14 item 14: --bn recompute with K training batches, from the CLI and a study file."""
    assert main(home.args("train", "--arch", "cnn", "--arch-config",
                          '{"channels": [4], "hidden": [], "batchnorm": true}', "--dataset",
                          "digits", "--epochs", "1", "--batch-size", "64", "--name", "bn")) == 0  # fmt: skip
    (bn_model,) = home.rows("SELECT id FROM models WHERE name = 'bn'")[0]
    grid = ("--model", str(bn_model), "--x", "-0.5:0.5:3", "--y", "-0.5:0.5:3")
    rec = _surface_id(home.run(capsys, "enqueue", "surface", *grid, "--bn", "recompute",
                               "--bn-batches", "2"))  # fmt: skip
    ev = _surface_id(home.run(capsys, "enqueue", "surface", *grid))
    study = home.root / "bn.toml"
    study.write_text(f'study = "default"\n[[surface]]\nmodels = [{bn_model}]\nx = "-1:1:3"\n'
                     'bn = "recompute"\n')  # fmt: skip
    home.run(capsys, "enqueue", str(study))
    home.drain()
    rows = home.rows("SELECT id, bn_mode, eval_config FROM surfaces WHERE bn_mode = 'recompute' "
                     "ORDER BY id")  # fmt: skip
    assert len(rows) == 2 and str(rows[0][0]) == rec
    assert '"bn_batches": 2' in rows[0][2] and '"bn_batch_size": 64' in rows[0][2]
    assert '"bn_batches": 10' in rows[1][2]  # the default
    z_rec, z_ev = _grid(home, capsys, rec), _grid(home, capsys, ev)
    assert np.isfinite(z_rec).all() and np.abs(z_rec - z_ev).max() > 1e-4

    assert "--bn recompute" in home.error(capsys, "enqueue", "surface", *grid, "--bn-batches", "2")
    assert "--bn-batches 22" in home.error(capsys, "enqueue", "surface", *grid, "--bn",
                                           "recompute", "--bn-batches", "500")  # fmt: skip


def test_filter_std_directions_from_the_cli_and_a_study_file(home, capsys) -> None:
    """Issue 14 item 7: --norm filter-std (and per axis) is stored on the direction rows."""
    sid = _surface_id(home.run(capsys, "enqueue", "surface", "--model", "1", "--x", "-1:1:3",
                               "--y", "-1:1:3", "--norm", "filter-std", "--seed", "21"))  # fmt: skip
    study = home.root / "std.toml"
    study.write_text('study = "default"\n[[surface]]\nmodels = [1]\nx = "-1:1:3"\n'
                     'direction = { seed = 31, norm = "filter-std", ignore = "none" }\n')  # fmt: skip
    home.run(capsys, "enqueue", str(study))
    rows = home.rows("SELECT s.id, x.normalization, y.normalization, x.\"ignore\" FROM surfaces s "
                     "JOIN directions x ON x.id = s.x_direction_id LEFT JOIN directions y ON "
                     "y.id = s.y_direction_id WHERE x.seed IN (21, 31) ORDER BY s.id")  # fmt: skip
    assert rows == [(int(sid), "filter-std", "filter-std", "biasbn"),
                    (int(sid) + 1, "filter-std", None, "none")]  # fmt: skip


def test_gradient_arrow_is_stored_per_minibatch_grid_and_drawn(home, capsys) -> None:
    """Issue 14 item 7: the centre gradient on the plane, per minibatch grid, on the surface
    row, drawn on contour plots and panels (an interpolation has none)."""
    import json

    from tracker._db import open_database
    from tracker._store import ArrayStore
    from tracker.surfaces import plots
    from tracker.surfaces.cli import draw_arrows
    from tracker.surfaces.results import load_surface

    args = ("--model", "1", "--x", "-1:1:5", "--y", "-1:1:5", "--minibatches", "2",
            "--minibatch-size", "64", "--norm", "filter-std")  # fmt: skip
    first = _surface_id(home.run(capsys, "enqueue", "surface", *args, "--seed", "41"))
    second = _surface_id(home.run(capsys, "enqueue", "surface", *args, "--seed", "43"))
    line = _surface_id(home.run(capsys, "enqueue", "surface", "--interpolate", "1", "2",
                                "--x", "0:1:3"))  # fmt: skip
    home.drain()
    stored = {str(r[0]): r[1] for r in home.rows(
        f"SELECT id, centre_gradient FROM surfaces WHERE id IN ({first}, {second}, {line})")}  # fmt: skip
    grad = np.asarray(json.loads(stored[first]), dtype=np.float64)
    assert grad.shape == (2, 2) and np.isfinite(grad).all() and np.abs(grad).min() > 0
    assert not np.allclose(grad[0], grad[1])  # one per minibatch grid
    assert stored[line] is None

    out = home.root / "arrows"
    files = home.run(capsys, "plot", "surface", "--panel", first, second, "--out", str(out))
    files += home.run(capsys, "plot", "surface", first, "--kind", "contour", "--out", str(out))
    assert len(files.split()) == 2 + 2 * 2 and all(Path(p).stat().st_size > 1000 for p in files.split())

    db = open_database(home.settings.db_url)
    with db.session() as s:
        datas = [load_surface(s, ArrayStore(home.settings.store_url), int(i)) for i in (first, second)]
        fig = plots.figure_panel([[d.loss[0], d.loss[1]] for d in datas], datas[0].xs, datas[0].ys)
        draw_arrows(fig.axes, datas, datas[0].xs, datas[0].ys)
    tips = [np.asarray(t.xy) for ax in fig.axes[:4] for t in ax.texts]
    assert len(tips) == 4  # one arrow per pair x minibatch panel
    steps = -np.concatenate([np.asarray(json.loads(stored[i])) for i in (first, second)])
    scale = 0.25 * 2 / np.linalg.norm(steps, axis=1).max()
    np.testing.assert_allclose(np.stack(tips), steps * scale, rtol=1e-6)


def test_pca_default_grid_covers_the_projected_path(home, capsys) -> None:
    """Issue 14 item 5: a --pca surface without --x/--y gets a grid around the projected path
    (the centre included) with a margin, from the CLI and a study file."""
    from tracker._db import open_database
    from tracker._store import ArrayStore
    from tracker.surfaces.results import load_surface
    from tracker.surfaces.rows import PATH_MARGIN

    sid = _surface_id(home.run(capsys, "enqueue", "surface", "--model", "2", "--pca"))
    study = home.root / "pca.toml"
    study.write_text('study = "default"\n[[pca]]\nmodel = 3\npoints = 5\n')
    home.run(capsys, "enqueue", str(study))
    (other,) = home.rows("SELECT max(id) FROM surfaces")[0]
    home.drain()
    db = open_database(home.settings.db_url)
    with db.session() as s:
        for surface_id, n in ((int(sid), 21), (other, 5)):
            data = load_surface(s, ArrayStore(home.settings.store_url), surface_id)
            path = np.vstack([data.trajectory[:, 1:3], [[0.0, 0.0]]])
            lo, hi = path.min(axis=0), path.max(axis=0)
            pad = PATH_MARGIN * (hi - lo)
            np.testing.assert_allclose([data.xs[0], data.ys[0]], lo - pad, rtol=1e-9)
            np.testing.assert_allclose([data.xs[-1], data.ys[-1]], hi + pad, rtol=1e-9)
            assert data.loss.shape == (1, n, n) and np.isfinite(data.loss).all()
            assert data.surface.eval_config["range"] == "path"
    assert "--pca" in home.error(capsys, "enqueue", "surface", "--model", "2")
