"""Surface files: Goldstein h5 (ours and his), directions, ParaView VTP and CSV."""

from __future__ import annotations

import csv
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np
import pytest

from tracker import CorruptArray, NotFound, SpecError
from tracker.surfaces.formats import (
    read_direction_h5,
    read_h5,
    write_csv,
    write_direction_h5,
    write_h5,
    write_projection_h5,
    write_vtp,
)

XS = np.linspace(-1.0, 1.0, 5)  # nx = 5
YS = np.linspace(-0.5, 0.5, 3)  # ny = 3: non-square, so a transposed grid cannot pass


def surface_value(x, y):
    """Distinct at every grid point and asymmetric in x and y."""
    return 1.0 + x + 10.0 * y + 0.1 * x * y


def surface(groups: int = 2) -> tuple[np.ndarray, np.ndarray]:
    gx, gy = np.meshgrid(XS, YS)  # [ny, nx]: row index = y
    base = surface_value(gx, gy)
    loss = np.stack([base + 100.0 * g for g in range(groups)])
    acc = np.stack([(gx + 1.0) / 2.0 * (1.0 - 0.1 * g) for g in range(groups)])
    return loss, acc


# --------------------------------------------------------------------------------------------
# h5
# --------------------------------------------------------------------------------------------


def test_2d_round_trip_keeps_a_non_square_grid(tmp_path):
    loss, acc = surface(groups=2)
    path = write_h5(
        tmp_path / "s.h5", XS, YS, loss, acc, group=1, directions="dirs.h5",
        extra={"surface_id": 7, "normalization": "filter", "range": [-1, 1]},
    )  # fmt: skip
    back = read_h5(path)
    np.testing.assert_array_equal(back["xs"], XS)
    np.testing.assert_array_equal(back["ys"], YS)
    assert back["loss"].shape == (1, 3, 5)
    np.testing.assert_array_equal(back["loss"], loss[1:2])
    np.testing.assert_allclose(back["acc"], acc[1:2], rtol=0, atol=1e-15)
    assert back["splits"] == ["train"]
    assert back["dir_file"] == "dirs.h5"
    assert back["attrs"]["surface_id"] == 7
    assert back["attrs"]["normalization"] == "filter"
    assert back["attrs"]["tracker_groups"] == 2
    assert back["uncomputed"] == 0


def test_1d_round_trip(tmp_path):
    loss = surface_value(XS, 0.0)[None, None, :]
    acc = np.full_like(loss, np.nan)  # regression: no accuracy
    write_h5(tmp_path / "s.h5", XS, None, loss, acc)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert set(f.keys()) == {"xcoordinates", "train_loss", "train_acc"}
        assert f["train_loss"].shape == (5,)
    back = read_h5(tmp_path / "s.h5")
    assert back["ys"] is None
    assert back["loss"].shape == (1, 1, 5)
    np.testing.assert_array_equal(back["loss"], loss)
    assert np.isnan(back["acc"]).all()


def test_export_reads_the_way_goldsteins_plot_2d_reads_it(tmp_path):
    """plot_2D: X, Y = meshgrid(x, y); Z = f[surf_name][:]; contour(X, Y, Z)."""
    loss, acc = surface(groups=1)
    write_h5(tmp_path / "s.h5", XS, YS, loss, acc)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        x = np.array(f["xcoordinates"][:])
        y = np.array(f["ycoordinates"][:])
        X, Y = np.meshgrid(x, y)
        Z = np.array(f["train_loss"][:])
        acc_percent = np.array(f["train_acc"][:])
    assert Z.shape == X.shape  # contour() needs this; a (nx, ny) grid would fail here
    np.testing.assert_array_equal(Z, surface_value(X, Y))
    # h52vtp pairs meshgrid(x, y)[.].ravel() with vals.ravel(): the same correspondence.
    np.testing.assert_array_equal(Z.ravel(), surface_value(X.ravel(), Y.ravel()))
    np.testing.assert_allclose(acc_percent, 100.0 * (X + 1.0) / 2.0)


def write_like_goldstein(path: Path, xs, ys, skip: int | None = None) -> None:
    """Follow his setup_surface_file + crunch: (nx, ny) arrays of -1 filled by flat index."""
    with h5py.File(path, "w") as f:
        f["dir_file"] = "model_300.t7_weights_xignore=biasbn_xnorm=filter.h5"
        f["xcoordinates"] = xs
        if ys is not None:
            f["ycoordinates"] = ys
        shape = xs.shape if ys is None else (len(xs), len(ys))
        for split, offset in (("train", 0.0), ("test", 0.5)):
            losses, accuracies = -np.ones(shape), -np.ones(shape)
            if ys is None:
                coords = np.c_[xs, np.zeros_like(xs)]
            else:
                mx, my = np.meshgrid(xs, ys)
                coords = np.c_[mx.ravel(), my.ravel()]
            for ind, (cx, cy) in enumerate(coords):
                if ind == skip:
                    continue
                losses.ravel()[ind] = surface_value(cx, cy) + offset
                accuracies.ravel()[ind] = 50.0 + 10.0 * cx
            f[f"{split}_loss"] = losses
            f[f"{split}_acc"] = accuracies


def test_a_file_written_by_goldsteins_code_reads_with_row_index_y(tmp_path):
    path = tmp_path / "his.h5"
    write_like_goldstein(path, XS, YS, skip=7)  # flat index 7 = row 1, column 2
    back = read_h5(path)
    gx, gy = np.meshgrid(XS, YS)
    want = surface_value(gx, gy)
    want[1, 2] = np.nan
    np.testing.assert_array_equal(back["loss"][0], want)
    want_acc = (50.0 + 10.0 * gx) / 100.0
    want_acc[1, 2] = np.nan
    np.testing.assert_allclose(back["acc"][0], want_acc)
    assert back["uncomputed"] == 1
    assert back["splits"] == ["test", "train"]
    assert back["dir_file"].startswith("model_300.t7")
    test = read_h5(path, split="test")
    np.testing.assert_allclose(test["loss"][0, 0], surface_value(XS, YS[0]) + 0.5)


def test_a_1d_file_written_by_goldsteins_code_reads(tmp_path):
    write_like_goldstein(tmp_path / "his1d.h5", XS, None)
    back = read_h5(tmp_path / "his1d.h5")
    assert back["ys"] is None
    np.testing.assert_array_equal(back["loss"][0, 0], surface_value(XS, 0.0))
    np.testing.assert_allclose(back["acc"][0, 0], (50.0 + 10.0 * XS) / 100.0)


def test_direction_file_follows_write_list_and_keeps_tensor_order(tmp_path):
    rng = np.random.default_rng(0)
    # 12 tensors: h5py lists '10' and '11' before '2', so name order != tensor order.
    shapes = [(3, 2), (3,), (4, 3, 2, 2), (4,)] * 3
    xdir = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    ydir = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    write_direction_h5(tmp_path / "d.h5", xdir, ydir, explained_variance_ratio=[0.8, 0.1])
    with h5py.File(tmp_path / "d.h5", "r") as f:
        assert set(f["xdirection"].keys()) == {str(i) for i in range(12)}
        # his h5_util.read_list: [grp[str(i)] for i in range(len(grp))]
        his = [np.array(f["ydirection"][str(i)]) for i in range(len(f["ydirection"]))]
        np.testing.assert_allclose(f["explained_variance_ratio_"][:], [0.8, 0.1])
    for got, want in zip(his, ydir, strict=True):
        np.testing.assert_array_equal(got, want)
    back = read_direction_h5(tmp_path / "d.h5")
    for got, want in zip(back["xdirection"], xdir, strict=True):
        np.testing.assert_array_equal(got, want)
    assert len(back["ydirection"]) == 12


def test_1d_direction_file_has_no_ydirection(tmp_path):
    write_direction_h5(tmp_path / "d.h5", [np.ones((2, 2))])
    back = read_direction_h5(tmp_path / "d.h5")
    assert back["ydirection"] is None
    assert back["explained_variance_ratio"] is None


def test_projection_file_has_goldsteins_names(tmp_path):
    coords = np.array([[0.0, 0.0], [0.5, -0.25], [1.0, 0.125]])
    write_projection_h5(tmp_path / "p.h5", coords)
    with h5py.File(tmp_path / "p.h5", "r") as f:
        np.testing.assert_array_equal(f["proj_xcoord"][:], coords[:, 0])
        np.testing.assert_array_equal(f["proj_ycoord"][:], coords[:, 1])


# --------------------------------------------------------------------------------------------
# VTP
# --------------------------------------------------------------------------------------------


def parse_vtp(path: Path) -> dict[str, np.ndarray | int]:
    """An independent reader of VTK XML PolyData (ASCII), by the format's element names.

    meshio 5.3.5 (our dev dependency) reads VTU but has no PolyData (.vtp) reader, so the
    file is parsed with the standard library instead.
    """
    root = ET.parse(path).getroot()
    assert root.tag == "VTKFile" and root.attrib["type"] == "PolyData"
    piece = root.find("PolyData/Piece")

    def array(section: str, name: str) -> np.ndarray:
        for node in piece.findall(f"{section}/DataArray"):
            if node.attrib["Name"] == name:
                assert node.attrib["format"] == "ascii"
                return np.array((node.text or "").split(), dtype=np.float64)
        raise AssertionError(f"no {section}/{name}")

    points = array("Points", "Points").reshape(-1, 3)
    return {
        "n_points": int(piece.attrib["NumberOfPoints"]),
        "n_polys": int(piece.attrib["NumberOfPolys"]),
        "points": points,
        "zvalue": array("PointData", "zvalue"),
        "cell_mean": array("CellData", "averaged zvalue"),
        "connectivity": array("Polys", "connectivity").astype(np.int64),
        "offsets": array("Polys", "offsets").astype(np.int64),
    }


def test_vtp_parses_back_with_a_point_per_grid_point_and_a_quad_per_cell(tmp_path):
    loss, _ = surface(groups=1)
    vtp = parse_vtp(write_vtp(tmp_path / "s.vtp", XS, YS, loss[0]))
    nx, ny = XS.size, YS.size
    assert vtp["n_points"] == len(vtp["points"]) == nx * ny
    assert vtp["n_polys"] == len(vtp["offsets"]) == (nx - 1) * (ny - 1)
    np.testing.assert_array_equal(vtp["offsets"], 4 * np.arange(1, (nx - 1) * (ny - 1) + 1))
    # every point sits at (x, y, value of that (x, y))
    px, py, pz = vtp["points"].T
    np.testing.assert_allclose(pz, surface_value(px, py), rtol=1e-15)
    np.testing.assert_array_equal(vtp["zvalue"], pz)
    assert {(round(a, 9), round(b, 9)) for a, b in zip(px, py, strict=True)} == {
        (round(a, 9), round(b, 9)) for a in XS for b in YS
    }
    # every quad is one grid cell, counter-clockwise seen from +z
    quads = vtp["connectivity"].reshape(-1, 4)
    dx, dy = XS[1] - XS[0], YS[1] - YS[0]
    for quad in quads:
        corners = vtp["points"][quad, :2]
        assert np.ptp(corners[:, 0]) == pytest.approx(dx)
        assert np.ptp(corners[:, 1]) == pytest.approx(dy)
        cx, cy = corners[:, 0], corners[:, 1]
        area = 0.5 * np.sum(cx * np.roll(cy, -1) - np.roll(cx, -1) * cy)
        assert area == pytest.approx(dx * dy)
    np.testing.assert_allclose(vtp["cell_mean"], vtp["zvalue"][quads].mean(axis=1))


def test_vtp_clips_at_zmax_then_takes_log_like_h52vtp(tmp_path):
    z = np.array([[0.0, 1.0, 2.0], [3.0, 50.0, 7.0]])
    vtp = parse_vtp(write_vtp(tmp_path / "s.vtp", [0, 1, 2], [0, 1], z, log=True, zmax=10.0))
    want = np.log(np.minimum(z, 10.0) + 0.1).ravel()
    np.testing.assert_allclose(vtp["zvalue"], want)
    np.testing.assert_allclose(vtp["points"][:, 2], want)


def test_vtp_leaves_out_quads_touching_a_diverged_point(tmp_path):
    loss, _ = surface(groups=1)
    z = loss[0].copy()
    z[1, 2] = np.nan  # interior point: four cells touch it
    z[0, 0] = np.inf  # corner point: one cell
    vtp = parse_vtp(write_vtp(tmp_path / "s.vtp", XS, YS, z))
    assert vtp["n_points"] == 15
    assert vtp["n_polys"] == 8 - 4 - 1
    assert np.isfinite(vtp["points"]).all()  # bounds stay finite for ParaView
    assert np.isnan(vtp["zvalue"][1 * 5 + 2])
    bad = {1 * 5 + 2, 0}
    assert not bad & set(vtp["connectivity"].tolist())


def test_vtp_interpolation_resamples_the_plane(tmp_path):
    gx, gy = np.meshgrid(XS, YS)
    plane = 2.0 + 3.0 * gx - 4.0 * gy  # reproduced exactly by bilinear resampling
    vtp = parse_vtp(write_vtp(tmp_path / "s.vtp", XS, YS, plane, interpolate=9))
    assert vtp["n_points"] == 81 and vtp["n_polys"] == 64
    px, py, pz = vtp["points"].T
    np.testing.assert_allclose(pz, 2.0 + 3.0 * px - 4.0 * py, atol=1e-12)


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


def test_csv_has_one_row_per_group_and_point(tmp_path):
    loss, acc = surface(groups=2)
    loss[1, 2, 4] = np.nan
    with open(write_csv(tmp_path / "s.csv", XS, YS, loss, acc), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 3 * 5
    assert list(rows[0]) == ["group", "x", "y", "loss", "acc"]
    row = next(
        r for r in rows if r["group"] == "1" and float(r["x"]) == XS[3] and float(r["y"]) == YS[1]
    )
    assert float(row["loss"]) == loss[1, 1, 3]
    assert float(row["acc"]) == acc[1, 1, 3]
    assert math.isnan(float(rows[-1]["loss"]))


def test_csv_of_a_1d_surface_leaves_y_empty(tmp_path):
    loss = surface_value(XS, 0.0)[None, None, :]
    with open(write_csv(tmp_path / "s.csv", XS, None, loss, loss * 0), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5
    assert {r["y"] for r in rows} == {""}


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_vtp_of_a_1d_surface_is_refused(tmp_path):
    with pytest.raises(SpecError) as err:
        write_vtp(tmp_path / "s.vtp", XS, None, surface_value(XS, 0.0)[None, :])
    assert "1D" in one_line(err) and "h5 or csv" in one_line(err)
    assert not (tmp_path / "s.vtp").exists()


def test_missing_file_is_not_found(tmp_path):
    with pytest.raises(NotFound) as err:
        read_h5(tmp_path / "nope.h5")
    assert "nope.h5" in one_line(err)
    with pytest.raises(NotFound):
        read_direction_h5(tmp_path / "nope.h5")


def test_a_file_that_is_not_hdf5_is_corrupt(tmp_path):
    (tmp_path / "s.h5").write_text("not hdf5")
    with pytest.raises(CorruptArray) as err:
        read_h5(tmp_path / "s.h5")
    assert "not a readable HDF5 file" in one_line(err)


def test_a_file_without_train_loss_names_what_it_holds(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["xcoordinates"] = XS
        f["test_loss"] = np.ones(5)
    with pytest.raises(CorruptArray) as err:
        read_h5(tmp_path / "s.h5")
    assert "'train_loss'" in one_line(err) and "['test']" in one_line(err)
    assert read_h5(tmp_path / "s.h5", split="test")["loss"].shape == (1, 1, 5)


def test_a_grid_that_does_not_match_its_coordinates_is_corrupt(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["xcoordinates"] = XS
        f["ycoordinates"] = YS
        f["train_loss"] = np.ones((4, 4))
    with pytest.raises(CorruptArray) as err:
        read_h5(tmp_path / "s.h5")
    assert "(4, 4)" in one_line(err) and "3 x 5" in one_line(err)


def test_a_grid_of_the_wrong_shape_is_refused_on_write(tmp_path):
    loss, acc = surface(groups=1)
    with pytest.raises(SpecError) as err:
        write_h5(tmp_path / "s.h5", XS, YS, loss[0].T, acc[0].T)
    assert "[G, 3, 5]" in one_line(err)
    with pytest.raises(SpecError) as err:
        write_h5(tmp_path / "s.h5", XS, YS, loss, acc, group=3)
    assert "groups 0..0" in one_line(err)
    assert not (tmp_path / "s.h5").exists()
