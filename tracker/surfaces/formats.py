"""Surface files for other tools: Goldstein's h5 layout, ParaView VTP and long-format CSV.

Internal surfaces are ``loss`` and ``acc`` of shape ``[G, ny, nx]`` (G evaluation groups,
``ny = 1`` for a 1D surface), row index = y, column index = x, with ``xs [nx]`` and
``ys [ny]`` (``None`` for 1D). Accuracy is a fraction in [0, 1], NaN for regression.

Goldstein's h5 (tomgoldstein/loss-landscape) orientation, read from his code:
``plot_surface.crunch`` fills ``losses.ravel()[k]`` with the point
``meshgrid(xcoordinates, ycoordinates)[.].ravel()[k]``, so its flat order is y-major, x
fastest (``k = j * nx + i``); ``plot_2D`` then draws ``contour(X, Y, Z)`` with
``X, Y = meshgrid(x, y)``, i.e. ``Z[j, i]`` at ``(x[i], y[j])``, and ``h52vtp`` pairs
``ravel()`` of both. We store 2D grids with shape ``(ny, nx)``: the same bytes as his files
for square grids, and for non-square ones the same flat order in the shape ``plot_2D``'s
meshgrid needs (his own files are ``(nx, ny)`` there, which ``read_h5`` accepts: it relies
only on the flat order). Accuracy is stored in percent (0-100), as his ``eval_loss`` does.
"""

from __future__ import annotations

import csv
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tracker._exceptions import CorruptArray, NotFound, SpecError

__all__ = [
    "read_direction_h5",
    "read_h5",
    "write_csv",
    "write_direction_h5",
    "write_h5",
    "write_projection_h5",
    "write_vtp",
]

# Goldstein's crunch() pre-fills the grid with -1 and overwrites points as they finish.
_NOT_COMPUTED = -1.0


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def _coords(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise SpecError(
            f"{name} must be a non-empty 1-D array of coordinates, got shape {arr.shape}"
        )
    return arr


def _grid(
    xs: Any, ys: Any, loss: Any, acc: Any
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Check a surface against the internal layout and return float64 copies."""
    x = _coords(xs, "xs")
    y = None if ys is None else _coords(ys, "ys")
    ny = 1 if y is None else y.size
    want = (ny, x.size)
    out = []
    for name, values in (("loss", loss), ("acc", acc)):
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 3 or arr.shape[1:] != want:
            raise SpecError(
                f"{name} must have shape [groups, ny, nx] = [G, {want[0]}, {want[1]}] "
                f"(ny = 1 for a 1D surface), got {arr.shape}"
            )
        out.append(arr)
    if out[0].shape[0] != out[1].shape[0]:
        raise SpecError(
            f"loss has {out[0].shape[0]} groups but acc has {out[1].shape[0]}: pass both grids "
            "of the same surface"
        )
    return x, y, out[0], out[1]


# --------------------------------------------------------------------------------------------
# Goldstein h5
# --------------------------------------------------------------------------------------------


def _replace_atomically(path: Path, write: Any) -> Path:
    """Write through a temporary file in the same folder, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name (not mkstemp) so the file gets the usual permissions, not 0600.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _attr_value(key: str, value: Any) -> Any:
    if isinstance(value, str | bytes | int | float | bool | np.generic | np.ndarray):
        return value
    if isinstance(value, Mapping | list | tuple) or value is None:
        return json.dumps(value)
    raise SpecError(
        f"extra[{key!r}] is a {type(value).__name__}; pass a string, number, array, list or dict"
    )


def write_h5(
    path: str | os.PathLike[str],
    xs: Any,
    ys: Any,
    loss: Any,
    acc: Any,
    *,
    group: int = 0,
    split: str = "train",
    directions: str | os.PathLike[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write one group of a surface as a Goldstein surface file.

    Datasets: ``xcoordinates``, ``ycoordinates`` (2D only), ``{split}_loss`` and
    ``{split}_acc`` (accuracy in percent, 0-100, as his code stores it; NaN stays NaN),
    2D grids with shape ``(ny, nx)``, row index = y (see the module docstring), and
    ``dir_file`` (the direction file's path) when ``directions`` is given. The file is
    replaced whole, atomically.

    Args:
        path: the .h5 file to write.
        xs: x coordinates ``[nx]``.
        ys: y coordinates ``[ny]``, or None for a 1D surface.
        loss: ``[G, ny, nx]`` losses.
        acc: ``[G, ny, nx]`` accuracies as fractions in [0, 1] (NaN for regression).
        group: which of the G evaluation groups to write (his layout holds one grid).
        split: prefix of the dataset names: ``train`` gives ``train_loss``/``train_acc``.
        directions: path of the direction file (see ``write_direction_h5``), stored as
            ``dir_file`` like his surface files.
        extra: metadata stored as root attributes (strings, numbers, arrays; lists and
            dicts as JSON), e.g. the surface id and the direction settings.

    Returns:
        The path written.
    """
    x, y, loss_g, acc_g = _grid(xs, ys, loss, acc)
    n_groups = loss_g.shape[0]
    if not 0 <= group < n_groups:
        raise SpecError(f"group {group} does not exist: the surface has groups 0..{n_groups - 1}")
    if not split or not split.isidentifier():
        raise SpecError(f"split {split!r} must be a plain name such as 'train' or 'test'")
    grid_loss, grid_acc = loss_g[group], acc_g[group] * 100.0
    if y is None:
        grid_loss, grid_acc = grid_loss[0], grid_acc[0]

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f["xcoordinates"] = x
            if y is not None:
                f["ycoordinates"] = y
            f[f"{split}_loss"] = grid_loss
            f[f"{split}_acc"] = grid_acc
            if directions is not None:
                f["dir_file"] = os.fspath(directions)
            f.attrs["tracker_group"] = group
            f.attrs["tracker_groups"] = n_groups
            f.attrs["tracker_acc_unit"] = "percent"
            for key, value in (extra or {}).items():
                f.attrs[key] = _attr_value(key, value)

    return _replace_atomically(Path(path), write)


def _open_h5(path: str | os.PathLike[str], what: str) -> h5py.File:
    p = Path(path)
    if not p.is_file():
        raise NotFound(f"no {what} at {p}: check the path")
    try:
        return h5py.File(p, "r")
    except OSError as err:
        raise CorruptArray(
            f"{p} is not a readable HDF5 file ({str(err).splitlines()[0]}): write the {what} again"
        ) from None


def _dataset(f: h5py.File, name: str, path: Any) -> np.ndarray:
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        found = ", ".join(sorted(f.keys())) or "nothing"
        raise CorruptArray(f"{path} has no dataset {name!r} (it holds: {found})")
    try:
        return np.asarray(obj[()])
    except (OSError, TypeError, ValueError) as err:
        raise CorruptArray(
            f"cannot read {name!r} from {path} ({err}): write the file again"
        ) from None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


def read_h5(path: str | os.PathLike[str], *, split: str = "train") -> dict[str, Any]:
    """Read a Goldstein surface file (his code's or ``write_h5``'s) into the internal layout.

    Grids are read by their flat order (y-major, x fastest), so both his ``(nx, ny)`` arrays
    and our ``(ny, nx)`` ones come back right. Points his ``crunch`` never reached (loss and
    accuracy both -1) become NaN and are counted in ``uncomputed``.

    Args:
        path: the surface .h5 file.
        split: whose grids become ``loss``/``acc``: ``train`` reads ``train_loss`` and
            ``train_acc``.

    Returns:
        A dict with ``xs`` [nx], ``ys`` [ny] or None, ``loss`` and ``acc`` ``[1, ny, nx]``
        (accuracy as a fraction; NaN when the file has no ``{split}_acc``), ``split``,
        ``splits`` (every prefix with a ``*_loss`` grid), ``names`` (every grid dataset),
        ``grids`` (each grid dataset as stored, ``[1, ny, nx]``), ``dir_file`` (str or None),
        ``attrs`` (root attributes) and ``uncomputed`` (number of -1 placeholder points).

    Raises:
        NotFound: the file does not exist.
        CorruptArray: not HDF5, no coordinates, no ``{split}_loss``, or a grid of the wrong size.
    """
    with _open_h5(path, "surface file") as f:
        xs = _dataset(f, "xcoordinates", path).astype(np.float64).ravel()
        ys = None
        if "ycoordinates" in f:
            ys = _dataset(f, "ycoordinates", path).astype(np.float64).ravel()
        ny = 1 if ys is None else ys.size
        size = ny * xs.size

        grids: dict[str, np.ndarray] = {}
        for name, obj in f.items():
            if name in ("xcoordinates", "ycoordinates") or not isinstance(obj, h5py.Dataset):
                continue
            if (
                obj.size == size
                and obj.dtype.kind in "fiu"
                and obj.ndim == (1 if ys is None else 2)
            ):
                grids[name] = np.asarray(obj[()], dtype=np.float64).reshape(1, ny, xs.size)

        loss_name, acc_name = f"{split}_loss", f"{split}_acc"
        if loss_name not in grids:
            if loss_name in f:
                shape = getattr(f[loss_name], "shape", None)
                raise CorruptArray(
                    f"{path}: {loss_name!r} has shape {shape} but the coordinates give "
                    f"{ny} x {xs.size} points: the file is damaged or not a surface file"
                )
            found = sorted(n[: -len("_loss")] for n in grids if n.endswith("_loss"))
            hint = f"pass split= one of {found}" if found else "it holds no *_loss grid"
            raise CorruptArray(f"{path} has no {loss_name!r} grid ({hint})")

        loss = grids[loss_name].copy()
        acc = grids[acc_name] / 100.0 if acc_name in grids else np.full_like(loss, np.nan)
        if acc_name in grids:
            placeholder = (loss == _NOT_COMPUTED) & (grids[acc_name] == _NOT_COMPUTED)
        else:
            placeholder = loss == _NOT_COMPUTED
        loss[placeholder] = np.nan
        acc[placeholder] = np.nan

        dir_file = _text(f["dir_file"][()]) if isinstance(f.get("dir_file"), h5py.Dataset) else None
        attrs = {key: f.attrs[key] for key in f.attrs}

    return {
        "xs": xs,
        "ys": ys,
        "loss": loss,
        "acc": acc,
        "split": split,
        "splits": sorted(n[: -len("_loss")] for n in grids if n.endswith("_loss")),
        "names": sorted(grids),
        "grids": grids,
        "dir_file": dir_file,
        "attrs": attrs,
        "uncomputed": int(placeholder.sum()),
    }


def write_direction_h5(
    path: str | os.PathLike[str],
    xdirection: Sequence[Any],
    ydirection: Sequence[Any] | None = None,
    *,
    explained_variance_ratio: Any = None,
) -> Path:
    """Write directions in Goldstein's direction-file layout (his ``h5_util.write_list``).

    Groups ``xdirection`` and ``ydirection`` hold one dataset per tensor, named ``'0'``,
    ``'1'``, ... in the model's parameter (or state) order. PCA directions also carry
    ``explained_variance_ratio_``, which his ``plot_2D`` puts on the axis labels.

    Args:
        path: the .h5 file to write (replaced whole).
        xdirection: the first direction as a list of per-tensor arrays.
        ydirection: the second direction (same shapes), or None for 1D.
        explained_variance_ratio: the PCA ratios of the two directions, if any.

    Returns:
        The path written.
    """
    xs = [np.asarray(t) for t in xdirection]
    ys = None if ydirection is None else [np.asarray(t) for t in ydirection]
    if not xs:
        raise SpecError("xdirection is empty: pass one array per parameter tensor")
    if ys is not None and [t.shape for t in ys] != [t.shape for t in xs]:
        raise SpecError(
            "ydirection's tensor shapes differ from xdirection's: both directions must come "
            "from the same model layout"
        )

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            for name, tensors in (("xdirection", xs), ("ydirection", ys)):
                if tensors is None:
                    continue
                grp = f.create_group(name)
                for i, t in enumerate(tensors):
                    grp.create_dataset(str(i), data=t)
            if explained_variance_ratio is not None:
                f["explained_variance_ratio_"] = np.asarray(explained_variance_ratio, np.float64)

    return _replace_atomically(Path(path), write)


def _read_list(f: h5py.File, name: str, path: Any) -> list[np.ndarray]:
    grp = f[name]
    if not isinstance(grp, h5py.Group):
        raise CorruptArray(f"{path}: {name!r} is not a group of tensors '0'..'n'")
    # h5py lists '10' before '2'; the tensors' order is the integer order of their names.
    try:
        return [np.asarray(grp[str(i)][()]) for i in range(len(grp))]
    except KeyError:
        raise CorruptArray(
            f"{path}: {name!r} must hold datasets named '0'..'{len(grp) - 1}', "
            f"found {sorted(grp.keys())[:5]}..."
        ) from None


def read_direction_h5(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a Goldstein direction file.

    Returns:
        A dict with ``xdirection`` (list of arrays), ``ydirection`` (list or None) and
        ``explained_variance_ratio`` (array or None).
    """
    with _open_h5(path, "direction file") as f:
        if "xdirection" not in f:
            raise CorruptArray(f"{path} has no 'xdirection' group: it is not a direction file")
        return {
            "xdirection": _read_list(f, "xdirection", path),
            "ydirection": _read_list(f, "ydirection", path) if "ydirection" in f else None,
            "explained_variance_ratio": (
                np.asarray(f["explained_variance_ratio_"][()])
                if "explained_variance_ratio_" in f
                else None
            ),
        }


def write_projection_h5(path: str | os.PathLike[str], coords: Any) -> Path:
    """Write a projected trajectory as Goldstein's ``proj_xcoord``/``proj_ycoord`` file.

    Args:
        path: the .h5 file to write (replaced whole).
        coords: ``[n, 2]`` coordinates of the checkpoints on the PCA plane, in epoch order.

    Returns:
        The path written.
    """
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 2:
        raise SpecError(f"coords must have shape [n, 2], got {c.shape}")

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f["proj_xcoord"] = c[:, 0]
            f["proj_ycoord"] = c[:, 1]

    return _replace_atomically(Path(path), write)


# --------------------------------------------------------------------------------------------
# ParaView VTP
# --------------------------------------------------------------------------------------------


def _resample(
    xs: np.ndarray, ys: np.ndarray, z: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear resampling onto an n x n grid spanning the same ranges."""
    new_x = np.linspace(xs.min(), xs.max(), n)
    new_y = np.linspace(ys.min(), ys.max(), n)
    order_x, order_y = np.argsort(xs), np.argsort(ys)
    xs, ys, z = xs[order_x], ys[order_y], z[np.ix_(order_y, order_x)]
    along_x = np.stack([np.interp(new_x, xs, row) for row in z])  # [ny, n]
    out = np.stack([np.interp(new_y, ys, col) for col in along_x.T], axis=1)  # [n, n]
    return new_x, new_y, out


def _ascii(values: np.ndarray, per_line: int) -> str:
    flat = values.ravel()
    lines = []
    for start in range(0, flat.size, per_line):
        chunk = flat[start : start + per_line]
        if chunk.dtype.kind == "f":
            lines.append(" ".join(repr(float(v)) for v in chunk))
        else:
            lines.append(" ".join(str(int(v)) for v in chunk))
    return "\n".join("          " + line for line in lines)


def _data_array(
    name: str, vtk_type: str, values: np.ndarray, components: int, per_line: int
) -> str:
    return (
        f'        <DataArray type="{vtk_type}" Name="{name}" NumberOfComponents="{components}" '
        f'format="ascii">\n{_ascii(values, per_line)}\n        </DataArray>\n'
    )


def write_vtp(
    path: str | os.PathLike[str],
    xs: Any,
    ys: Any,
    z: Any,
    *,
    log: bool = False,
    zmax: float | None = None,
    interpolate: int | None = None,
) -> Path:
    """Write a 2D surface as ParaView PolyData (VTK XML, ASCII), like Goldstein's h52vtp.

    Points are ``(x, y, value)`` in his order (y-major, x fastest); a point array
    ``zvalue`` holds the values, a cell array ``averaged zvalue`` each quad's mean, and one
    quad joins every 2 x 2 block of neighbouring points. As in h52vtp, ``zmax`` clips first
    and ``log`` then maps values to ``log(value + 0.1)``. Quads with a NaN or infinite
    corner are left out (a diverged region shows as a hole); those points keep NaN in
    ``zvalue`` and sit at the largest finite height so the bounds stay finite.

    Args:
        path: the .vtp file to write.
        xs: x coordinates ``[nx]``.
        ys: y coordinates ``[ny]``; None (a 1D surface) is refused.
        z: values ``[ny, nx]``, row index = y.
        log: write ``log(value + 0.1)``.
        zmax: clip values above this before the log.
        interpolate: resample (bilinearly) to this many points along each axis.

    Returns:
        The path written.
    """
    if ys is None:
        raise SpecError(
            "VTP export needs a 2D surface and this one is 1D: export it as h5 or csv instead"
        )
    x, y = _coords(xs, "xs"), _coords(ys, "ys")
    values = np.asarray(z, dtype=np.float64)
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    if values.shape != (y.size, x.size):
        raise SpecError(f"z must have shape [ny, nx] = [{y.size}, {x.size}], got {values.shape}")
    if x.size < 2 or y.size < 2:
        raise SpecError(
            f"VTP export needs at least 2 points along each axis, got {x.size} x {y.size}"
        )
    if interpolate is not None:
        if int(interpolate) < 2:
            raise SpecError(f"interpolate must be at least 2 points per axis, got {interpolate}")
        x, y, values = _resample(x, y, values, int(interpolate))
    if zmax is not None:
        values = np.where(values > zmax, zmax, values)
    if log:
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.log(values + 0.1)

    ny, nx = values.shape
    flat = values.ravel()
    finite = np.isfinite(flat)
    height = np.where(finite, flat, flat[finite].max() if finite.any() else 0.0)
    gx, gy = np.meshgrid(x, y)
    points = np.column_stack([gx.ravel(), gy.ravel(), height])

    # Corner k = j * nx + i; counter-clockwise: (i, j), (i+1, j), (i+1, j+1), (i, j+1).
    k = (np.arange(ny - 1)[:, None] * nx + np.arange(nx - 1)[None, :]).ravel()
    quads = np.column_stack([k, k + 1, k + nx + 1, k + nx])
    quads = quads[finite[quads].all(axis=1)]
    cell_means = flat[quads].mean(axis=1)
    offsets = 4 * np.arange(1, len(quads) + 1)

    body = (
        '<?xml version="1.0"?>\n'
        '<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">\n'
        "  <PolyData>\n"
        f'    <Piece NumberOfPoints="{nx * ny}" NumberOfVerts="0" NumberOfLines="0" '
        f'NumberOfStrips="0" NumberOfPolys="{len(quads)}">\n'
        '      <PointData Scalars="zvalue">\n'
        + _data_array("zvalue", "Float64", flat, 1, 6)
        + "      </PointData>\n"
        '      <CellData Scalars="averaged zvalue">\n'
        + _data_array("averaged zvalue", "Float64", cell_means, 1, 6)
        + "      </CellData>\n"
        "      <Points>\n" + _data_array("Points", "Float64", points, 3, 6) + "      </Points>\n"
        "      <Polys>\n"
        + _data_array("connectivity", "Int64", quads, 1, 8)
        + _data_array("offsets", "Int64", offsets, 1, 8)
        + "      </Polys>\n"
        "    </Piece>\n"
        "  </PolyData>\n"
        "</VTKFile>\n"
    )
    return _replace_atomically(Path(path), lambda tmp: tmp.write_text(body))


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


def write_csv(path: str | os.PathLike[str], xs: Any, ys: Any, loss: Any, acc: Any) -> Path:
    """Write every point of every group as one row: ``group,x,y,loss,acc``.

    Rows run group by group, then y, then x (x fastest). ``y`` is empty for a 1D surface;
    accuracy is a fraction; missing or diverged values are written as ``nan``/``inf``.

    Returns:
        The path written.
    """
    x, y, loss_g, acc_g = _grid(xs, ys, loss, acc)
    n_groups, ny, nx = loss_g.shape

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["group", "x", "y", "loss", "acc"])
            for g in range(n_groups):
                for j in range(ny):
                    y_text = "" if y is None else repr(float(y[j]))
                    for i in range(nx):
                        out.writerow(
                            [
                                g,
                                repr(float(x[i])),
                                y_text,
                                repr(float(loss_g[g, j, i])),
                                repr(float(acc_g[g, j, i])),
                            ]
                        )

    return _replace_atomically(Path(path), write)
