"""Level sets: predictor/corrector traversals of a training-loss level set, as they land.

Besides the runs themselves, the page shows what `tracker plot levelset` writes for a chosen
setup and study: Figure 2 (mean +- std over runs per predictor step), Table 1 (the traversal
against the L2 baseline) and Figure 7 (PCA of theta snapshots). It computes them with the
same helpers as that command, so page and files agree.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from dashboard import common

# Figure 2's panels: trace field -> axis label.
FIG2_PANELS = {"angle_deg": "angle(grad R, grad L) [deg]", "weight_norm_sq": "R = |theta|^2",
               "test_loss": "test loss", "test_acc": "test accuracy"}  # fmt: skip
# Figure 7 is computed on the page only up to this many snapshot values (float32: 200 MB);
# larger runs (CIFAR10_CONV) are for `tracker plot levelset`.
PCA_MAX_VALUES = 50_000_000
ALL = "(all)"
CHOICES = """
SELECT r.setup, s.name AS study FROM levelset_runs r JOIN studies s ON s.id = r.study_id
WHERE r.trace_array_id IS NOT NULL
UNION
SELECT b.setup, s.name AS study FROM l2_baseline_runs b JOIN studies s ON s.id = b.study_id
WHERE b.params_array_id IS NOT NULL
"""


def _session(db_url: str) -> Any:
    from sqlalchemy.orm import Session

    return Session(common.engine(db_url))


@st.cache_data(ttl=common.TTL, show_spinner=False)
def figure2_and_table1(
    db_url: str, store_url: str, setup: str, study: str | None
) -> tuple[dict[str, np.ndarray] | None, pd.DataFrame]:
    """Figure 2's series (None without finished traversals) and Table 1, as the plot command
    computes them."""
    from tracker.levelsets.results import done_l2_runs, done_levelset_runs, figure2_series, table1

    with _session(db_url) as session:
        runs = done_levelset_runs(session, setup, study)
        l2 = done_l2_runs(session, setup, study)
        table = pd.DataFrame(table1(runs, l2))
        fields = list(runs[0].trace_fields or []) if runs else []
        trace_ids = [int(r.trace_array_id) for r in runs]
    traces = [_trace(common.array(db_url, store_url, i)) for i in trace_ids]
    if not traces:
        return None, table
    if len(fields) != traces[0].shape[1]:
        fields = [f"column {i}" for i in range(traces[0].shape[1])]
    return figure2_series(traces, fields), table


def _trace(raw: np.ndarray) -> np.ndarray:
    arr = np.asarray(raw, dtype=float)
    return arr.reshape(len(arr), -1)


@st.cache_data(ttl=common.ARRAY_TTL, show_spinner=False)
def figure7(
    db_url: str, store_url: str, setup: str, study: str | None
) -> dict[str, np.ndarray] | str:
    """Figure 7's PCA coordinates, or why it is not computed here (no snapshots, too large)."""
    from tracker._schema import ArrayRef
    from tracker.levelsets.results import (
        PCA_LAMBDA,
        done_l2_runs,
        done_levelset_runs,
        snapshot_pca,
    )

    with _session(db_url) as session:
        runs = [r for r in done_levelset_runs(session, setup, study) if r.snapshots_array_id]
        if not runs:
            return "No theta snapshots stored for these runs."
        shapes = [session.get(ArrayRef, r.snapshots_array_id).shape for r in runs]
        size = sum(math.prod(int(n) for n in shape) for shape in shapes)
        if size > PCA_MAX_VALUES:
            return (f"Figure 7 skipped: the snapshots hold {size:,} values, over the page's "
                    f"limit of {PCA_MAX_VALUES:,}; `tracker plot levelset --setup {setup}` "
                    "draws it.")  # fmt: skip
        snap_ids = [int(r.snapshots_array_id) for r in runs]
        steps = [list(r.snapshot_steps or []) for r in runs]
        l2_ids = [int(b.params_array_id) for b in done_l2_runs(session, setup, study)
                  if math.isclose(b.l2_lambda, PCA_LAMBDA, rel_tol=1e-12)]  # fmt: skip
    snaps = [np.asarray(common.array(db_url, store_url, i)) for i in snap_ids]
    snaps = [s.reshape(len(s), -1) for s in snaps]
    if any(len(k) != len(s) for k, s in zip(steps, snaps, strict=True)):
        steps = [list(range(len(s))) for s in snaps]
    ends = [np.asarray(common.array(db_url, store_url, i)).ravel() for i in l2_ids]
    return snapshot_pca(snaps, steps, ends)


def figure2_chart(series: dict[str, np.ndarray]) -> go.Figure | None:
    """Four small panels: mean line and a +- std band per predictor step."""
    panels = [(name, label) for name, label in FIG2_PANELS.items() if f"{name}_mean" in series]
    if not panels:
        return None
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[1] for p in panels],
                        horizontal_spacing=0.06)  # fmt: skip
    x = series["step"]
    colours = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
    for col, (name, _label) in enumerate(panels, start=1):
        mean, std = series[f"{name}_mean"], series[f"{name}_std"]
        colour = colours[(col - 1) % len(colours)]
        band = np.concatenate([mean + std, (mean - std)[::-1]])
        fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=band, fill="toself",
                                 line={"width": 0, "color": colour}, fillcolor=colour,
                                 opacity=0.25, hoverinfo="skip",
                                 name=f"{name} +- std", showlegend=False), row=1, col=col)  # fmt: skip
        fig.add_trace(go.Scatter(x=x, y=mean, mode="lines", name=f"{name} mean",
                                 line={"color": colour}, showlegend=False), row=1, col=col)  # fmt: skip
        fig.update_xaxes(title_text="predictor step", row=1, col=col)
    fig.update_layout(height=320, margin={"t": 40, "b": 40})
    return fig


def figure7_chart(pca: dict[str, np.ndarray]) -> go.Figure:
    """Snapshots on the first three components, coloured by predictor step; the mean ends."""
    from tracker.levelsets.results import PCA_LAMBDA

    coords = pca["coords"]
    dims = [min(d, coords.shape[1] - 1) for d in range(3)]
    fig = go.Figure(go.Scatter3d(
        x=coords[:, dims[0]], y=coords[:, dims[1]], z=coords[:, dims[2]], mode="markers",
        marker={"size": 3, "color": pca["steps"], "colorscale": "Viridis",
                "colorbar": {"title": {"text": "predictor step"}}}, name="snapshots"))  # fmt: skip
    for key, colour, label in (("levelset_end", "red", "traversal end (mean)"),
                               ("l2_end", "black", f"L2 end, lambda={PCA_LAMBDA:g} (mean)")):  # fmt: skip
        if key in pca:
            p = pca[key]
            fig.add_trace(go.Scatter3d(x=[p[dims[0]]], y=[p[dims[1]]], z=[p[dims[2]]],
                                       mode="markers", name=label,
                                       marker={"size": 7, "color": colour, "symbol": "diamond"}))  # fmt: skip
    explained = pca["explained"]
    titles = {f"{a}axis": {"title": {"text": f"PC{d + 1} ({explained[d]:.1%})"}}
              for a, d in zip("xyz", dims, strict=True)}  # fmt: skip
    fig.update_layout(scene=titles, height=480, margin={"t": 30, "b": 10},
                      legend={"x": 0.0, "y": 1.0, "xanchor": "left"})  # fmt: skip
    return fig


def setup_figures(src: Any) -> None:
    """Figure 2, Table 1 and Figure 7 of one setup (and study), as `tracker plot levelset`."""
    choices = common.query(src.db_url, CHOICES)
    if choices.empty:
        return
    st.subheader("Figures of a setup (as `tracker plot levelset`)")
    left, right = st.columns(2)
    setup = left.selectbox("setup", sorted(choices["setup"].unique()), key="ls_setup")
    studies = sorted(choices.loc[choices["setup"] == setup, "study"].unique())
    study = right.selectbox("study", [ALL, *studies], key="ls_study")
    study_arg = None if study == ALL else study
    series, table = figure2_and_table1(src.db_url, src.store_url, setup, study_arg)

    st.markdown("**Figure 2**: mean +- std over runs, per predictor step")
    fig2 = figure2_chart(series) if series is not None else None
    if fig2 is None:
        st.caption("No finished traversals with angle, R, test loss or accuracy traces.")
    else:
        st.plotly_chart(fig2, width="stretch")

    st.markdown("**Table 1**: final test loss and accuracy, traversal against L2 lambdas")
    st.dataframe(table, hide_index=True, width="stretch")

    st.markdown("**Figure 7**: PCA of theta snapshots (z-scored, seed 0)")
    pca = figure7(src.db_url, src.store_url, setup, study_arg)
    if isinstance(pca, str):
        st.caption(pca)
    else:
        st.plotly_chart(figure7_chart(pca), width="stretch")


src = common.sources()
st.title("Level sets")
runs = common.table(src.db_url, "levelset_runs")
if runs.empty:
    common.nothing_yet(
        "levelset_runs",
        ["each traversal: setup, seed, level L0, predictor/corrector steps, stop reason",
         "its final angle to the start, weight norm, train/test loss and test accuracy",
         "the per-step trace of a chosen run"],
        "Fill it with `tracker enqueue levelset --setup MPG_FF --runs 5`, then `tracker work`.",
    )  # fmt: skip
    st.stop()

st.dataframe(runs, hide_index=True, width="stretch")
setup_figures(src)

st.subheader("Runs")
numeric = [c for c in ("final_angle", "final_weight_norm_sq", "final_train_loss",
                       "final_test_loss", "final_test_acc") if c in runs]  # fmt: skip
if len(numeric) >= 2:
    x, y = st.columns(2)
    cx = x.selectbox("x", numeric, index=0)
    cy = y.selectbox("y", numeric, index=min(3, len(numeric) - 1))
    fig = go.Figure(go.Scatter(x=runs[cx], y=runs[cy], mode="markers", text=runs["setup"]))
    fig.update_layout(xaxis_title=cx, yaxis_title=cy, height=380)
    st.plotly_chart(fig, width="stretch")

traced = runs[runs["trace_array_id"].notna()] if "trace_array_id" in runs else runs.iloc[:0]
if len(traced):
    rid = st.selectbox("run", [int(i) for i in traced["id"]])
    row = traced[traced["id"] == rid].iloc[0]
    trace = np.asarray(common.array(src.db_url, src.store_url, int(row["trace_array_id"])), float)
    trace = trace.reshape(len(trace), -1)
    names = row.get("trace_fields")
    names = json.loads(names) if isinstance(names, str) else names
    if not isinstance(names, list) or len(names) != trace.shape[1]:
        names = [f"column {i}" for i in range(trace.shape[1])]
    col = st.selectbox("trace field", list(range(trace.shape[1])), format_func=names.__getitem__)
    fig = go.Figure(go.Scatter(y=trace[:, col], mode="lines"))
    fig.update_layout(xaxis_title="predictor step", yaxis_title=names[col], height=360)
    st.plotly_chart(fig, width="stretch")
