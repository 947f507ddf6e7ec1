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


def _home_at_head(root: Path) -> None:
    """The embedded database of the home under ``root`` at head: a copy of the suite's migrated
    template (set-up; the `tracker db upgrade` command is test_cli's)."""
    from schema_support import migrated

    from tracker._db import Database

    (root / ".tracker").mkdir(parents=True, exist_ok=True)
    db = Database(f"sqlite:///{root / '.tracker' / 'tracker.db'}")
    migrated(db)
    db.dispose()


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
    _home_at_head(tmp_path)
    one_line_error(run_tracker("plot", "surface", "1", *flags, env=env), *needles, code=2)
    assert not (tmp_path / ".tracker" / "plots").exists()


def test_interpolation_plots_name_both_models_and_label_alpha(tmp_path: Path, capsys):
    """Issue 19: an interpolation's figures (the 1D curve, and the 2D views of an
    interpolation plane) name both models in the title and label the x axis alpha;
    `tracker plot surface` writes them."""
    from tracker._config import resolve
    from tracker._store import ArrayStore
    from tracker._worker import WorkerConfig, run_worker
    from tracker.cli import main
    from tracker.surfaces.cli import surface_figures
    from tracker.surfaces.results import load_surface

    home = ["--home", str(tmp_path / ".tracker")]
    _home_at_head(tmp_path)
    for name, seed in (("left-net", "0"), ("right-net", "1")):
        assert main([*home, "train", "--arch", "mlp", "--widths", "8", "--dataset", "digits",
                     "--epochs", "1", "--seed", seed, "--name", name]) == 0  # fmt: skip
    assert main([*home, "enqueue", "surface", "--interpolate", "left-net", "right-net",
                 "--x", "-0.5:1.5:5"]) == 0  # fmt: skip
    assert main([*home, "enqueue", "surface", "--interpolate", "left-net", "right-net",
                 "--x", "0:1:3", "--y", "-1:1:3"]) == 0  # fmt: skip
    settings = resolve(home=tmp_path / ".tracker")
    stats = run_worker(WorkerConfig(db_url=settings.db_url, store_url=settings.store_url,
                                    mlflow_uri=settings.mlflow_uri))  # fmt: skip
    assert stats["failed"] == 0, stats

    from tracker._db import open_database

    db = open_database(settings.db_url)
    with db.session() as session:
        line = surface_figures(load_surface(session, ArrayStore(settings.store_url), 1), [])
        plane = surface_figures(load_surface(session, ArrayStore(settings.store_url), 2),
                                ["contour", "heatmap", "3d"])  # fmt: skip
    db.dispose()
    assert [suffix for suffix, _ in line] == ["1d"]
    assert [suffix for suffix, _ in plane] == ["contour", "heatmap", "3d"]
    for suffix, fig in line + plane:
        ax = fig.axes[0]
        title = ax.get_title()
        assert "left-net" in title and "right-net" in title, (suffix, title)
        assert title.index("left-net") < title.index("right-net")  # from alpha = 0 to 1
        assert "alpha = 0" in title and "alpha = 1" in title
        assert ax.get_xlabel().startswith("alpha"), (suffix, ax.get_xlabel())

    out = tmp_path / "plots"
    capsys.readouterr()
    assert main([*home, "plot", "surface", "1", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["surface-1-1d.pdf", "surface-1-1d.png"]
