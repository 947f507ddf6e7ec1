"""Topology: jump-and-retrain runs, PHATE embeddings and persistence diagrams, as they land."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dashboard import common

src = common.sources()
st.title("Topology: retrain, PHATE, persistence")

retrains = common.table(src.db_url, "retrains")
points = common.query(src.db_url, "SELECT count(*) AS n FROM trajectory_points")
embeddings = common.table(src.db_url, "embeddings")
diagrams = common.table(src.db_url, "persistence_diagrams")

st.subheader("Jump-and-retrain runs")
if retrains.empty:
    common.nothing_yet(
        "retrains",
        ["each retrain: model, jump step size, seed, epochs, lr, batch size, MLflow run",
         "how many trajectory points each saved (table trajectory_points)"],
        "Fill it with `tracker enqueue retrain --model ID --direction-seeds 0-3`, then "
        "`tracker work` (ID from `tracker ls models`).",
    )  # fmt: skip
else:
    st.dataframe(retrains, hide_index=True, width="stretch")
    st.caption(f"{int(points['n'].iloc[0])} trajectory points saved")

st.subheader("PHATE embeddings")
if embeddings.empty:
    common.nothing_yet(
        "embeddings",
        ["each embedding's settings (knn/mds distance, t, seed)",
         "a scatter of its 2D PHATE coordinates"],
        "Fill it with `tracker enqueue topology --model ID` once its retrains are done, then "
        "`tracker work`.",
    )  # fmt: skip
else:
    st.dataframe(embeddings, hide_index=True, width="stretch")
    with_coords = embeddings[embeddings["coords_array_id"].notna()]
    if len(with_coords):
        eid = st.selectbox("embedding", [int(i) for i in with_coords["id"]])
        row = with_coords[with_coords["id"] == eid].iloc[0]
        coords = common.array(src.db_url, src.store_url, int(row["coords_array_id"]))
        coords = np.asarray(coords, dtype=float).reshape(len(coords), -1)
        fig = go.Figure(go.Scatter(x=coords[:, 0], y=coords[:, 1] if coords.shape[1] > 1 else
                                   np.zeros(len(coords)), mode="markers",
                                   marker={"color": np.arange(len(coords)), "colorscale": "Viridis",
                                           "colorbar": {"title": {"text": "sample"}}}))  # fmt: skip
        fig.update_layout(xaxis_title="PHATE 1", yaxis_title="PHATE 2", height=420)
        st.plotly_chart(fig, width="stretch")

st.subheader("Persistence diagrams")
if diagrams.empty:
    common.nothing_yet(
        "persistence_diagrams",
        ["H0 and H1 summaries per embedding: count, total persistence (p = 1, 2), max",
         "the diagram itself (birth vs death, by dimension)"],
        "`tracker enqueue topology --model ID` makes a diagram with its embedding; then "
        "`tracker work`.",
    )  # fmt: skip
else:
    st.dataframe(diagrams, hide_index=True, width="stretch")
    stored = diagrams[diagrams["diagram_array_id"].notna()]
    if len(stored):
        did = st.selectbox("diagram", [int(i) for i in stored["id"]])
        row = stored[stored["id"] == did].iloc[0]
        dgm = np.asarray(
            common.array(src.db_url, src.store_url, int(row["diagram_array_id"])), dtype=float
        ).reshape(-1, 3)  # (birth, death, dimension)
        finite = dgm[np.isfinite(dgm[:, 1])]
        top = float(finite[:, :2].max()) if len(finite) else 1.0
        fig = go.Figure()
        for dim in (0, 1):
            rows = dgm[dgm[:, 2] == dim]
            deaths = np.where(np.isfinite(rows[:, 1]), rows[:, 1], top * 1.05)
            fig.add_trace(go.Scatter(x=rows[:, 0], y=deaths, mode="markers", name=f"H{dim}"))
        fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="diagonal",
                                 line={"dash": "dot", "color": "grey"}))  # fmt: skip
        fig.update_layout(xaxis_title="birth", yaxis_title="death (inf drawn at the top)",
                          height=420)  # fmt: skip
        st.plotly_chart(fig, width="stretch")
