"""Surface charts drawn on the server as PNG images (matplotlib, Agg).

Why not Plotly for these: a browser that shows a Plotly chart first downloads and compiles
Streamlit's 4.7 MB Plotly bundle, which took longer than the whole 2 s budget of a page with
four 101x101 surfaces. A PNG of the same four heatmaps is ~100 kB and is drawn at once. The 3D
view is an image too by default (:func:`surfaces_3d`, turned by elevation/azimuth); Plotly
draws only what the user asks to be interactive (hover values, rotating in the browser).

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state), so Streamlit's script
threads can draw at the same time; their layout is fixed by hand (a grid with a colour-bar
column), as matplotlib's constrained layout doubled the drawing time of four heatmaps.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

CMAP = "viridis"
DPI = 100
CONTOUR_LEVELS = 20


def values(s: dict[str, Any], metric: str, log: bool, group: int = 0) -> np.ndarray:
    """One minibatch group of a surface's metric, in log10 if asked (floored at 1e-12)."""
    z = s[metric][min(group, s[metric].shape[0] - 1)]
    return np.log10(np.maximum(z, 1e-12)) if log else z


def value_range(arrays: list[np.ndarray]) -> tuple[float, float]:
    """The finite min and max over all arrays: the one colour scale they share."""
    finite = [a[np.isfinite(a)].ravel() for a in arrays]
    joined = np.concatenate(finite) if finite else np.empty(0)
    if joined.size == 0:
        return 0.0, 1.0
    return float(joined.min()), float(joined.max())


def _grid(fig: Figure, rows: int, cols: int, left: float = 0.06) -> tuple[np.ndarray, Any]:
    """rows x cols axes sharing x and y, and a narrow colour-bar axes to their right."""
    right = 1.0 - 0.8 / fig.get_figwidth()  # room for the colour bar's ticks and label
    gs = fig.add_gridspec(rows, cols + 1, width_ratios=[1.0] * cols + [0.05], left=left,
                          right=right, bottom=0.14 if rows == 1 else 0.08, top=0.88,
                          wspace=0.2, hspace=0.18)  # fmt: skip
    axes = np.empty((rows, cols), dtype=object)
    for r in range(rows):
        for c in range(cols):
            axes[r, c] = fig.add_subplot(gs[r, c], sharex=axes[0, 0], sharey=axes[0, 0])
            if c:
                axes[r, c].tick_params(labelleft=False)
            if r < rows - 1:
                axes[r, c].tick_params(labelbottom=False)
    return axes, fig.add_subplot(gs[:, cols])


def _norm(lo: float, hi: float) -> Normalize:
    return Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1.0)


def _draw(ax: Any, s: dict[str, Any], z: np.ndarray, norm: Normalize, view: str) -> None:
    x, y = np.asarray(s["xs"], float), np.asarray(s["ys"], float)
    if view == "contour":
        levels = np.linspace(norm.vmin, norm.vmax, CONTOUR_LEVELS + 1)
        ax.contourf(x, y, np.ma.masked_invalid(z), levels=levels, cmap=CMAP, norm=norm,
                    extend="both")  # fmt: skip
    else:
        ax.pcolormesh(x, y, np.ma.masked_invalid(z), cmap=CMAP, norm=norm, shading="nearest")


PER_ROW = 4  # surfaces per row of a side-by-side image (up to 8 make two rows)


def title(s: dict[str, Any]) -> str:
    """A panel's title: the surface id and what it is of (model name, epoch, direction)."""
    label = str(s.get("label") or "")
    what = label.split(": ", 1)[1] if ": " in label else ""
    return f"#{s['id']}: {what}" if what else f"#{s['id']}"


def side_by_side(surfs: list[dict[str, Any]], metric: str, log: bool, view: str) -> Figure:
    """Heatmaps or filled contours of the surfaces on one colour scale and the same axes."""
    zs = [values(s, metric, log) for s in surfs]
    norm = _norm(*value_range(zs))
    cols = min(len(surfs), PER_ROW)
    rows = -(-len(surfs) // PER_ROW)
    # At most 1,460 px wide: Streamlit re-encodes wider images (a PIL resize per page run).
    fig = Figure(figsize=(3.3 * cols + 1.0, 3.6 * rows), dpi=DPI)
    grid, bar = _grid(fig, rows, cols, left=0.2 / cols)
    axes = grid.ravel()
    for ax, s, z in zip(axes, surfs, zs, strict=False):
        _draw(ax, s, z, norm, view)
        ax.set_title(title(s), fontsize=8)
        ax.set_xlabel("x")
    for ax in axes[len(surfs) :]:
        ax.set_visible(False)
    for r in range(rows):
        grid[r, 0].set_ylabel("y")
    label = f"log10 {metric}" if log else metric
    fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), cax=bar, label=label)
    return fig


def difference(a: dict[str, Any], b: dict[str, Any], metric: str) -> Figure:
    """A minus B on their common grid, on a diverging scale centred on zero."""
    diff = values(a, metric, False) - values(b, metric, False)
    finite = np.abs(diff[np.isfinite(diff)])
    top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    fig = Figure(figsize=(6.0, 4.2), dpi=DPI)
    grid, bar = _grid(fig, 1, 1, left=0.12)
    ax = grid[0, 0]
    mesh = ax.pcolormesh(np.asarray(a["xs"], float), np.asarray(a["ys"], float),
                         np.ma.masked_invalid(diff), cmap="RdBu_r", vmin=-top, vmax=top,
                         shading="nearest")  # fmt: skip
    fig.colorbar(mesh, cax=bar, label="difference")
    ax.set(title=f"{metric}: #{a['id']} minus #{b['id']}", xlabel="x", ylabel="y")
    return fig


def curves(surfs: list[dict[str, Any]], metric: str, log: bool) -> Figure:
    """1D surfaces overlaid (every minibatch group of each)."""
    fig = Figure(figsize=(9.0, 3.8), dpi=DPI)
    ax = fig.subplots()
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.95)
    for s in surfs:
        groups = s[metric].shape[0]
        for g in range(groups):
            suffix = f" (minibatch {g + 1})" if groups > 1 else ""
            ax.plot(s["xs"], values(s, metric, log, g)[0], label=s["label"] + suffix)
    ax.set(xlabel="alpha", ylabel=f"log10 {metric}" if log else metric)
    ax.legend(fontsize=8)
    return fig


def panel(surfs: list[dict[str, Any]], metric: str, log: bool) -> Figure:
    """Seed 001's panel: a row per direction pair, a column per minibatch, one colour scale."""
    groups = max(s[metric].shape[0] for s in surfs)
    zs = [[values(s, metric, log, g) for g in range(s[metric].shape[0])] for s in surfs]
    norm = _norm(*value_range([z for row in zs for z in row]))
    fig = Figure(figsize=(2.6 * groups + 1.4, 2.4 * len(surfs) + 0.6), dpi=DPI)
    axes, bar = _grid(fig, len(surfs), groups, left=0.12)
    for r, (s, row) in enumerate(zip(surfs, zs, strict=True)):
        for g in range(groups):
            ax = axes[r][g]
            if g < len(row):
                _draw(ax, s, row[g], norm, "heatmap")
            else:
                ax.set_axis_off()
            if r == 0:
                ax.set_title(f"minibatch {g + 1}")
        axes[r][0].set_ylabel(f"#{s['id']}")
    fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), cax=bar, label=metric)
    return fig


ELEVATION, AZIMUTH = 30, -60  # the 3D image's default camera (degrees; matplotlib's own)
MAX_3D_EDGES = 41  # quads per side of a surface in the 3D image (matplotlib samples larger grids)


def surfaces_3d(
    surfs: list[dict[str, Any]], metric: str, log: bool, elev: float = ELEVATION,
    azim: float = AZIMUTH,
) -> Figure:  # fmt: skip
    """The surfaces in 3D seen from ``elev``/``azim`` degrees, four to a row: one colour scale
    and one z range, each panel titled like the heatmaps. Drawn on the server (a PNG), so the
    browser shows it at once; the page's interactive view rotates it in Plotly instead."""
    from mpl_toolkits.mplot3d import Axes3D  # noqa: F401  (registers the 3d projection)

    zs = [values(s, metric, log) for s in surfs]
    norm = _norm(*value_range(zs))
    cols = min(len(surfs), PER_ROW)
    rows = -(-len(surfs) // PER_ROW)
    fig = Figure(figsize=(3.3 * cols + 1.0, 3.4 * rows), dpi=DPI)
    right = 1.0 - 0.8 / fig.get_figwidth()
    gs = fig.add_gridspec(rows, cols + 1, width_ratios=[1.0] * cols + [0.05], left=0.0,
                          right=right, bottom=0.04, top=0.92, wspace=0.05, hspace=0.1)  # fmt: skip
    label = f"log10 {metric}" if log else metric
    for i, (s, z) in enumerate(zip(surfs, zs, strict=True)):
        ax = fig.add_subplot(gs[i // cols, i % cols], projection="3d")
        gx, gy = np.meshgrid(np.asarray(s["xs"], float), np.asarray(s["ys"], float))
        ax.plot_surface(gx, gy, np.ma.masked_invalid(z), cmap=CMAP, norm=norm,
                        rcount=MAX_3D_EDGES, ccount=MAX_3D_EDGES, linewidth=0,
                        antialiased=False)  # fmt: skip
        ax.set_zlim(norm.vmin, norm.vmax)
        ax.view_init(elev=elev, azim=azim)
        ax.set_title(title(s), fontsize=8)
        ax.set_xlabel("x", labelpad=-8)
        ax.set_ylabel("y", labelpad=-8)
        ax.tick_params(labelsize=6, pad=-2)
    fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), cax=fig.add_subplot(gs[:, cols]),
                 label=label)  # fmt: skip
    return fig


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (what st.image sends to the browser)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()
