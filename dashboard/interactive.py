"""The Surfaces page's interactive views, drawn by Plotly in the browser: heatmaps whose
hover shows each point's value, and the rotatable 3D scene.

Pure functions of loaded surfaces (dicts as dashboard.common.surface returns them) and 3D
meshes (dicts as the page's cached ``mesh_3d`` returns them); the page caches and shows them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard import render

MAX_3D_SIDE = 41  # points per side of a 3D mesh: larger grids are drawn on every k-th point
GAP_3D = 0.25  # space between two surfaces of the 3D scene, in surface widths


def thinned(n: int, most: int = MAX_3D_SIDE) -> np.ndarray:
    """Indices of every k-th of ``n`` points, at most ``most`` of them, both ends kept."""
    if n <= most:
        return np.arange(n)
    step = -(-(n - 1) // (most - 1))
    idx = np.arange(0, n, step)
    return idx if idx[-1] == n - 1 else np.append(idx, n - 1)


def mesh(s: dict[str, Any], metric: str, log: bool) -> dict[str, Any]:
    """A surface's 3D mesh on its thinned grid, with the full grid's value range (a shared
    colour scale must not depend on which points were dropped) and its grid shape."""
    z = render.values(s, metric, log)
    ix, iy = thinned(len(s["xs"])), thinned(len(s["ys"]))
    return {"xs": np.asarray(s["xs"], float)[ix], "ys": np.asarray(s["ys"], float)[iy],
            "z": z[np.ix_(iy, ix)], "range": render.value_range([z]), "grid": z.shape,
            "id": s["id"], "title": render.title(s)}  # fmt: skip


def _short(text: str, most: int = 32) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def _unit(v: np.ndarray) -> np.ndarray:
    span = float(v[-1] - v[0]) if len(v) > 1 else 0.0
    return (v - v[0]) / span if span else np.zeros_like(v)


def side_by_side_3d(meshes: list[dict[str, Any]], metric: str, log: bool) -> go.Figure:
    """The surfaces as rotatable 3D meshes side by side in one scene (four to a row): one
    camera, one colour scale and z range; hovering shows a point's own x, y and value.

    One scene, not one per surface: each scene is a WebGL context of its own, and four of
    them took twice as long to draw as one scene of four surfaces (headless Chromium, 2 cores).
    """
    lo = min(m["range"][0] for m in meshes)
    hi = max(m["range"][1] for m in meshes)
    name = f"log10 {metric}" if log else metric
    cols = min(len(meshes), render.PER_ROW)
    rows = -(-len(meshes) // render.PER_ROW)
    pitch = 1.0 + GAP_3D
    fig = go.Figure()
    notes = []
    for i, m in enumerate(meshes):
        r, c = divmod(i, render.PER_ROW)
        x0, y0 = c * pitch, (rows - 1 - r) * pitch  # the first row at the back, left to right
        gx, gy = np.meshgrid(m["xs"], m["ys"])
        fig.add_trace(go.Surface(
            x=x0 + _unit(m["xs"]), y=y0 + _unit(m["ys"]), z=m["z"], coloraxis="coloraxis",
            name=m["title"], customdata=np.dstack([gx, gy]),
            hovertemplate=f"{m['title']}<br>x %{{customdata[0]:.3g}}, y %{{customdata[1]:.3g}}"
            f"<br>{name} %{{z:.4g}}<extra></extra>",
        ))  # fmt: skip
        notes.append({"x": x0 + 0.5, "y": y0 + 1.0, "z": hi, "text": _short(m["title"]),
                      "showarrow": False, "font": {"size": 11}})  # fmt: skip
    width, depth = cols * pitch - GAP_3D, rows * pitch - GAP_3D
    span = max(width, depth)
    axis = {"showticklabels": False, "showspikes": False}
    fig.update_layout(
        coloraxis={"cmin": lo, "cmax": hi, "colorscale": "Viridis",
                   "colorbar": {"title": {"text": name}}},
        scene={"xaxis": {**axis, "title": {"text": "x"}}, "yaxis": {**axis, "title": {"text": "y"}},
               "zaxis": {"range": [lo, hi], "title": {"text": name}}, "annotations": notes,
               "aspectmode": "manual",
               "aspectratio": {"x": width / span, "y": depth / span, "z": 0.3},
               "camera": {"eye": {"x": 0.1, "y": -1.0, "z": 0.55}}},  # front, above
        height=300 + 220 * rows, margin={"t": 10, "b": 10, "l": 0, "r": 0},
    )  # fmt: skip
    return fig


def hover_heatmaps(surfs: list[dict[str, Any]], metric: str, log: bool) -> go.Figure:
    """Interactive heatmaps: hovering a cell shows its x, y and value (one colour scale)."""
    zs = [render.values(s, metric, log) for s in surfs]
    lo, hi = render.value_range(zs)
    name = f"log10 {metric}" if log else metric
    cols = min(len(surfs), render.PER_ROW)
    rows = -(-len(surfs) // render.PER_ROW)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[render.title(s) for s in surfs],
                        shared_xaxes=True, shared_yaxes=True)  # fmt: skip
    for i, (s, z) in enumerate(zip(surfs, zs, strict=True)):
        fig.add_trace(go.Heatmap(x=s["xs"], y=s["ys"], z=z, coloraxis="coloraxis",
                                 name=render.title(s),
                                 hovertemplate=f"x %{{x:.3g}}<br>y %{{y:.3g}}<br>{name} "
                                 "%{z:.4g}<extra>%{fullData.name}</extra>"),
                      row=i // cols + 1, col=i % cols + 1)  # fmt: skip
    fig.update_layout(coloraxis={"cmin": lo, "cmax": hi, "colorscale": "Viridis",
                                 "colorbar": {"title": {"text": name}}},
                      height=360 * rows, margin={"t": 40, "b": 30})  # fmt: skip
    return fig
