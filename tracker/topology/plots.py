"""Figures of jump-and-retrain topology: PHATE scatters, persistence diagrams and barcodes.

Built on ``matplotlib.figure.Figure`` (no pyplot), like ``tracker.surfaces.plots``; each ``figure_*``
returns the Figure (the dashboard can show it), each ``plot_*`` writes PNG and PDF.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from tracker._figures import save_figure

if TYPE_CHECKING:
    from matplotlib.axis import Axis

__all__ = ["COLOURS", "figure_embedding", "figure_persistence", "plot_embedding", "plot_persistence"]


# What each `--color` choice is called on the figure, its colour map, and whether its values are
# a few levels (a legend) or a continuum (a colour bar).
COLOURS = {
    "loss": ("loss", "viridis", False),
    "step": ("step size", "plasma", True),
    "seed": ("seed", "tab10", True),
    "epoch": ("epoch", "cividis", False),
}


def _plain_ticks(axis: Axis) -> None:
    """Tick labels as plain numbers: no offset text (a "+4e2" or "400f" in the corner) that
    readers misread as part of the values, and no scientific multiplier."""
    from matplotlib.ticker import ScalarFormatter

    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    axis.set_major_formatter(formatter)


def figure_embedding(
    coords: np.ndarray, values: np.ndarray, *, color: str = "loss", loss_name: str = "test",
    title: str = "",
) -> Figure:  # fmt: skip
    """The 2D PHATE coordinates coloured by one per-sample column (``color``, one of COLOURS):
    by loss level as seed 000's figures are, or by step size, seed or epoch."""
    if color not in COLOURS:
        raise ValueError(f"color {color!r} is not one of {', '.join(COLOURS)}")
    label, cmap, discrete = COLOURS[color]
    if color == "loss":
        label = f"{loss_name} loss"
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.subplots()
    vals = np.asarray(values, dtype=np.float64)
    if discrete:
        levels = np.unique(vals[np.isfinite(vals)])
        for k, v in enumerate(levels):
            sel = vals == v
            ax.scatter(coords[sel, 0], coords[sel, 1], s=12, label=f"{v:g}",
                       color=_discrete_colour(cmap, k, len(levels)))  # fmt: skip
        ax.legend(title=label, fontsize=8, markerscale=1.5)
    else:
        finite = np.isfinite(vals)
        sc = ax.scatter(coords[finite, 0], coords[finite, 1], c=vals[finite], s=12, cmap=cmap)
        if (~finite).any():
            ax.scatter(coords[~finite, 0], coords[~finite, 1], s=12, color="0.6",
                       marker="x", label="diverged")  # fmt: skip
            ax.legend(fontsize=8)
        bar = fig.colorbar(sc, ax=ax, label=label)
        _plain_ticks(bar.ax.yaxis)
    _plain_ticks(ax.xaxis)
    _plain_ticks(ax.yaxis)
    ax.set_xlabel("PHATE 1")
    ax.set_ylabel("PHATE 2")
    ax.set_title(f"coloured by {label}")
    if title:
        fig.suptitle(title)
    return fig


def _discrete_colour(cmap: str, k: int, n: int) -> tuple[float, ...]:
    from matplotlib import colormaps

    cm = colormaps[cmap]
    return tuple(cm(k % 10) if cmap == "tab10" else cm(0.1 + 0.8 * k / max(n - 1, 1)))


def figure_persistence(diagram: np.ndarray, *, title: str = "") -> Figure:
    """The diagram (birth vs death; infinite deaths on a line at the top) and the barcode."""
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    ax_d, ax_b = fig.subplots(1, 2)
    values = diagram[:, :2][np.isfinite(diagram[:, :2])]
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    pad = 0.05 * (hi - lo or 1.0)
    top = hi + 2 * pad
    for dim, colour in ((0, "tab:blue"), (1, "tab:orange")):
        rows = diagram[diagram[:, 2] == dim]
        fin = rows[np.isfinite(rows[:, 1])]
        inf = rows[~np.isfinite(rows[:, 1])]
        ax_d.scatter(fin[:, 0], fin[:, 1], s=12, color=colour, label=f"H{dim} ({len(rows)})")
        if len(inf):
            ax_d.scatter(inf[:, 0], np.full(len(inf), top), s=24, marker="^", color=colour)
    ax_d.plot([lo - pad, top], [lo - pad, top], color="0.5", lw=0.8)
    ax_d.axhline(top, color="0.7", ls="--", lw=0.8)
    ax_d.set_xlabel("birth (loss)")
    ax_d.set_ylabel("death (loss); triangles: never")
    ax_d.legend(fontsize=8)
    ax_d.set_title("persistence diagram")
    order = np.lexsort((diagram[:, 0], diagram[:, 2]))
    for y, i in enumerate(order):
        b, d, dim = diagram[i]
        end = top if not np.isfinite(d) else d
        ax_b.plot([b, end], [y, y], color="tab:blue" if dim == 0 else "tab:orange", lw=1)
    ax_b.set_xlabel("loss")
    ax_b.set_ylabel("bar (H0 below, H1 above)")
    ax_b.set_title("barcode")
    if title:
        fig.suptitle(title)
    return fig


def plot_embedding(
    stem: str | os.PathLike[str], coords: np.ndarray, values: np.ndarray, *,
    color: str = "loss", loss_name: str = "test", title: str = "",
) -> list[Path]:  # fmt: skip
    """Write the embedding figure as ``<stem>.png`` and ``<stem>.pdf``."""
    fig = figure_embedding(coords, values, color=color, loss_name=loss_name, title=title)
    return save_figure(fig, stem)


def plot_persistence(
    stem: str | os.PathLike[str], diagram: np.ndarray, *, title: str = ""
) -> list[Path]:
    """Write the persistence figure as ``<stem>.png`` and ``<stem>.pdf``."""
    return save_figure(figure_persistence(diagram, title=title), stem)
