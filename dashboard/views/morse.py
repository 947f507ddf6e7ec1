"""Morse graphs of learned training dynamics (DOODL3 / CMGDB), as they land."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import common
from tracker.morse.plots import dot_source, node_colour, project


def morse_sets_heatmap(xs: np.ndarray, ys: np.ndarray, sets: np.ndarray) -> go.Heatmap:
    """Boxes coloured by their Morse set with the graph's own categorical colours (one flat
    colour per set, as in the Graphviz drawing), not a continuous map that blends neighbours."""
    n = int(np.nanmax(sets)) + 1 if np.isfinite(sets).any() else 1
    scale = []
    for i in range(n):
        scale += [[i / n, node_colour(i)], [(i + 1) / n, node_colour(i)]]
    return go.Heatmap(x=xs, y=ys, z=sets, colorscale=scale, zmin=-0.5, zmax=n - 0.5,
                      colorbar={"title": {"text": "Morse set"}, "tickvals": list(range(n))},
                      hovertemplate="x %{x:.3g}<br>y %{y:.3g}<br>Morse set %{z}<extra></extra>")

src = common.sources()
st.title("Morse graphs")
graphs = common.table(src.db_url, "morse_graphs")
if graphs.empty:
    common.nothing_yet(
        "morse_graphs",
        ["each Morse graph: setup, weight pair, subdivision depth, GP parameters",
         "its number of Morse sets, edges and attractors",
         "the graph itself (nodes and edges) drawn with Graphviz"],
        "Fill it with `tracker enqueue ensemble --setup doodl3-iris --models 100`, `tracker work`, "
        "then `tracker enqueue morse --ensemble 1` and `tracker work` again.",
    )  # fmt: skip
    st.stop()

# The node count beside the count of nodes with a non-trivial Conley index (the rest are
# spurious recurrent sets of the outer approximation).
shown = graphs.drop(columns=["graph"], errors="ignore")
if "n_nontrivial" in shown and "n_nodes" in shown:
    shown.insert(list(shown.columns).index("n_nodes") + 1, "n_nontrivial",
                 shown.pop("n_nontrivial"))  # fmt: skip
st.dataframe(shown, hide_index=True, width="stretch")
with_graph = graphs[graphs["graph"].notna()] if "graph" in graphs else graphs.iloc[:0]
if len(with_graph):
    gid = st.selectbox("graph", [int(i) for i in with_graph["id"]])
    graph = with_graph[with_graph["id"] == gid].iloc[0]["graph"]
    if isinstance(graph, str):
        graph = json.loads(graph)
    row = with_graph[with_graph["id"] == gid].iloc[0]
    nodes = graph.get("nodes", []) if isinstance(graph, dict) else []
    if nodes and all(isinstance(n, dict) and n.get("trivial") is not None for n in nodes):
        nontrivial = sum(1 for n in nodes if not n["trivial"])
        st.metric("Morse nodes (non-trivial Conley index / all)", f"{nontrivial} / {len(nodes)}")
    st.caption("Morse graph (attractors drawn as double circles; trivial Conley index dashed)")
    st.graphviz_chart(dot_source(graph if isinstance(graph, dict) else {}))
    sets_id = row.get("morse_sets_array_id")
    if sets_id is not None and not pd.isna(sets_id):
        sets = np.asarray(project(common.array(src.db_url, src.store_url, int(sets_id))),
                          dtype=float)  # K > 2 weights: seen on the first two
        sets[sets < 0] = np.nan  # boxes in no Morse set
        lo, hi = graph.get("lo", [0, 0]), graph.get("hi", [1, 1])
        xs = np.linspace(lo[0], hi[0], sets.shape[1])
        ys = np.linspace(lo[1], hi[1], sets.shape[0])
        fig = go.Figure(morse_sets_heatmap(xs, ys, sets))
        names = row.get("weight_names")
        names = json.loads(names) if isinstance(names, str) else list(names or [])
        fig.update_layout(xaxis_title=names[0] if len(names) > 1 else "x",
                          yaxis_title=names[1] if len(names) > 1 else "y", height=420)  # fmt: skip
        st.plotly_chart(fig, width="stretch")
    with st.expander("graph as stored"):
        st.json(graph)
