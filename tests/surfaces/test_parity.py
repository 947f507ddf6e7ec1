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
    """A digits MLP (model 1) with checkpoints at epochs 0-2, a second one (model 2, seed 1)."""
    root = tmp_path_factory.mktemp("parity")
    h = Home(root)
    for name, seed in (("a", "0"), ("b", "1")):
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
