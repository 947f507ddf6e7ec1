"""Loss-surface figures with matplotlib: 1D curves, 2D contours/heatmaps/3D, the seed 001 panel.

Figures are built on ``matplotlib.figure.Figure`` directly, never through pyplot, so no GUI
backend is touched and nothing stays alive in pyplot's registry (workers and the dashboard
can build many). Each ``figure_*`` function returns the Figure (the dashboard can show it);
each ``plot_*`` function builds one and writes ``<stem>.png`` and ``<stem>.pdf``.

Grids follow the internal layout: ``z[j, i]`` is the value at ``(xs[i], ys[j])`` (row index =
y). NaN and infinite values (diverged points) are masked: holes in contours and heatmaps,
gaps in curves. Accuracy comes in as a fraction and is drawn in percent, as Goldstein does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, LogNorm, Normalize, PowerNorm
from matplotlib.figure import Figure

from tracker._exceptions import SpecError
from tracker._figures import save_figure

__all__ = [
    "KINDS",
    "figure_1d",
    "figure_2d",
    "figure_panel",
    "plot_1d",
    "plot_2d",
    "plot_panel",
    "save_figure",
]

KINDS = ("contour", "contourf", "heatmap", "3d")
_MISSING_COLOUR = "0.85"  # light grey behind masked (diverged or missing) points


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


def _coords(values: Any, name: str, minimum: int = 1) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size < minimum:
        raise SpecError(
            f"{name} must be a 1-D array of at least {minimum} coordinates, got {arr.shape}"
        )
    return arr


def _finite_range(
    values: np.ndarray, vmin: float | None, vmax: float | None
) -> tuple[float, float]:
    """Colour range: the given limits, else the finite data's; never empty."""
    finite = values[np.isfinite(values)]
    lo = float(vmin) if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if hi < lo:
        raise SpecError(f"vmin ({lo}) is above vmax ({hi}): swap them")
    if hi == lo:  # a flat grid still needs a non-empty range for levels and colours
        pad = 0.5 if lo == 0 else abs(lo) * 0.05
        lo, hi = lo - pad, hi + pad
    return lo, hi


BASIN_LEVELS = 20  # default count of the log-spaced levels above the minimum
BASIN_DEPTH = 1e-3  # the lowest level sits this fraction of the range above the minimum


def basin_levels(lo: float, hi: float, n: int = BASIN_LEVELS) -> np.ndarray:
    """Levels log-spaced above the minimum: dense at the bottom of the basin, where evenly
    spaced levels leave one flat area (a basin below 0.35 on a 0-8 scale gets no contour)."""
    span = hi - lo
    return lo + span * np.geomspace(BASIN_DEPTH, 1.0, n)


def _levels(levels: int | Sequence[float] | None, lo: float, hi: float) -> np.ndarray:
    if levels is None:
        return basin_levels(lo, hi)
    if isinstance(levels, int | np.integer):
        if levels < 2:
            raise SpecError(f"levels must be at least 2 (or a list of values), got {levels}")
        return np.linspace(lo, hi, int(levels))
    out = np.asarray(levels, dtype=np.float64)
    if out.ndim != 1 or out.size < 2 or np.any(np.diff(out) <= 0):
        raise SpecError("levels must be a count or an increasing list of at least 2 values")
    return out


BASIN_GAMMA = 0.3  # the default colour scale's power: more colours near the minimum


def _norm(lo: float, hi: float, log: bool, basin: bool = False) -> Normalize:
    """The colour scale: logarithmic (which needs a positive bottom), a power scale that spends
    its colours near the minimum (``basin``: the default), or linear (given levels)."""
    if basin and not log:
        return PowerNorm(BASIN_GAMMA, lo, hi)
    if not log:
        return Normalize(lo, hi)
    if hi <= 0:
        raise SpecError("--log needs positive values: this grid has none above 0")
    return LogNorm(lo if lo > 0 else hi * BASIN_DEPTH, hi)


def _label_contours(ax: Any, contours: Any, levels: np.ndarray) -> None:
    """Label at most 8 levels, not the two innermost: labels on every line pile up where lines
    crowd (the bottom of the basin, the steep corners of a grid)."""
    step = max(1, int(np.ceil(len(levels) / 8)))
    ax.clabel(contours, levels=contours.levels[2::step], inline=True, inline_spacing=3,
              fontsize=7, fmt="%.3g")  # fmt: skip


def _cmap(name: str) -> Colormap:
    return colormaps[name].with_extremes(bad=_MISSING_COLOUR)


def _curves(values: Any, name: str, nx: int) -> np.ndarray:
    """Accept ``[G, 1, nx]`` (internal), ``[G, nx]`` or ``[nx]``; return ``[G, nx]``."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[1] == 1:
        arr = arr[:, 0, :]
    elif arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != nx:
        raise SpecError(
            f"{name} must have shape [groups, 1, nx] or [groups, nx] with nx = {nx}, got "
            f"{np.shape(values)}"
        )
    return np.where(np.isfinite(arr), arr, np.nan)


# --------------------------------------------------------------------------------------------
# 1D
# --------------------------------------------------------------------------------------------


def figure_1d(
    xs: Any,
    loss: Any,
    acc: Any = None,
    *,
    title: str | None = None,
    group_labels: Sequence[str] | None = None,
    log: bool = False,
    loss_max: float | None = None,
    xlabel: str = "step along the direction",
) -> Figure:
    """Loss (left axis) and accuracy in percent (right axis) along one direction.

    Args:
        xs: coordinates ``[nx]``.
        loss: ``[G, 1, nx]``, ``[G, nx]`` or ``[nx]``; one curve per group.
        acc: the same shape as ``loss`` in fractions, or None / all NaN (regression): then
            no accuracy axis is drawn.
        title: figure title.
        group_labels: legend names of the groups (default ``group 0``, ...).
        log: logarithmic loss axis.
        loss_max: top of the loss axis (Goldstein's ``loss_max``).
        xlabel: the x axis label.
    """
    x = _coords(xs, "xs", minimum=2)
    losses = _curves(loss, "loss", x.size)
    accs = None if acc is None else _curves(acc, "acc", x.size)
    if accs is not None and accs.shape != losses.shape:
        raise SpecError(
            f"acc has shape {accs.shape} but loss has {losses.shape}: pass matching grids"
        )
    if accs is not None and not np.isfinite(accs).any():
        accs = None
    n_groups = losses.shape[0]
    labels = list(group_labels) if group_labels is not None else []
    if group_labels is not None and len(labels) != n_groups:
        raise SpecError(f"group_labels has {len(labels)} names for {n_groups} groups")
    if not labels:
        labels = [""] if n_groups == 1 else [f"group {g}" for g in range(n_groups)]

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    shades = np.linspace(1.0, 0.45, n_groups) if n_groups > 1 else np.array([0.8])
    blues, reds = colormaps["Blues"], colormaps["Reds"]
    handles = []
    for g in range(n_groups):
        name = f" ({labels[g]})" if labels[g] else ""
        (line,) = ax.plot(x, losses[g], "-", color=blues(shades[g]), lw=1.3, label="loss" + name)
        handles.append(line)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss", color=blues(0.8))
    ax.tick_params("y", colors=blues(0.8))
    ax.set_xlim(x.min(), x.max())
    if loss_max is not None:
        ax.set_ylim(top=loss_max)
    if accs is not None:
        ax2 = ax.twinx()
        for g in range(n_groups):
            name = f" ({labels[g]})" if labels[g] else ""
            (line,) = ax2.plot(
                x, accs[g] * 100.0, "--", color=reds(shades[g]), lw=1.3, label="accuracy" + name
            )
            handles.append(line)
        ax2.set_ylim(0, 100)
        ax2.set_ylabel("accuracy (%)", color=reds(0.8))
        ax2.tick_params("y", colors=reds(0.8))
    if len(handles) > 1:
        ax.legend(handles=handles, loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def plot_1d(
    path_stem: str | os.PathLike[str],
    xs: Any,
    loss: Any,
    acc: Any = None,
    *,
    title: str | None = None,
    **options: Any,
) -> list[Path]:
    """Write the 1D loss/accuracy curve (``figure_1d``) as PNG and PDF; return the paths."""
    return save_figure(figure_1d(xs, loss, acc, title=title, **options), path_stem)


# --------------------------------------------------------------------------------------------
# 2D
# --------------------------------------------------------------------------------------------


def _plane(xs: Any, ys: Any, z: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if ys is None:
        raise SpecError("this plot needs a 2D surface and this one is 1D: use plot_1d")
    x, y = _coords(xs, "xs", minimum=2), _coords(ys, "ys", minimum=2)
    grid = np.asarray(z, dtype=np.float64)
    if grid.ndim == 3 and grid.shape[0] == 1:
        grid = grid[0]
    if grid.shape != (y.size, x.size):
        raise SpecError(
            f"z must have shape [ny, nx] = [{y.size}, {x.size}] (row index = y), got {grid.shape}"
        )
    return x, y, grid


def _draw_trajectory(ax: Any, trajectory: Any, labels: Sequence[Any] | None) -> None:
    path = np.asarray(trajectory, dtype=np.float64)
    if path.ndim != 2 or path.shape[1] != 2 or path.shape[0] == 0:
        raise SpecError(
            f"trajectory must have shape [n, 2] (points on the plane), got {path.shape}"
        )
    if labels is not None and len(labels) != path.shape[0]:
        raise SpecError(f"trajectory_labels has {len(labels)} entries for {path.shape[0]} points")
    ax.plot(path[:, 0], path[:, 1], "-", color="crimson", lw=1.2, marker=".", ms=5, zorder=3)
    ax.plot(*path[0], "o", mfc="white", mec="crimson", ms=6, zorder=4, label="start")
    ax.plot(*path[-1], "*", color="crimson", ms=11, zorder=4, label="end")
    for (px, py), text in zip(path, labels or [], strict=False):
        if text is not None and str(text) != "":
            ax.annotate(
                str(text), (px, py), xytext=(4, 4), textcoords="offset points", fontsize=7,
                color="crimson", zorder=5,
            )  # fmt: skip
    ax.legend(loc="best", fontsize="small")


def figure_2d(
    xs: Any,
    ys: Any,
    z: Any,
    *,
    kind: str = "contour",
    levels: int | Sequence[float] | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    log: bool = False,
    title: str | None = None,
    trajectory: Any = None,
    trajectory_labels: Sequence[Any] | None = None,
    xlabel: str = "x",
    ylabel: str = "y",
    value_label: str = "loss",
    cmap: str | None = None,
) -> Figure:
    """A 2D surface as contour lines, filled contours, a heatmap or a 3D surface.

    Args:
        xs: x coordinates ``[nx]``.
        ys: y coordinates ``[ny]``.
        z: values ``[ny, nx]`` (or ``[1, ny, nx]``), ``z[j, i]`` at ``(xs[i], ys[j])``.
        kind: one of ``KINDS``.
        levels: number of evenly spaced contour levels, or the level values (Goldstein uses
            ``arange(0.1, 10, 0.5)``); None: ``basin_levels``, log-spaced above the minimum.
        vmin: bottom of the colour range (default: the finite minimum).
        vmax: top of the colour range (default: the finite maximum); a 3D surface is
            clipped to [vmin, vmax].
        log: a logarithmic colour scale (values at or below 0 are masked).
        title: figure title.
        trajectory: ``[n, 2]`` points drawn over the plane (a PCA trajectory), 2D kinds only.
        trajectory_labels: one label per trajectory point (e.g. epochs); None or "" skips one.
        xlabel: x axis label (e.g. ``1st PC: 83.2 %``).
        ylabel: y axis label.
        value_label: colour bar label.
        cmap: matplotlib colour map name (default viridis; coolwarm for 3d, as Goldstein).
    """
    if kind not in KINDS:
        raise SpecError(f"unknown plot kind {kind!r}: use one of {', '.join(KINDS)}")
    x, y, grid = _plane(xs, ys, z)
    if log:
        if np.isfinite(grid).any() and not (grid > 0).any():
            raise SpecError("--log needs positive values: this grid has none above 0")
        grid = np.where(grid > 0, grid, np.nan)
    lo, hi = _finite_range(grid, vmin, vmax)
    norm = _norm(lo, hi, log, basin=levels is None)
    lo, hi = float(norm.vmin), float(norm.vmax)  # type: ignore[arg-type]
    colours = _cmap(cmap or ("coolwarm" if kind == "3d" else "viridis"))
    masked = np.ma.masked_invalid(grid)
    has_values = masked.count() > 0
    gx, gy = np.meshgrid(x, y)

    fig = Figure(figsize=(6.4, 5.0), layout="constrained")
    if kind == "3d":
        if trajectory is not None:
            raise SpecError(
                "a trajectory is drawn on the contour, contourf or heatmap kinds, not on 3d"
            )
        ax = fig.add_subplot(projection="3d")
        # plot_surface leaves out faces with a NaN corner; clip to the range like Goldstein's zlim.
        shown = np.where(np.isfinite(grid), np.clip(grid, lo, hi), np.nan)
        surf = ax.plot_surface(
            gx, gy, shown, cmap=colours, norm=norm, linewidth=0, antialiased=False
        )
        ax.set_zlim(lo, hi)
        fig.colorbar(surf, ax=ax, shrink=0.6, label=value_label)
    else:
        ax = fig.add_subplot()
        ax.set_facecolor(_MISSING_COLOUR)  # holes left by masked points, as in the heatmap
        mappable: Any = None
        if kind == "heatmap":
            mappable = ax.pcolormesh(x, y, masked, shading="nearest", cmap=colours, norm=norm)
        elif has_values:
            lv = _levels(levels, lo, hi)
            if log and levels is None:
                lv = np.geomspace(lo, hi, BASIN_LEVELS)
            if kind == "contourf":
                mappable = ax.contourf(
                    gx, gy, masked, levels=lv, cmap=colours, norm=norm, extend="both"
                )
            else:
                mappable = ax.contour(
                    gx, gy, masked, levels=lv, cmap=colours, norm=norm, linewidths=1
                )
                _label_contours(ax, mappable, lv)
        if not has_values:
            ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
        if mappable is not None:
            fig.colorbar(mappable if kind != "contour" else ScalarMappable(norm, colours), ax=ax,
                         label=value_label)  # fmt: skip
        ax.set_xlim(x.min(), x.max())
        ax.set_ylim(y.min(), y.max())
        if trajectory is not None:
            _draw_trajectory(ax, trajectory, trajectory_labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return fig


def plot_2d(
    path_stem: str | os.PathLike[str],
    xs: Any,
    ys: Any,
    z: Any,
    *,
    kind: str = "contour",
    title: str | None = None,
    trajectory: Any = None,
    **options: Any,
) -> list[Path]:
    """Write one 2D view (``figure_2d``) as PNG and PDF; return the paths."""
    fig = figure_2d(xs, ys, z, kind=kind, title=title, trajectory=trajectory, **options)
    return save_figure(fig, path_stem)


# --------------------------------------------------------------------------------------------
# the seed 001 panel
# --------------------------------------------------------------------------------------------


def _centre_index(coords: np.ndarray) -> int:
    return int(np.argmin(np.abs(coords)))


def figure_panel(
    grids: Any,
    xs: Any,
    ys: Any,
    *,
    centre_relative: bool = False,
    contour: bool = False,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    levels: int | Sequence[float] = 15,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
) -> Figure:
    """Direction pairs (rows) x minibatches (columns) on ONE colour scale, as in seed 001.

    Every panel uses the same ``Normalize`` (and, with ``contour``, the same levels), so
    colours compare across pairs and minibatches; one colour bar serves them all.

    Args:
        grids: ``[pairs][groups]`` of ``[ny, nx]`` grids (an array ``[P, G, ny, nx]``).
        xs: x coordinates ``[nx]``.
        ys: y coordinates ``[ny]``.
        centre_relative: draw each grid minus its own centre value (the point nearest
            (0, 0), the unperturbed model).
        contour: filled contours with contour lines instead of heatmaps.
        row_labels: one name per direction pair (default ``pair 0``, ...).
        col_labels: one name per group (default ``batch 0``, ...).
        title: figure title.
        levels: contour level count or values (contour only).
        vmin: bottom of the shared colour range (default: finite minimum over all grids).
        vmax: top of the shared colour range (default: finite maximum over all grids).
        cmap: matplotlib colour map name.
    """
    x, y = _coords(xs, "xs", minimum=2), _coords(ys, "ys", minimum=2)
    try:
        stack = np.asarray(grids, dtype=np.float64)
    except ValueError:
        raise SpecError("grids must be [pairs][groups] of equally shaped [ny, nx] grids") from None
    if stack.ndim != 4 or stack.shape[2:] != (y.size, x.size):
        raise SpecError(
            f"grids must have shape [pairs, groups, ny, nx] with ny = {y.size}, nx = {x.size}, "
            f"got {stack.shape}"
        )
    n_rows, n_cols = stack.shape[:2]
    rows = list(row_labels) if row_labels is not None else [f"pair {r}" for r in range(n_rows)]
    cols = list(col_labels) if col_labels is not None else [f"batch {c}" for c in range(n_cols)]
    if len(rows) != n_rows or len(cols) != n_cols:
        raise SpecError(
            f"got {len(rows)} row and {len(cols)} column labels for {n_rows} pairs x {n_cols} groups"
        )
    cj, ci = _centre_index(y), _centre_index(x)
    if centre_relative:
        stack = stack - stack[:, :, cj : cj + 1, ci : ci + 1]
    lo, hi = _finite_range(stack, vmin, vmax)
    norm = Normalize(lo, hi)  # the one scale every panel shares
    colours = _cmap(cmap)
    lv = _levels(levels, lo, hi) if contour else None
    gx, gy = np.meshgrid(x, y)

    fig = Figure(figsize=(2.9 * n_cols + 1.2, 2.6 * n_rows + 0.6), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False, sharex=True, sharey=True)
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r, c]
            masked = np.ma.masked_invalid(stack[r, c])
            if not contour:
                ax.pcolormesh(x, y, masked, shading="nearest", cmap=colours, norm=norm)
            elif masked.count() > 0:
                ax.contourf(gx, gy, masked, levels=lv, cmap=colours, norm=norm, extend="both")
                ax.contour(gx, gy, masked, levels=lv, colors="k", linewidths=0.4)
            ax.set_facecolor(_MISSING_COLOUR)
            ax.plot(x[ci], y[cj], "+", color="white", ms=8, mew=1.5)
            ax.set_xlim(x.min(), x.max())
            ax.set_ylim(y.min(), y.max())
            if r == 0:
                ax.set_title(cols[c], fontsize="medium")
            if c == 0:
                ax.set_ylabel(rows[r])
    label = "loss - centre loss" if centre_relative else "loss"
    fig.colorbar(ScalarMappable(norm, colours), ax=axes.ravel().tolist(), label=label)
    if title:
        fig.suptitle(title)
    return fig


def plot_panel(
    path_stem: str | os.PathLike[str],
    grids: Any,
    xs: Any,
    ys: Any,
    *,
    centre_relative: bool = False,
    contour: bool = False,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    **options: Any,
) -> list[Path]:
    """Write the seed 001 panel (``figure_panel``) as PNG and PDF; return the paths."""
    fig = figure_panel(
        grids, xs, ys, centre_relative=centre_relative, contour=contour,
        row_labels=row_labels, col_labels=col_labels, **options,
    )  # fmt: skip
    return save_figure(fig, path_stem)
