"""The surfaces page as a user shares and reads it: a URL that holds the selection, hover
values on 2D views, up to eight surfaces, model names in the titles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dashboard_support import Seeded, values
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


def _page(query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("views/surfaces.py")
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _figures(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def test_the_url_holds_the_selection_and_restores_it(dashboard_env: Seeded) -> None:
    at = _page()
    chosen = at.multiselect[0].value
    assert at.query_params["ids"] == ",".join(map(str, chosen))
    assert at.query_params["view"] == "heatmap"
    # Opening the shared address shows the same surfaces in the same view.
    ids = at.multiselect[0].options
    first = [int(str(o).split()[0].lstrip("#")) for o in ids][:1]
    shared = _page({"ids": str(first[0]), "view": "contour", "log": "1"})
    assert shared.multiselect[0].value == first
    assert shared.radio(key="view").value == "contour"
    assert shared.checkbox[0].value is True


def test_hover_view_shows_each_points_value_with_the_model_in_the_title(
    dashboard_env: Seeded,
) -> None:
    at = _page()
    at.radio(key="view").set_value("hover").run()
    assert not at.exception
    (fig,) = _figures(at)
    chosen = at.multiselect[0].value
    heatmaps = [t for t in fig["data"] if t["type"] == "heatmap"]
    assert len(heatmaps) == len(chosen)
    assert all("%{z" in t["hovertemplate"] for t in heatmaps)
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert all(t.startswith(f"#{sid}: ") and "epoch" in t
               for t, sid in zip(titles, chosen, strict=True))  # fmt: skip
    assert all(np.isfinite(values(t["z"])).any() for t in heatmaps)


def test_up_to_eight_surfaces_side_by_side(dashboard_env: Seeded) -> None:
    at = _page()
    assert "two to 8" in at.multiselect[0].label
    options = at.multiselect[0].options
    picked = [int(str(o).split()[0].lstrip("#")) for o in options][:8]
    at.multiselect[0].set_value(picked).run()
    assert not at.exception and at.multiselect[0].value == picked


def test_3d_view_is_an_image_by_default_and_the_toggle_loads_the_rotatable_scene(
    dashboard_env: Seeded,
) -> None:
    at = _page({"view": "3D"})
    chosen = at.multiselect[0].value
    # Drawn on the server: one image of the chosen surfaces, no Plotly chart for the browser.
    assert _figures(at) == []
    side = at.get("image")[0].proto.imgs[0]
    assert side.url and side.caption.split(" · ")[0].startswith(f"surface {chosen[0]}")
    assert len(side.caption.split(" · ")) == len(chosen)
    assert at.toggle(key="rotate").value is False
    assert (at.slider(key="elev").value, at.slider(key="azim").value) == (30, -60)
    assert {k: at.query_params[k] for k in ("rotate", "elev", "azim")} == {
        "rotate": "0", "elev": "30", "azim": "-60"
    }
    # Turning the camera draws the image from there, and the address bar follows.
    at.slider(key="azim").set_value(45).run()
    assert not at.exception and at.query_params["azim"] == "45"
    assert at.get("image")[0].proto.imgs[0].url != side.url
    # The toggle swaps the image for Plotly's rotatable scene of the same surfaces.
    at.toggle(key="rotate").set_value(True).run()
    assert not at.exception
    (fig,) = _figures(at)
    assert [t["type"] for t in fig["data"]] == ["surface"] * len(chosen)
    assert all(t["name"].startswith(f"#{sid}: ") and "epoch" in t["name"]
               for t, sid in zip(fig["data"], chosen, strict=True))  # fmt: skip
    assert at.query_params["rotate"] == "1" and "elev" not in at.query_params
    # A shared address opens the same mode and angle.
    shared = _page({"view": "3D", "rotate": "1"})
    assert shared.toggle(key="rotate").value is True and len(_figures(shared)) == 1
    angled = _page({"view": "3D", "elev": "60", "azim": "45"})
    assert (angled.slider(key="elev").value, angled.slider(key="azim").value) == (60, 45)
    assert _figures(angled) == []


def test_3d_image_draws_the_stored_grids_on_one_scale_from_the_chosen_angle(
    dashboard_env: Seeded,
) -> None:
    from matplotlib.figure import Figure
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    from dashboard import common, render

    at = _page({"view": "3D"})
    chosen = at.multiselect[0].value
    surfs = [common.surface(dashboard_env.db_url, dashboard_env.store_url, i) for i in chosen]
    grids = [s["loss"][0] for s in surfs]
    lo = min(float(np.nanmin(g)) for g in grids)
    hi = max(float(np.nanmax(g)) for g in grids)
    fig = render.surfaces_3d(surfs, "loss", False, elev=60, azim=45)
    assert isinstance(fig, Figure) and render.png(fig).startswith(b"\x89PNG")
    scenes = [ax for ax in fig.axes if ax.name == "3d"]
    assert len(scenes) == len(surfs)
    assert [ax.get_title() for ax in scenes] == [render.title(s) for s in surfs]
    assert all(t.startswith(f"#{sid}: ") and "epoch" in t
               for t, sid in zip([ax.get_title() for ax in scenes], chosen, strict=True))  # fmt: skip
    for ax, z in zip(scenes, grids, strict=True):
        assert (ax.elev, ax.azim) == (60, 45)
        assert ax.get_zlim() == pytest.approx((lo, hi))
        (poly,) = [c for c in ax.collections if isinstance(c, Poly3DCollection)]
        assert (poly.norm.vmin, poly.norm.vmax) == pytest.approx((lo, hi))
        # Small grids are drawn on every point: one face per cell, coloured by its corners' mean.
        cells = (z[:-1, :-1] + z[1:, :-1] + z[:-1, 1:] + z[1:, 1:]) / 4
        np.testing.assert_allclose(np.sort(poly.get_array()), np.sort(cells.ravel()))
    (bar,) = [ax for ax in fig.axes if ax.name != "3d"]
    assert bar.get_ylabel() == "loss"
    logged = render.surfaces_3d(surfs, "loss", True)
    scenes = [ax for ax in logged.axes if ax.name == "3d"]
    assert {(ax.elev, ax.azim) for ax in scenes} == {(30, -60)}  # the default angle
    (bar,) = [ax for ax in logged.axes if ax.name != "3d"]
    assert bar.get_ylabel() == "log10 loss"
