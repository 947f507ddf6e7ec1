"""Curvature figures as PNG and PDF: the eigenvalue density (log y), the convergence of the
Ritz values, the top-k eigenvalues per epoch over training, and the lambda_min / lambda_max
map of a ``--curvature`` surface. Built on ``matplotlib.figure.Figure`` (no pyplot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tracker._figures import save_figure
from tracker.curvature.results import CurvatureMap

DPI = 120
DENSITY_FLOOR = 1e-12  # the smoothed density underflows to 0 far from every node


def density_figure(grid: np.ndarray, values: np.ndarray, title: str) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.semilogy(grid, np.maximum(values, DENSITY_FLOOR), lw=1.2)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log)")
    ax.set_title(title)
    return fig


def convergence_figure(history: np.ndarray, title: str) -> Any:
    """Each wanted Ritz value after each Lanczos step (= Hessian-vector product)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    steps = np.arange(1, history.shape[0] + 1)
    for i in range(history.shape[1]):
        ax.plot(steps, history[:, i], lw=1.2, label=f"lambda_{i + 1}")
    ax.set_xlabel("Lanczos step")
    ax.set_ylabel("Ritz value")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return fig


def top_k_figure(epochs: np.ndarray, values: np.ndarray, title: str) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for i in range(values.shape[1]):
        ax.plot(epochs, values[:, i], marker="o", lw=1.2, label=f"lambda_{i + 1}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("Hessian eigenvalue")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return fig


def curvature_map_figure(cmap: CurvatureMap, group: int = 0) -> Any:
    """1D: lambda_min and lambda_max along x, the ratio beside. 2D: three heatmaps."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4))
    axes = fig.subplots(1, 3)
    panels = (("lambda_min", cmap.lambda_min[group]), ("lambda_max", cmap.lambda_max[group]),
              ("|lambda_min / lambda_max|", cmap.ratio[group]))  # fmt: skip
    if cmap.ys is None:
        axes[0].plot(cmap.xs, panels[0][1][0], label="lambda_min")
        axes[0].plot(cmap.xs, panels[1][1][0], label="lambda_max")
        axes[0].legend(fontsize=7)
        axes[1].plot(cmap.xs, panels[1][1][0] - panels[0][1][0])
        axes[1].set_ylabel("lambda_max - lambda_min")
        axes[2].plot(cmap.xs, panels[2][1][0])
        for ax in axes:
            ax.set_xlabel("x")
    else:
        for ax, (name, grid) in zip(axes, panels, strict=True):
            mesh = ax.pcolormesh(cmap.xs, cmap.ys, grid, shading="auto", cmap="viridis")
            fig.colorbar(mesh, ax=ax)
            ax.set_title(name)
            ax.set_xlabel("x")
            ax.set_ylabel("y")
    fig.suptitle(f"surface {cmap.surface_id}: Hessian eigenvalue map (Goldstein)")
    return fig


def save(fig: Any, stem: Path) -> list[Path]:
    return save_figure(fig, stem, dpi=DPI, tight=True)
