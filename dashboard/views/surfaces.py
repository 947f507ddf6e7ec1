"""Surfaces: two to four side by side on one colour scale, 1D curves, differences, panels."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from dashboard import common

SURFACES = """
SELECT s.id, st.name AS study, m.id AS model_id, m.name AS model, c.epoch,
       d.kind AS direction, s.nx, s.ny, s.x_min, s.x_max, s.y_min, s.y_max, s.split, s.bn_mode,
       s.n_minibatches, s.centre_loss, s.min_loss, s.rise_r050, s.flatness_width,
       s.completed_at, s.loss_array_id, s.source
FROM surfaces s JOIN studies st ON st.id = s.study_id
LEFT JOIN checkpoints c ON c.id = s.checkpoint_id
LEFT JOIN models m ON m.id = c.model_id
LEFT JOIN directions d ON d.id = s.x_direction_id
ORDER BY s.id
"""
VIEWS = ["heatmap", "contour", "3D"]


def _label(row: Any) -> str:
    grid = f"{row.nx}x{int(row.ny)}" if pd.notna(row.ny) else f"{row.nx}"
    who = row.model if isinstance(row.model, str) else (row.source or "imported")
    epoch = f", epoch {int(row.epoch)}" if pd.notna(row.epoch) else ""
    return f"#{row.id} {who}{epoch} {row.direction or ''} {grid}"


def _values(s: dict[str, Any], metric: str, log: bool, group: int = 0) -> np.ndarray:
    z = s[metric][min(group, s[metric].shape[0] - 1)]
    return np.log10(np.maximum(z, 1e-12)) if log else z


def _range(arrays: list[np.ndarray]) -> tuple[float, float]:
    finite = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays])
    if finite.size == 0:
        return 0.0, 1.0
    return float(finite.min()), float(finite.max())


def side_by_side(surfs: list[dict[str, Any]], metric: str, log: bool, view: str) -> go.Figure:
    """The surfaces in one figure: one colour scale (and z range) and the same axes for all."""
    zs = [_values(s, metric, log) for s in surfs]
    lo, hi = _range(zs)
    name = f"log10 {metric}" if log else metric
    titles = [f"#{s['id']}" for s in surfs]
    if view == "3D":
        fig = make_subplots(rows=1, cols=len(surfs), specs=[[{"type": "surface"}] * len(surfs)],
                            subplot_titles=titles)  # fmt: skip
    else:
        fig = make_subplots(rows=1, cols=len(surfs), shared_xaxes="all", shared_yaxes="all",
                            subplot_titles=titles)  # fmt: skip
    for i, (s, z) in enumerate(zip(surfs, zs, strict=True), start=1):
        common_args = {
            "x": s["xs"],
            "y": s["ys"],
            "z": z,
            "coloraxis": "coloraxis",
            "name": s["label"],
        }
        if view == "heatmap":
            trace: Any = go.Heatmap(**common_args)
        elif view == "contour":
            trace = go.Contour(
                **common_args, contours={"start": lo, "end": hi, "size": (hi - lo) / 20 or 1}
            )
        else:
            trace = go.Surface(**common_args, cmin=lo, cmax=hi)
        fig.add_trace(trace, row=1, col=i)
    fig.update_layout(coloraxis={"cmin": lo, "cmax": hi, "colorscale": "Viridis",
                                 "colorbar": {"title": {"text": name}}},
                      height=480 if view == "3D" else 420, margin={"t": 40, "b": 30})  # fmt: skip
    if view == "3D":
        scene = {"zaxis": {"range": [lo, hi], "title": {"text": name}}, "xaxis": {"title": {"text": "x"}},
                 "yaxis": {"title": {"text": "y"}}}  # fmt: skip
        fig.update_scenes(
            **scene, aspectmode="cube", camera={"eye": {"x": 1.7, "y": 1.7, "z": 1.1}}
        )
    else:
        fig.update_xaxes(title_text="x")
        fig.update_yaxes(title_text="y", col=1)
    return fig


def curves(surfs: list[dict[str, Any]], metric: str, log: bool) -> go.Figure:
    """1D surfaces overlaid (every minibatch group of each)."""
    fig = go.Figure()
    for s in surfs:
        for g in range(s[metric].shape[0]):
            suffix = f" (minibatch {g + 1})" if s[metric].shape[0] > 1 else ""
            fig.add_trace(go.Scatter(x=s["xs"], y=_values(s, metric, log, g)[0], mode="lines",
                                     name=s["label"] + suffix))  # fmt: skip
    fig.update_layout(xaxis_title="alpha", yaxis_title=f"log10 {metric}" if log else metric,
                      height=400, margin={"t": 30, "b": 40})  # fmt: skip
    return fig


def same_grid(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (
        a["loss"].shape[1:] == b["loss"].shape[1:]
        and np.allclose(a["xs"], b["xs"])
        and np.allclose(a["ys"], b["ys"])
    )


def difference(a: dict[str, Any], b: dict[str, Any], metric: str) -> go.Figure:
    diff = _values(a, metric, False) - _values(b, metric, False)
    fig = go.Figure(go.Heatmap(x=a["xs"], y=a["ys"], z=diff, colorscale="RdBu_r", zmid=0,
                               colorbar={"title": {"text": "difference"}}))  # fmt: skip
    fig.update_layout(title=f"{metric}: #{a['id']} minus #{b['id']}", height=420,
                      xaxis_title="x", yaxis_title="y", margin={"t": 40, "b": 30})  # fmt: skip
    return fig


def panel(surfs: list[dict[str, Any]], metric: str, log: bool) -> go.Figure:
    """Seed 001's panel: a row per direction pair, a column per minibatch, one colour scale."""
    groups = max(s[metric].shape[0] for s in surfs)
    zs = [[_values(s, metric, log, g) for g in range(s[metric].shape[0])] for s in surfs]
    lo, hi = _range([z for row in zs for z in row])
    fig = make_subplots(rows=len(surfs), cols=groups, shared_xaxes="all", shared_yaxes="all",
                        column_titles=[f"minibatch {g + 1}" for g in range(groups)],
                        row_titles=[f"#{s['id']}" for s in surfs],
                        horizontal_spacing=0.02, vertical_spacing=0.04)  # fmt: skip
    for r, (s, row) in enumerate(zip(surfs, zs, strict=True), start=1):
        for g, z in enumerate(row, start=1):
            fig.add_trace(
                go.Heatmap(x=s["xs"], y=s["ys"], z=z, coloraxis="coloraxis"), row=r, col=g
            )
    fig.update_layout(coloraxis={"cmin": lo, "cmax": hi, "colorscale": "Viridis"},
                      height=max(260, 200 * len(surfs)), margin={"t": 40, "b": 20})  # fmt: skip
    return fig


def _load(src: Any, ids: list[int]) -> list[dict[str, Any]]:
    loaded = [common.safe_surface(src, i) for i in ids]
    return [s for s in loaded if s is not None]


src = common.sources()
st.title("Surfaces")
table = common.query(src.db_url, SURFACES)
complete = table[table["loss_array_id"].notna()]
if table.empty:
    st.info("No surfaces yet: `tracker enqueue surface ...` or [[surface]] in a study file.")
    st.stop()
if complete.empty:
    st.info(f"{len(table)} surface(s) enqueued, none complete yet: run `tracker work`.")
    st.stop()

studies = sorted(complete["study"].unique().tolist())
study = st.selectbox("study", ["(all)", *studies])
if study != "(all)":
    complete = complete[complete["study"] == study]
labels = {int(r.id): _label(r) for r in complete.itertuples()}
two_d = complete[complete["ny"].notna()]
one_d = complete[complete["ny"].isna()]

c1, c2, c3 = st.columns(3)
metric = c1.radio("value", ["loss", "acc"], horizontal=True)
view = c2.radio("view", VIEWS, horizontal=True, key="view")
log = c3.checkbox("log10 scale", value=False)

st.subheader("2D surfaces side by side")
if two_d.empty:
    st.caption("No complete 2D surfaces.")
else:
    ids2 = [int(i) for i in two_d["id"]]
    chosen = st.multiselect("2D surfaces (two to four)", ids2, default=ids2[-4:][:4],
                            max_selections=4, format_func=labels.__getitem__)  # fmt: skip
    surfs = _load(src, chosen)
    if len(surfs) == 1:
        st.caption("Pick a second surface to compare.")
    if surfs:
        st.plotly_chart(side_by_side(surfs, metric, log, view), width="stretch")
        st.caption(" · ".join(s["label"] for s in surfs))
    if len(surfs) >= 2:
        st.subheader("Difference of two surfaces")
        by_id = {s["id"]: s for s in surfs}
        a_col, b_col = st.columns(2)
        a = a_col.selectbox("A", list(by_id), index=0, format_func=labels.__getitem__)
        b = b_col.selectbox("B", list(by_id), index=1, format_func=labels.__getitem__)
        if same_grid(by_id[a], by_id[b]):
            st.plotly_chart(difference(by_id[a], by_id[b], metric), width="stretch")
        else:
            st.warning(f"#{a} and #{b} are on different grids: a difference needs the same grid.")

st.subheader("1D curves overlaid")
if one_d.empty:
    st.caption("No complete 1D surfaces.")
else:
    ids1 = [int(i) for i in one_d["id"]]
    chosen1 = st.multiselect("1D surfaces", ids1, default=ids1[-4:],
                             format_func=labels.__getitem__)  # fmt: skip
    curves1 = _load(src, chosen1)
    if curves1:
        st.plotly_chart(curves(curves1, metric, log), width="stretch")

st.subheader("Minibatch panels per epoch (seed 001)")
multi = two_d[two_d["n_minibatches"].fillna(1) > 1]
if multi.empty:
    st.caption("No 2D surfaces over several minibatches (minibatches = N in a [[surface]]).")
else:
    model_names = {int(r.model_id): f"{r.model_id}: {r.model}" for r in multi.itertuples()}
    model_id = st.selectbox("model", list(model_names), format_func=model_names.__getitem__)
    of_model = multi[multi["model_id"] == model_id]
    epochs = sorted(int(e) for e in of_model["epoch"].unique())
    epoch = st.select_slider("epoch", epochs) if len(epochs) > 1 else epochs[0]
    rows = _load(src, [int(i) for i in of_model[of_model["epoch"] == epoch]["id"]])
    if rows and all(same_grid(rows[0], r) for r in rows):
        st.plotly_chart(panel(rows, metric, log), width="stretch")
    elif rows:
        st.warning("These surfaces are on different grids; a panel needs one grid.")
