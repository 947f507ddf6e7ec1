"""2D plots that show the basin: default levels dense above the minimum, labels that do not
pile up, log and explicit colour scales, and the flags of `tracker plot surface`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_support import one_line_error, run_tracker, tracker_env
from matplotlib.colors import LogNorm

from tracker.surfaces import plots

XS = np.linspace(-1, 1, 41)
X, Y = np.meshgrid(XS, XS)
# A basin whose interesting part lies below 0.35 on a 0-8 scale (the case of issue 19).
BASIN = 0.05 + 8 * (1 - np.exp(-3 * (X**2 + 0.5 * Y**2))) ** 2


def _contours(fig):
    ax = fig.axes[0]
    return ax, ax.collections[0]


def test_default_levels_resolve_the_basin_that_even_levels_flatten():
    _, default = _contours(plots.figure_2d(XS, XS, BASIN, kind="contour"))
    _, even = _contours(plots.figure_2d(XS, XS, BASIN, kind="contour", levels=20))
    in_basin = lambda levels: int(np.sum(np.asarray(levels) < 0.35))  # noqa: E731
    assert in_basin(default.levels) >= 8
    assert in_basin(even.levels) <= 1
    assert default.levels[0] > BASIN.min()  # every level is above the minimum


def test_contour_labels_are_few_enough_not_to_pile_up():
    ax, _ = _contours(plots.figure_2d(XS, XS, BASIN, kind="contour"))
    labels = [t for t in ax.texts if t.get_text()]
    assert 0 < len(labels) <= 8 * 2  # at most 8 labelled levels (a closed curve may get 2)
    levels_labelled = {t.get_text() for t in labels}
    assert len(levels_labelled) <= 8


def test_log_scale_and_explicit_range():
    fig = plots.figure_2d(XS, XS, BASIN, kind="heatmap", log=True)
    mesh = fig.axes[0].collections[0]
    assert isinstance(mesh.norm, LogNorm)
    fig = plots.figure_2d(XS, XS, BASIN, kind="contourf", vmin=0.0, vmax=1.0, levels=[0.1, 0.5])
    _, filled = _contours(fig)
    assert list(filled.levels) == [0.1, 0.5]
    with pytest.raises(Exception, match="--log needs positive values"):
        plots.figure_2d(XS, XS, -BASIN, kind="heatmap", log=True)


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--vlevel", "0.5"], ["--vlevel STEP needs", "--vmin and --vmax"]),
        (["--levels", "a,b"], ["--levels 'a,b'"]),
        (["--levels", "5", "--vlevel", "0.5", "--vmin", "0", "--vmax", "1"], ["not both"]),
    ],
)
def test_bad_plot_flags_are_refused_in_one_line(tmp_path: Path, flags, needles):
    env = tracker_env(tmp_path)
    assert run_tracker("db", "upgrade", env=env).returncode == 0
    one_line_error(run_tracker("plot", "surface", "1", *flags, env=env), *needles, code=2)
    assert not (tmp_path / ".tracker" / "plots").exists()
