"""The surfaces page as a user shares and reads it: a URL that holds the selection, hover
values on 2D views, up to eight surfaces, model names in the titles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
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
