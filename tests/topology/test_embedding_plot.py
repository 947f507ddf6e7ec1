"""The PHATE figure: coloured by the chosen per-sample column, with plain tick labels."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from tracker.topology.plots import figure_embedding


def _samples() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    n = 24
    # Coordinates far from zero with a tiny spread: matplotlib's default formatter would write
    # an offset ("+4e2", "400f"-like corner text) that readers take for part of the values.
    coords = 400.0 + 1e-4 * rng.standard_normal((n, 2))
    columns = {
        "loss": 2.3 + 1e-5 * rng.random(n),  # also a narrow range, for the colour bar
        "step": np.repeat([0.5, 1.0, 2.0], n // 3),
        "seed": np.tile([0.0, 1.0, 2.0, 3.0], n // 4),
        "epoch": np.tile(np.arange(6.0), n // 6),
    }
    return coords, columns


def _labels(axis) -> list[str]:
    return [t.get_text() for t in axis.get_ticklabels() if t.get_text()]


@pytest.mark.parametrize("color", ["loss", "step", "seed", "epoch"])
def test_scatter_colours_follow_the_chosen_column(color: str) -> None:
    coords, columns = _samples()
    fig = figure_embedding(coords, columns[color], color=color)
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    values = columns[color]
    if color in ("loss", "epoch"):  # one scatter mapped through a colour bar
        (sc,) = ax.collections
        np.testing.assert_array_equal(np.asarray(sc.get_array()), values)
        np.testing.assert_array_equal(sc.get_offsets(), coords)
        # colour = colormap(norm(value)): ordering the samples by value orders them by colour
        rgba = sc.to_rgba(values)
        np.testing.assert_array_equal(sc.get_facecolors(), rgba)
    else:  # one scatter per level, a legend entry each
        levels = np.unique(values)
        assert len(ax.collections) == len(levels)
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"{v:g}" for v in levels]
        colours = set()
        for sc, v in zip(ax.collections, levels, strict=True):
            np.testing.assert_array_equal(sc.get_offsets(), coords[values == v])
            colours.add(tuple(sc.get_facecolors()[0]))
        assert len(colours) == len(levels)
    # plain tick labels: no offset text, no multiplier, on both axes and the colour bar
    for a in fig.axes:
        for axis in (a.xaxis, a.yaxis):
            assert axis.get_offset_text().get_text() == "", (color, axis)
            for text in _labels(axis):
                float(text.replace("\u2212", "-"))  # a plain number, e.g. "400.0001"
    # the labels carry the values themselves, not offsets from a hidden 400
    assert all(abs(float(t) - 400) < 0.01 for t in _labels(ax.xaxis)), _labels(ax.xaxis)


def test_unknown_colour_is_refused() -> None:
    coords, columns = _samples()
    with pytest.raises(ValueError, match="not one of"):
        figure_embedding(coords, columns["loss"], color="lr")
