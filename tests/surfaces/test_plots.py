"""Surface figures: files written, values where they belong, one colour scale on the panel."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.contour import ContourSet
from matplotlib.text import Annotation

from tracker import SpecError
from tracker.surfaces.plots import (
    KINDS,
    figure_1d,
    figure_2d,
    figure_panel,
    plot_1d,
    plot_2d,
    plot_panel,
)

XS = np.linspace(-1.0, 1.0, 6)  # nx = 6
YS = np.linspace(-0.5, 0.5, 4)  # ny = 4


def bowl(diverged: bool = True) -> np.ndarray:
    gx, gy = np.meshgrid(XS, YS)
    z = 1.0 + gx**2 + 3.0 * gy**2 + 0.2 * gx
    if diverged:
        z[0, 0] = np.nan
        z[3, 5] = np.inf
    return z


def assert_png_and_pdf(paths, stem) -> None:
    assert [p.name for p in paths] == [f"{stem.name}.png", f"{stem.name}.pdf"]
    png, pdf = (p.read_bytes() for p in paths)
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert pdf.startswith(b"%PDF") and len(pdf) > 1000


@pytest.mark.parametrize("kind", KINDS)
def test_each_2d_kind_writes_png_and_pdf_with_diverged_points(tmp_path, kind):
    stem = tmp_path / "plots" / f"surface_{kind}"
    trajectory = None if kind == "3d" else np.array([[-0.8, 0.4], [-0.3, 0.1], [0.0, 0.0]])
    paths = plot_2d(stem, XS, YS, bowl(), kind=kind, title=kind, trajectory=trajectory)
    assert_png_and_pdf(paths, stem)


def test_1d_plot_writes_png_and_pdf_for_several_groups_with_nan(tmp_path):
    loss = np.stack([np.abs(XS), XS**2, XS**2 + 1.0])[:, None, :]  # [G, 1, nx]
    loss[1, 0, 2] = np.nan
    acc = np.stack([1.0 - np.abs(XS) / 2.0] * 3)[:, None, :]
    assert_png_and_pdf(plot_1d(tmp_path / "curve", XS, loss, acc, title="t"), tmp_path / "curve")


def test_panel_writes_png_and_pdf_with_nan(tmp_path):
    grids = np.stack([np.stack([bowl(), bowl() * 2.0])] * 2)  # 2 pairs x 2 batches
    for contour in (False, True):
        stem = tmp_path / f"panel_{contour}"
        paths = plot_panel(stem, grids, XS, YS, centre_relative=True, contour=contour)
        assert_png_and_pdf(paths, stem)


def test_heatmap_draws_row_j_at_y_j_and_column_i_at_x_i():
    z = bowl(diverged=False)
    z[1, 4] = 99.0  # a marker that a transposed or flipped drawing would move
    fig = figure_2d(XS, YS, z, kind="heatmap")
    (mesh,) = fig.axes[0].collections
    drawn = np.asarray(mesh.get_array()).reshape(YS.size, XS.size)
    np.testing.assert_array_equal(drawn, z)
    corners = mesh.get_coordinates()  # [ny + 1, nx + 1, 2] cell corners
    centres = (corners[:-1, :-1] + corners[1:, 1:]) / 2.0
    np.testing.assert_allclose(centres[1, 4], [XS[4], YS[1]])


def test_diverged_points_are_masked_not_drawn():
    fig = figure_2d(XS, YS, bowl(), kind="heatmap")
    (mesh,) = fig.axes[0].collections
    drawn = mesh.get_array()
    assert drawn.mask.reshape(YS.size, XS.size)[0, 0]
    assert drawn.mask.reshape(YS.size, XS.size)[3, 5]
    assert mesh.norm.vmax == pytest.approx(np.nanmax(bowl()[np.isfinite(bowl())]))


def panel_mappables(fig, n_panels):
    panels = [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]
    assert len(panels) == n_panels
    return [[c for c in ax.collections if c.get_array() is not None] for ax in panels]


def test_panel_puts_every_grid_on_one_colour_scale():
    low = bowl(diverged=False)  # about 1..5
    grids = [[low, low + 100.0, low * 0.5], [low + 50.0, low, low - 0.5]]
    fig = figure_panel(grids, XS, YS)
    mappables = panel_mappables(fig, 6)
    norms = {id(m.norm) for per_ax in mappables for m in per_ax}
    assert len(norms) == 1  # one Normalize shared by all panels
    norm = mappables[0][0].norm
    stack = np.asarray(grids)
    assert (norm.vmin, norm.vmax) == (stack.min(), stack.max())
    assert sum(hasattr(ax, "_colorbar") for ax in fig.axes) == 1


def test_contour_panel_uses_the_same_levels_everywhere():
    low = bowl(diverged=False)
    fig = figure_panel([[low, low + 10.0], [low * 3.0, low]], XS, YS, contour=True, levels=8)
    filled = [c for ax in fig.axes for c in ax.collections if isinstance(c, ContourSet)]
    assert len(filled) == 8  # contourf + contour lines on 4 panels
    for c in filled:
        np.testing.assert_array_equal(c.levels, filled[0].levels)
    assert filled[0].levels[0] == low.min() and filled[0].levels[-1] == (low + 10.0).max()


def test_centre_relative_panel_is_zero_at_the_unperturbed_model():
    xs, ys = np.linspace(-1, 1, 5), np.linspace(-1, 1, 3)  # centre at column 2, row 1
    gx, gy = np.meshgrid(xs, ys)
    grids = [[5.0 + gx**2 + gy**2, 9.0 + gx**2]]
    fig = figure_panel(grids, xs, ys, centre_relative=True)
    for (mesh,) in panel_mappables(fig, 2):
        drawn = np.asarray(mesh.get_array()).reshape(3, 5)
        assert drawn[1, 2] == 0.0
        assert drawn.min() == 0.0
    assert mesh.norm.vmin == 0.0 and mesh.norm.vmax == 2.0


def test_trajectory_is_drawn_over_the_plane_with_its_labels():
    path = np.array([[-0.9, 0.45], [-0.4, 0.2], [-0.1, 0.05], [0.0, 0.0]])
    fig = figure_2d(
        XS, YS, bowl(), kind="contour", trajectory=path, trajectory_labels=[0, 5, "", 20]
    )
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == len(path)]
    assert len(lines) == 1
    np.testing.assert_array_equal(lines[0].get_xydata(), path)
    labels = [t.get_text() for t in ax.texts if isinstance(t, Annotation)]
    assert labels == ["0", "5", "20"]


def test_1d_figure_has_a_loss_curve_per_group_and_accuracy_in_percent():
    loss = np.stack([XS**2, XS**2 + 1.0])
    acc = np.stack([1.0 - np.abs(XS) / 2.0, 0.5 * np.ones_like(XS)])
    fig = figure_1d(XS, loss, acc)
    loss_ax, acc_ax = fig.axes
    assert len(loss_ax.get_lines()) == 2
    np.testing.assert_array_equal(loss_ax.get_lines()[1].get_ydata(), XS**2 + 1.0)
    np.testing.assert_allclose(acc_ax.get_lines()[0].get_ydata(), 100.0 * acc[0])
    assert acc_ax.get_ylim() == (0.0, 100.0)


def test_1d_regression_surface_has_no_accuracy_axis():
    fig = figure_1d(XS, XS**2, np.full_like(XS, np.nan))
    assert len(fig.axes) == 1


def test_bad_plot_requests_say_what_to_do():
    with pytest.raises(SpecError, match="1D: use plot_1d"):
        figure_2d(XS, None, bowl())
    with pytest.raises(SpecError, match="unknown plot kind 'surface'"):
        figure_2d(XS, YS, bowl(), kind="surface")
    with pytest.raises(SpecError, match="not on 3d"):
        figure_2d(XS, YS, bowl(), kind="3d", trajectory=[[0.0, 0.0]])
    with pytest.raises(SpecError, match=r"\[ny, nx\] = \[4, 6\]"):
        figure_2d(XS, YS, bowl().T)
    with pytest.raises(SpecError, match="pairs, groups, ny, nx"):
        figure_panel([bowl()], XS, YS)
