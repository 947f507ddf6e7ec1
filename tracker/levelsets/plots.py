"""Figures of the level-set method as PNG and PDF: Figure 2 (angle, R, test loss and accuracy
per predictor step, mean +- std over runs) and Figure 7 (PCA of the theta snapshots).

Figures are built on ``matplotlib.figure.Figure`` (no pyplot, no GUI backend) and saved by the
one figure saver with their margins cropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tracker._figures import save_figure
from tracker.levelsets.results import PCA_LAMBDA

FIG2_PANELS = (("angle_deg", "angle(grad R, grad L) [deg]"), ("weight_norm_sq", "R = |theta|^2"),
               ("test_loss", "test loss"), ("test_acc", "test accuracy"))  # fmt: skip
DPI = 120


def figure2(series: dict[str, np.ndarray], setup: str) -> Any:
    """Four panels: the mean line and a +- std band per predictor step."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 3.6))
    axes = fig.subplots(1, 4)
    x = series["step"]
    for ax, (name, label) in zip(axes, FIG2_PANELS, strict=True):
        mean, std = series[f"{name}_mean"], series[f"{name}_std"]
        ax.plot(x, mean, lw=1.2)
        ax.fill_between(x, mean - std, mean + std, alpha=0.3)
        ax.set_xlabel("predictor step")
        ax.set_ylabel(label)
    fig.suptitle(f"{setup}: level-set traversal, mean +- std over runs")
    fig.tight_layout()
    return fig


def figure7(pca: dict[str, np.ndarray], setup: str) -> Any:
    """Snapshots on (up to) two groups of three components, coloured by predictor step, with
    the mean traversal end and the mean L2 end."""
    from matplotlib.figure import Figure

    coords, k = pca["coords"], pca["coords"].shape[1]
    groups = [(0, 1, 2), (3, 4, 5)] if k >= 6 else [tuple(range(min(k, 3)))]
    fig = Figure(figsize=(6.5 * len(groups), 5.5))
    for g, dims in enumerate(groups):
        dims3 = tuple(dims) + (dims[-1],) * (3 - len(dims))
        ax = fig.add_subplot(1, len(groups), g + 1, projection="3d")
        sc = ax.scatter(*(coords[:, d] for d in dims3), c=pca["steps"], cmap="viridis", s=6)
        for key, colour, label in (("levelset_end", "red", "traversal end (mean)"),
                                   ("l2_end", "black", f"L2 end, lambda={PCA_LAMBDA:g} (mean)")):  # fmt: skip
            if key in pca:
                ax.scatter(*(pca[key][d] for d in dims3), c=colour, s=60, marker="*", label=label)
        ax.set_xlabel(f"PC{dims3[0] + 1}")
        ax.set_ylabel(f"PC{dims3[1] + 1}")
        ax.set_zlabel(f"PC{dims3[2] + 1}")
        ax.legend(loc="upper left", fontsize=7)
        fig.colorbar(sc, ax=ax, shrink=0.6, label="predictor step")
    fig.suptitle(f"{setup}: PCA of theta snapshots (z-scored, {k} components, seed 0)")
    return fig


def plot_figure2(series: dict[str, np.ndarray], setup: str, out: Path) -> list[Path]:
    """Write ``levelset-SETUP-fig2`` as PNG and PDF."""
    return save_figure(figure2(series, setup), out / f"levelset-{setup}-fig2", dpi=DPI, tight=True)


def plot_figure7(pca: dict[str, np.ndarray], setup: str, out: Path) -> list[Path]:
    """Write ``levelset-SETUP-fig7`` as PNG and PDF."""
    return save_figure(figure7(pca, setup), out / f"levelset-{setup}-fig7", dpi=DPI, tight=True)
