"""Morse graphs of learned training dynamics (DOODL3 / CMGDB), as they land."""

from __future__ import annotations

import streamlit as st

from dashboard import common

src = common.sources()
st.title("Morse graphs")
graphs = common.table(src.db_url, "morse_graphs")
if graphs.empty:
    common.nothing_yet(
        "morse_graphs",
        ["each Morse graph: setup, weight pair, subdivision depth, GP parameters",
         "its number of Morse sets, edges and attractors",
         "the graph itself (nodes and edges) drawn with Graphviz"],
        "Morse graphs are enqueued by the Morse-graph commands.",
    )  # fmt: skip
    st.stop()

st.dataframe(graphs.drop(columns=["graph"], errors="ignore"), hide_index=True, width="stretch")
with_graph = graphs[graphs["graph"].notna()] if "graph" in graphs else graphs.iloc[:0]
if len(with_graph):
    gid = st.selectbox("graph", [int(i) for i in with_graph["id"]])
    graph = with_graph[with_graph["id"] == gid].iloc[0]["graph"]
    if isinstance(graph, str):
        import json

        graph = json.loads(graph)
    nodes = graph.get("nodes", []) if isinstance(graph, dict) else []
    edges = graph.get("edges", []) if isinstance(graph, dict) else []
    lines = ["digraph morse {", "  node [shape=ellipse];"]
    for node in nodes:
        name = node.get("id", node) if isinstance(node, dict) else node
        lines.append(f'  "{name}";')
    for edge in edges:
        a, b = (edge.get("source"), edge.get("target")) if isinstance(edge, dict) else edge[:2]
        lines.append(f'  "{a}" -> "{b}";')
    lines.append("}")
    st.graphviz_chart("\n".join(lines))
    with st.expander("graph as stored"):
        st.json(graph)
