"""The loss-surface commands as a user runs them: real processes, SQLite, Zarr, MLflow."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from cli_support import run_tracker, tracker_env

TABLES = ("tasks", "models", "checkpoints", "directions", "surfaces", "tiles", "arrays", "studies")


def _migrated(db_file: Path) -> None:
    """A copy of the suite's migrated template at ``db_file`` (instead of an upgrade process)."""
    from schema_support import migrated

    from tracker._db import Database

    db_file.parent.mkdir(parents=True, exist_ok=True)
    db = Database(f"sqlite:///{db_file}")
    migrated(db)
    db.dispose()


def _counts(home: Path) -> dict[str, int]:
    with sqlite3.connect(home / ".tracker" / "tracker.db") as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def _ok(result) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _one_line_error(result, *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr[-3000:])
    err = result.stderr.strip()
    assert "Traceback" not in result.stderr
    assert len(err.splitlines()) == 1, err
    assert err.startswith("tracker: error: ")
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A home with a trained MLP (model 1) and an untrained CNN (model 2)."""
    root = tmp_path_factory.mktemp("cli")
    env = tracker_env(root)
    _migrated(root / ".tracker" / "tracker.db")  # set-up, as `tracker db upgrade` leaves it
    out = _ok(run_tracker("train", "--arch", "mlp", "--widths", "16", "--dataset", "digits",
                          "--epochs", "2", "--lr", "0.05", "--batch-size", "64", "--name", "mlp",
                          "--checkpoints", "0,1", env=env))  # fmt: skip
    assert "model 1: train loss" in out and "MLflow run" in out
    _ok(run_tracker("enqueue", "model", "--arch", "cnn", "--dataset", "digits", "--name", "cnn",
                    env=env))  # fmt: skip
    return root, env


BAD = [
    (["enqueue", "surface", "--model", "1", "--x", "-1:1:5", "--tile", "2x2x2"], ["--tile", "NXxNY"]),
    (["enqueue", "surface", "--interpolate", "1", "1", "--x", "-0.5:1.5:5"], ["with itself"]),
    (["enqueue", "surface", "--interpolate", "99999999999999999999", "1", "--x", "0:1:5"],
     ["64-bit"]),
    (["enqueue", "surface", "--model", "1", "--study", "elsewhere", "--x", "-1:1:5"],
     ["belongs to study 'default'"]),
    (["enqueue", "surface", "--model", "1", "--x", "-1:1:1000000000"], ["more than 100,001"]),
    (["enqueue", "model", "--arch", "transformer", "--dataset", "digits"], ["unknown architecture"]),
    (["enqueue", "model", "--arch", "mlp", "--dataset", "imagenet"], ["unknown dataset"]),
    (["enqueue", "surface", "--model", "1", "--x", "1:-1:0"], ["1:-1:0", "N >= 1"]),
    (["enqueue", "surface", "--model", "1", "--x", "-1:1:5", "--y", "-1:1"], ["MIN:MAX:N"]),
    (["enqueue", "surface", "--model", "999", "--x", "-1:1:5"], ["unknown model id 999"]),
    (["enqueue", "surface", "--interpolate", "1", "2", "--x", "-0.5:1.5:5"],
     ["cannot interpolate", "same architecture"]),
    (["enqueue", "surface", "--model", "1", "--epoch", "7", "--x", "-1:1:5"], ["epoch 7"]),
    (["enqueue", "model", "--arch", "resnet20", "--dataset", "cifar10", "--data-root", "EMPTY"],
     ["cifar-10-batches-py"]),
    (["enqueue", "surface", "--model", "1", "--x", "-1:1:5", "--curvature-tol", "1e-4"],
     ["--curvature-tol sets up the curvature map: add --curvature"]),
    (["enqueue", "surface", "--model", "1", "--x", "-1:1:5", "--curvature-max-iter", "50"],
     ["--curvature-max-iter sets up the curvature map: add --curvature"]),
    (["enqueue", "surface", "--model", "1", "--x", "-1:1:5", "--x-direction", "hessian:0",
      "--seeds", "0-4"], ["--seeds 0-4", "seeds do not change an eigenvector surface"]),
    (["enqueue", "surface", "--model", "1", "--x", "-1:1:5", "--y", "-1:1:5", "--x-direction",
      "hessian:0", "--y-direction", "hessian:1", "--seeds", "0,2"],
     ["seeds do not change an eigenvector surface"]),
    (["enqueue", "surface", "--model", "1", "--x", "-1:1:5", "--y", "-1:1:5", "--x-direction",
      "hessian:0", "--same-dir", "--seeds", "0,2"], ["seeds do not change an eigenvector surface"]),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "needles"), BAD, ids=[" ".join(a[:3]) + f"-{i}" for i, (a, _) in enumerate(BAD)])  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(trained, argv, needles) -> None:
    root, env = trained
    argv = [str(root / "empty-root") if a == "EMPTY" else a for a in argv]
    (root / "empty-root").mkdir(exist_ok=True)
    before = _counts(root)
    _one_line_error(run_tracker(*argv, env=env), *needles)
    assert _counts(root) == before


def test_a_bad_study_file_writes_nothing(trained) -> None:
    root, env = trained
    before = _counts(root)
    study = root / "bad.toml"
    study.write_text('study = "bad"\n[[model]]\narchitecture = "mlp"\ndataset = "digits"\n'
                     '[[surface]]\nx = "-1:1:5"\nflavour = "sharp"\n')  # fmt: skip
    _one_line_error(run_tracker("enqueue", str(study), env=env), "unknown key 'flavour'")
    # A valid model followed by a surface of zero points: still nothing written.
    study.write_text('study = "bad"\n[[model]]\narchitecture = "mlp"\ndataset = "digits"\n'
                     '[[surface]]\nx = "-1:1:0"\n')  # fmt: skip
    _one_line_error(run_tracker("enqueue", str(study), env=env), "0 points")
    assert _counts(root) == before


def test_enqueue_surface_sizes_tiles_from_the_stored_layout_without_torch(trained, tmp_path) -> None:  # fmt: skip
    """`tracker enqueue surface` counts a trained model's parameters from its checkpoint's
    layout, and an untrained one's from a trained model of the same architecture, config and
    data set: torch is never imported, and the tiles are those the built model's count gives."""
    import shutil
    import subprocess
    import sys

    from compute.models import parameter_count
    from tracker.surfaces.rows import default_tile

    root, env = trained
    # The shared home stays as it is. Its database is copied with SQLite's backup API, never as
    # files: copying a WAL database's -shm file from a process with connections to it drops
    # that process's locks on it, and a later connection may then rebuild the WAL index under
    # the test process's feet ("database disk image is malformed" in the next tests).
    shutil.copytree(root / ".tracker", tmp_path / ".tracker",
                    ignore=shutil.ignore_patterns("tracker.db*"))  # fmt: skip
    source = sqlite3.connect(root / ".tracker" / "tracker.db")
    target = sqlite3.connect(tmp_path / ".tracker" / "tracker.db")
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    env = tracker_env(tmp_path)
    _ok(run_tracker("enqueue", "model", "--arch", "mlp", "--widths", "16", "--dataset", "digits",
                    "--lr", "0.01", "--name", "twin", env=env))  # fmt: skip
    script = (
        "import sys\n"
        "from tracker.cli import main\n"
        "codes = [main(['enqueue', 'surface', '--model', m, '--x', '-1:1:65', '--y', '-1:1:65'])"
        " for m in sys.argv[1:]]\n"
        "print(codes, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, "mlp", "twin"], env=env, text=True,
                          capture_output=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert proc.stdout.strip().splitlines()[-1] == "[0, 0] False", proc.stdout + proc.stderr
    # 1,438 training samples x 1,210 parameters: ~1,150 points a tile, 33x33 instead of 13x13
    expected = default_tile(65, 65, 1438 * parameter_count("mlp", {"widths": [16]}, "digits"))
    assert expected == (33, 33)
    with sqlite3.connect(tmp_path / ".tracker" / "tracker.db") as conn:
        tiles = conn.execute("SELECT tile_nx, tile_ny FROM surfaces ORDER BY id").fetchall()
    assert tiles == [expected, expected]


def test_surface_flags_work_plot_export_and_import(trained) -> None:
    root, env = trained
    out = _ok(run_tracker("enqueue", "surface", "--model", "1", "--x", "-1:1:5", "--y", "-1:1:4",
                          "--tile", "3x2", "--subset", "300", env=env))  # fmt: skip
    assert "surface 1 (new, 4 tile task(s))" in out
    again = _ok(run_tracker("enqueue", "surface", "--model", "1", "--x", "-1:1:5", "--y", "-1:1:4",
                            "--tile", "3x2", "--subset", "300", env=env))  # fmt: skip
    assert "already queued" in again
    _ok(run_tracker("enqueue", "surface", "--model", "1", "--x", "-1:1:6", env=env))
    _ok(run_tracker("work", "--no-progress", env=env))
    shown = _ok(run_tracker("show", "study", "default", env=env))
    assert "models:" in shown and "surfaces:" in shown and "5x4" in shown

    plots = _ok(run_tracker("plot", "surface", "1", "2", "--out", str(root / "plots"), env=env))
    files = [Path(p) for p in plots.split()]
    assert {p.suffix for p in files} == {".png", ".pdf"}
    assert len(files) == 2 * 4 + 2  # four 2D kinds, one 1D curve; PNG and PDF each
    assert all(p.stat().st_size > 1000 for p in files)

    # h5 round trip: export, import as a new surface, same grid and values.
    h5 = root / "s1.h5"
    _ok(run_tracker("export", "surface", "1", "--format", "h5", "--out", str(h5), env=env))
    assert (root / "s1-directions.h5").exists()
    imported = _ok(run_tracker("import", "h5", str(h5), env=env))
    new_id = int(imported.split("as surface ")[1].split()[0])
    with sqlite3.connect(root / ".tracker" / "tracker.db") as conn:
        a = conn.execute("SELECT x_min, x_max, nx, y_min, y_max, ny, min_loss FROM surfaces WHERE id = 1").fetchone()  # fmt: skip
        b = conn.execute(f"SELECT x_min, x_max, nx, y_min, y_max, ny, min_loss FROM surfaces WHERE id = {new_id}").fetchone()  # fmt: skip
    assert a[:6] == b[:6]
    assert a[6] == pytest.approx(b[6], rel=1e-6)
    csv_a, csv_b = root / "a.csv", root / "b.csv"
    _ok(run_tracker("export", "surface", "1", "--format", "csv", "--out", str(csv_a), env=env))
    _ok(run_tracker("export", "surface", str(new_id), "--format", "csv", "--out", str(csv_b), env=env))  # fmt: skip
    rows_a = list(csv.DictReader(csv_a.open()))
    rows_b = list(csv.DictReader(csv_b.open()))
    assert len(rows_a) == 5 * 4
    np.testing.assert_allclose([float(r["loss"]) for r in rows_a], [float(r["loss"]) for r in rows_b], rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose([float(r["acc"]) for r in rows_a], [float(r["acc"]) for r in rows_b], rtol=1e-6)  # fmt: skip

    # VTP, read back by VTK's own PolyData reader.
    vtp = root / "s1.vtp"
    _ok(run_tracker("export", "surface", "1", "--format", "vtp", "--out", str(vtp), env=env))
    import vtk

    reader = vtk.vtkXMLPolyDataReader()
    reader.SetFileName(str(vtp))
    reader.Update()
    poly = reader.GetOutput()
    assert poly.GetNumberOfPoints() == 5 * 4
    assert poly.GetNumberOfCells() == (5 - 1) * (4 - 1)
    zs = sorted(poly.GetPoint(i)[2] for i in range(poly.GetNumberOfPoints()))
    np.testing.assert_allclose(zs, sorted(float(r["loss"]) for r in rows_a), rtol=1e-5)
    _one_line_error(run_tracker("export", "surface", "2", "--format", "vtp", env=env), "1D")


def test_unfinished_and_unknown_surfaces_say_so(trained) -> None:
    root, env = trained
    _one_line_error(run_tracker("plot", "surface", "424242", env=env), "unknown surface id 424242")
    _ok(run_tracker("enqueue", "surface", "--model", "2", "--x", "-1:1:3", env=env))
    with sqlite3.connect(root / ".tracker" / "tracker.db") as conn:
        sid = conn.execute("SELECT max(id) FROM surfaces").fetchone()[0]
    _one_line_error(run_tracker("export", "surface", str(sid), env=env), "not complete yet", "tracker work")  # fmt: skip
    _one_line_error(run_tracker("import", "h5", str(root / "missing.h5"), env=env), "missing.h5")


BAD_FILES = [
    (b"\x89PNG\r\n\x1a\n\x00\x00binary", ["not UTF-8 text"]),
    (b'study = "s"\n[[model]]\narchitecture = "mlp"\ndataset = "iris"\narch = true\n',
     ["arch in [[model]] number 1 must be a table"]),
    (b'study = "s"\n[[model]]\narchitecture = "mlp"\ndataset = "iris"\narch = -1e308\n',
     ["arch in [[model]] number 1 must be a table"]),
    (b'study = "s"\nmodel = "mlp"\n', ["[[model]] tables"]),
    (b'study = "s"\n[[model]]\narchitecture = "mlp"\ndataset = "iris"\n'
     b'[[surface]]\nx = "-1:1:5"\npairs = 1000000000\n', ["pairs", "between 1 and 1000"]),
    (b'study = "s"\n[[model]]\narchitecture = "mlp"\ndataset = "iris"\nseed = [' + b"1," * 20000
     + b'1]\nbatch_size = [1,2,3,4,5,6,7,8,9,10]\n', ["more than 10,000"]),
    (b'study = "s"\n[[interpolation]]\nfrom = 99999999999999999999999\nto = 1\nx = "0:1:3"\n',
     ["64-bit"]),
]  # fmt: skip


@pytest.mark.parametrize(("content", "needles"), BAD_FILES, ids=[f"file-{i}" for i in range(len(BAD_FILES))])  # fmt: skip
def test_hostile_study_files_are_one_line_and_write_nothing(trained, content, needles) -> None:
    root, env = trained
    before = _counts(root)
    study = root / "hostile.toml"
    study.write_bytes(content)
    _one_line_error(run_tracker("enqueue", str(study), env=env), *needles)
    folder = root / "a-folder.toml"
    folder.mkdir(exist_ok=True)
    _one_line_error(run_tracker("enqueue", str(folder), env=env), "is a folder")
    assert _counts(root) == before


def test_export_under_a_file_and_import_into_a_full_store_are_one_line(trained, monkeypatch) -> None:
    from tracker.cli import main
    from tracker.surfaces import formats

    root, env = trained
    h5 = root / "made.h5"
    xs = np.linspace(-1, 1, 5)
    formats.write_h5(h5, xs, xs, np.ones((1, 5, 5), np.float32), np.ones((1, 5, 5), np.float32))
    before = _counts(root)
    store = root / ".tracker" / "store.zarr"
    # Surfaces computed by earlier tests of this module share the store: compare, not count.
    chunks_before = set(store.glob("surfaces/*/loss/c/*"))

    # A store whose file system refuses writes (a full disk): every open for writing under
    # the store fails with ENOSPC, as the kernel would answer.
    home = ["--home", str(root / ".tracker")]
    with monkeypatch.context() as m:
        refusing = _refusing_open(store)
        m.setattr("builtins.open", refusing)
        m.setattr("io.open", refusing)
        assert main([*home, "import", "h5", str(h5), "--study", "imported"]) == 2
    assert _counts(root) == before  # no surface row, no array row
    assert set(store.glob("surfaces/*/loss/c/*")) == chunks_before  # no half-written array left

    out = _ok(run_tracker("import", "h5", str(h5), env=env))
    sid = out.split("as surface ")[1].split()[0]
    (root / "plainfile").write_text("x")
    _one_line_error(run_tracker("export", "surface", sid, "--format", "csv", "--out",
                                str(root / "plainfile" / "s.csv"), env=env), "--out")  # fmt: skip


def _refusing_open(store: Path):
    import builtins
    import errno

    real = builtins.open

    def refusing(file, mode="r", *args, **kwargs):
        if str(file).startswith(str(store)) and any(c in mode for c in "wax+"):
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real(file, mode, *args, **kwargs)

    return refusing
