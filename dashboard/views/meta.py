"""Meta-analysis: ready questions across a study, and a read-only SQL box with a scatter."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import common, data

SHARPNESS = """
SELECT s.id AS surface, st.name AS study, m.id AS model, m.name, m.batch_size, m.lr,
       c.epoch, s.nx, s.ny, s.centre_loss, s.rise_r025, s.rise_r050, s.rise_r100,
       s.flatness_width, m.train_acc, m.test_acc, m.train_loss, m.test_loss
FROM surfaces s JOIN checkpoints c ON c.id = s.checkpoint_id
JOIN models m ON m.id = c.model_id JOIN studies st ON st.id = s.study_id
WHERE s.completed_at IS NOT NULL
ORDER BY s.id
"""
PERSISTENCE = """
SELECT p.id AS diagram, st.name AS study, m.id AS model, m.name, m.batch_size, p.loss_name,
       p.knn, p.h0_count, p.h0_total_p1, p.h0_total_p2, p.h0_max, p.h1_count, p.h1_total_p1,
       p.h1_total_p2, p.h1_max, m.train_acc, m.test_acc
FROM persistence_diagrams p JOIN embeddings e ON e.id = p.embedding_id
JOIN models m ON m.id = e.model_id JOIN studies st ON st.id = p.study_id
ORDER BY p.id
"""
EXAMPLE_SQL = (
    "SELECT m.id, m.name, m.batch_size, m.lr, m.train_acc, m.test_acc, s.rise_r050\n"
    "FROM models m JOIN checkpoints c ON c.model_id = m.id\n"
    "JOIN surfaces s ON s.checkpoint_id = c.id"
)


def scatter(df: pd.DataFrame, x: str, y: str, colour: str | None, hover: str) -> go.Figure:
    """Points of two columns, one trace per value of ``colour`` (batch size: categories)."""
    fig = go.Figure()
    groups = df.groupby(colour, dropna=False) if colour else [("all", df)]
    for value, part in groups:
        name = f"{colour} {value}" if colour else "rows"
        fig.add_trace(go.Scatter(x=part[x], y=part[y], mode="markers", name=name,
                                 text=part[hover].astype(str) if hover in part else None,
                                 marker={"size": 10}))  # fmt: skip
    fig.update_layout(xaxis_title=x, yaxis_title=y, height=420, margin={"t": 30, "b": 40})
    return fig


def numeric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and df[c].notna().any()]


src = common.sources()
st.title("Meta-analysis")

st.subheader("Does sharpness predict the generalisation gap?")
sharp = common.query(src.db_url, SHARPNESS)
if sharp.empty:
    st.info("No complete surfaces of trained models yet: `tracker enqueue examples/demo.toml` "
            "(models of two batch sizes with their surfaces), then `tracker work`.")  # fmt: skip
else:
    studies = sorted(sharp["study"].unique().tolist())
    c1, c2, c3 = st.columns(3)
    study = c1.selectbox("study", studies, key="sharp_study")
    measure = c2.selectbox("sharpness", ["rise_r050", "rise_r025", "rise_r100",
                                         "flatness_width", "centre_loss"])  # fmt: skip
    gap_kind = c3.selectbox("gap", ["train_acc - test_acc", "test_loss - train_loss"])
    rows = sharp[sharp["study"] == study].copy()
    a, b = gap_kind.split(" - ")
    rows["gap"] = rows[a] - rows[b]
    st.plotly_chart(scatter(rows, measure, "gap", "batch_size", "name"), width="stretch")
    valid = rows[[measure, "gap"]].dropna()
    if len(valid) >= 3 and valid[measure].nunique() > 1 and valid["gap"].nunique() > 1:
        st.caption(f"Spearman correlation over {len(valid)} surfaces: "
                   f"{valid[measure].corr(valid['gap'], method='spearman'):.3f}")  # fmt: skip
    st.dataframe(rows, hide_index=True, width="stretch")

st.subheader("Persistence summaries vs test accuracy")
pers = common.query(src.db_url, PERSISTENCE)
if pers.empty:
    common.nothing_yet(
        "persistence_diagrams",
        [
            "H0/H1 count, total persistence and max persistence of each model's retrain "
            "landscape against its test accuracy, coloured by batch size"
        ],
        "They come from the PHATE/persistence analyses.",
    )
else:
    summary = st.selectbox("summary", [c for c in pers.columns if c.startswith(("h0_", "h1_"))])
    st.plotly_chart(scatter(pers, summary, "test_acc", "batch_size", "name"), width="stretch")
    st.dataframe(pers, hide_index=True, width="stretch")

st.subheader("SQL (read-only)")
engine = common.engine(src.db_url)
problem = common.sql_box_problem(src.db_url)
if problem is not None:
    st.warning(f"The SQL box is off: {problem}.")
    st.stop()
st.caption("One SELECT, WITH, VALUES or EXPLAIN per run, as a role that can only read; at most "
           f"{data.MAX_ROWS:,} rows and {data.STATEMENT_TIMEOUT_MS // 1000} s.")  # fmt: skip
sql = st.text_area("query", value=EXAMPLE_SQL, height=120, key="sql")
try:
    result = data.run_readonly_sql(engine, sql)
except data.QueryRejected as err:
    st.error(str(err))
    st.stop()
if result.attrs.get("note"):
    st.caption(result.attrs["note"])
result = common.numeric(result)
st.dataframe(result, hide_index=True, width="stretch")
cols = numeric_columns(result)
if len(cols) >= 2:
    x_col, y_col, c_col = st.columns(3)
    x = x_col.selectbox("x", cols, index=0, key="sql_x")
    y = y_col.selectbox("y", cols, index=len(cols) - 1, key="sql_y")
    colour = c_col.selectbox("colour", ["(none)", *result.columns], key="sql_colour")
    st.plotly_chart(scatter(result, x, y, None if colour == "(none)" else colour, result.columns[0]),
                    width="stretch")  # fmt: skip
else:
    st.caption("The scatter needs two numeric columns in the result.")
