"""Level sets: predictor/corrector traversals of a training-loss level set, as they land."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dashboard import common

src = common.sources()
st.title("Level sets")
runs = common.table(src.db_url, "levelset_runs")
if runs.empty:
    common.nothing_yet(
        "levelset_runs",
        ["each traversal: setup, seed, level L0, predictor/corrector steps, stop reason",
         "its final angle to the start, weight norm, train/test loss and test accuracy",
         "the per-step trace of a chosen run"],
        "Level-set runs are enqueued by the level-set commands.",
    )  # fmt: skip
    st.stop()

st.dataframe(runs, hide_index=True, width="stretch")
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
