"""The surfaces behind a surface measure: every seed's loss curve (1D) or the first seed's
contours (2D) of one model checkpoint, as MLflow artifacts of the model's run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from tracker._arrays import read_array
from tracker._figures import save_figure
from tracker._schema import Surface
from tracker._store import ArrayStore


def plot_measure_surfaces(
    session: Session, store: ArrayStore, surface_ids: list[int], title: str,
    path_stem: str | os.PathLike[str],
) -> list[Path]:
    """One figure for the seeds of one measure: PNG + PDF (nothing if no array is stored)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    surfaces = [s for s in (session.get(Surface, i) for i in surface_ids)
                if s is not None and s.loss_array_id is not None]  # fmt: skip
    if not surfaces:
        return []
    fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
    first = surfaces[0]
    if first.ny is None:
        for s in surfaces:
            loss = read_array(session, store, s.loss_array_id, verify=False).mean(axis=0)[0]
            ax.plot(np.linspace(s.x_min, s.x_max, s.nx), loss, label=f"surface {s.id}")
        ax.set(xlabel="x (filter-normalised units)", ylabel="loss")
        ax.legend(fontsize="small")
    else:
        assert first.y_min is not None and first.y_max is not None and first.ny is not None
        grid = read_array(session, store, first.loss_array_id, verify=False).mean(axis=0)
        xs = np.linspace(first.x_min, first.x_max, first.nx)
        ys = np.linspace(first.y_min, first.y_max, first.ny)
        contours = ax.contour(xs, ys, np.where(np.isfinite(grid), grid, np.nan), levels=15)
        fig.colorbar(contours, ax=ax, label="loss")
        ax.set(xlabel="x", ylabel="y")
    ax.set_title(title, fontsize="small")
    try:
        return save_figure(fig, path_stem)
    finally:
        plt.close(fig)
