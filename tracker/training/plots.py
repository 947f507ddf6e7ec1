"""Training curves: loss and accuracy per epoch on each split, and the other files of a
training run's MLflow artifacts. No torch here: the MLflow side process (tracker._mlflow_side)
draws and logs them."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tracker._figures import save_figure


def plot_training_curves(
    history: Sequence[tuple[int, Mapping[str, float]]], path_stem: str | os.PathLike[str],
    *, title: str = "",
) -> list[Path]:
    """Loss (left) and accuracy (right) against epoch, one line per split; PNG + PDF.

    A plain ``Figure``, not pyplot: training runs in worker loops that are threads of one
    process, and pyplot's figure registry and backend switch are process-wide state.
    """
    from matplotlib.figure import Figure

    epochs = [e for e, _ in history]
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for split in ("train", "val", "test"):
        for ax, what in ((ax_loss, "loss"), (ax_acc, "acc")):
            values = [m.get(f"{split}_{what}") for _, m in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [float("nan") if v is None else v for v in values], marker=".",
                        label=split)  # fmt: skip
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="accuracy")
    for ax in (ax_loss, ax_acc):
        if ax.lines:
            ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path_stem)


def log_training_files(
    client: Any, run_id: str, history: Sequence[tuple[int, Mapping[str, float]]],
    params: Mapping[str, Any], tags: Mapping[str, str], name: str,
) -> None:
    """The run's artifacts: training curves (PNG, PDF), the architecture config as JSON, and
    the tracker ids that lead back from the run (``tracker/ids.json``)."""
    import json
    import tempfile

    from tracker._mlflow import log_files

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        curves = plot_training_curves(history, folder / "curves", title=name)
        config = folder / "arch_config.json"
        config.write_text(json.dumps({"architecture": params["architecture"],
                                      **params["arch_config"]}, indent=1, sort_keys=True))  # fmt: skip
        ids = folder / "ids.json"
        ids.write_text(json.dumps(tags, indent=1, sort_keys=True))
        log_files(client, run_id, [*curves, config], "training")
        log_files(client, run_id, [ids], "tracker")
