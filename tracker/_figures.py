"""The one figure saver: every plot command writes ``<stem>.png`` and ``<stem>.pdf``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def save_figure(
    fig: Figure, path_stem: str | os.PathLike[str], *, dpi: int = 150, tight: bool = False
) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf`` (folders made as needed); return their paths.

    Figures built with constrained layout already fit their labels; ``tight`` crops the
    margins of the others (``bbox_inches="tight"``).
    """
    stem = os.fspath(path_stem)
    paths = [Path(f"{stem}.png"), Path(f"{stem}.pdf")]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    engine = fig.get_layout_engine()
    try:
        for path in paths:
            fig.savefig(path, dpi=dpi, bbox_inches="tight" if tight else None)
            # The PNG's draw placed every axes: the PDF keeps those places instead of solving
            # the constrained layout again (a third of a 2D surface plot's PDF time).
            if engine is not None:
                fig.set_layout_engine("none")
    finally:
        if engine is not None:
            fig.set_layout_engine(engine)
    return paths
