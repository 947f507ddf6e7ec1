"""Meta-analysis: which measure ranks generalisation best in a study (Kendall and granulated
tau with bootstrap intervals, over the ``measures`` rows the queue's refresh derives), the scatter
of any measure against any target coloured by any hyperparameter, and a read-only SQL box."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import common, data

PERSISTENCE = """
SELECT p.id AS diagram, st.name AS study, m.id AS model, m.name, m.batch_size, p.loss_name,
       p.knn, p.h0_count, p.h0_total_p1, p.h0_total_p2, p.h0_max, p.h1_count, p.h1_total_p1,
       p.h1_total_p2, p.h1_max, m.train_acc, m.test_acc
FROM persistence_diagrams p JOIN embeddings e ON e.id = p.embedding_id
JOIN models m ON m.id = e.model_id JOIN studies st ON st.id = p.study_id
ORDER BY p.id
"""
EXAMPLE_SQL = (
    "SELECT model_id, batch_size, lr, weight_decay, value, standard_error, n_seeds, gap\n"
    "FROM v_measures WHERE kind = 'rise_r050' AND is_final = 1\n"
    "ORDER BY definition_id, model_id"
)
TARGETS = {"gap": "gap = train_acc - test_acc", "loss_gap": "loss_gap = test_loss - train_loss",
           "test_acc": "test accuracy", "train_acc": "training accuracy"}  # fmt: skip
COLOURS = ("batch_size", "lr", "weight_decay", "momentum", "seed", "optimizer", "architecture",
           "width", "epochs", "label_corruption", "dataset")  # fmt: skip
DRAWS = 200  # bootstrap draws on the page (`tracker meta` defaults to 1000)


def scatter(
    df: pd.DataFrame, x: str, y: str, colour: str | None, hover: str, error: str | None = None
) -> go.Figure:
    """Points of two columns, one trace per value of ``colour`` (categories); ``error``: a
    column of x error bars (the standard error across seeds)."""
    fig = go.Figure()
    groups = df.groupby(colour, dropna=False) if colour else [("all", df)]
    for value, part in groups:
        name = f"{colour} {value}" if colour else "rows"
        bars = ({"type": "data", "array": part[error].fillna(0).tolist(), "visible": True}
                if error and error in part else None)  # fmt: skip
        fig.add_trace(go.Scatter(x=part[x], y=part[y], mode="markers", name=name,
                                 text=part[hover].astype(str) if hover in part else None,
                                 error_x=bars, marker={"size": 10}))  # fmt: skip
    fig.update_layout(xaxis_title=x, yaxis_title=y, height=420, margin={"t": 30, "b": 40})
    return fig


@st.cache_data(ttl=common.TTL, show_spinner=False)
def study_names(db_url: str) -> dict[str, int]:
    """Studies that have measures: name -> id."""
    df = common.query(db_url, "SELECT DISTINCT st.id, st.name FROM studies st "
                              "JOIN measures ms ON ms.study_id = st.id ORDER BY st.name")  # fmt: skip
    return {str(r.name): int(r.id) for r in df.itertuples()}


@st.cache_data(ttl=common.TTL, show_spinner=False)
def study_measures(db_url: str, study_id: int) -> tuple[pd.DataFrame, str]:
    """The study's measures (with hyperparameters and targets), re-read every TTL seconds, and
    a fingerprint of everything the tau table is computed from: the measures and every model's
    hyperparameters, seed and targets (all of the study's models decide which axes vary)."""
    import hashlib
    import json

    from sqlalchemy.orm import Session

    from tracker.meta.results import hyperparameters, measure_rows, study_models

    with Session(common.engine(db_url)) as session:
        models = [{"id": m.id, "seed": m.seed, "gap": m.gap, "loss_gap": m.loss_gap,
                   **hyperparameters(m)} for m in study_models(session, study_id)]  # fmt: skip
        rows = measure_rows(session, study_id)
    digest = hashlib.sha256(json.dumps([models, rows], sort_keys=True, default=str).encode())
    return pd.DataFrame(rows), digest.hexdigest()


@st.cache_data(show_spinner=False, max_entries=32)
def tau_table(db_url: str, study_id: int, fingerprint: str) -> pd.DataFrame:
    """The study's tau table (DRAWS bootstrap draws, seed 0), computed once per ``fingerprint``
    of its data: a page re-run after the query cache expires reuses it while nothing changed,
    instead of drawing the bootstrap again (DRAWS resamples per measure, epoch and target)."""
    from sqlalchemy.orm import Session

    from tracker.meta.results import TARGETS as META_TARGETS
    from tracker.meta.results import meta_table

    with Session(common.engine(db_url)) as session:
        rows = meta_table(session, study_id, targets=META_TARGETS, draws=DRAWS, seed=0)
    # Strongest rank correlation first within each target.
    rows.sort(key=lambda r: (r.target, -abs(r.tau) if r.tau == r.tau else 0.0))
    return pd.DataFrame([{
        "target": r.target, "measure": r.kind, "epoch": r.epoch, "models": r.n_models,
        "seeds": r.mean_seeds, "tau": r.tau, "tau 2.5%": r.tau_low, "tau 97.5%": r.tau_high,
        "psi": r.psi, "psi 2.5%": r.psi_low, "psi 97.5%": r.psi_high,
        **{f"psi {a}": v for a, v in r.psi_axes.items()}, "definition": r.definition,
    } for r in rows])  # fmt: skip


def numeric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and df[c].notna().any()]


src = common.sources()
st.title("Meta-analysis")

st.subheader("Which measure predicts generalisation?")
studies = study_names(src.db_url)
if not studies:
    st.info("No measures yet. `tracker enqueue examples/generalisation.toml` then "
            "`tracker work` fill this page: the queue refreshes a study's measures when its "
            "results land (`tracker meta --study NAME` prints the same table in a terminal). "
            "It reads one row per checkpoint and measure definition, the mean and standard "
            "error over direction seeds.")  # fmt: skip
else:
    study = st.selectbox("study", list(studies), key="meta_study")
    measures, fingerprint = study_measures(src.db_url, studies[study])
    table = tau_table(src.db_url, studies[study], fingerprint)
    if table.empty:
        st.caption("No definition has values for 3 or more models with a target yet.")
    else:
        st.caption(f"tau: Kendall's tau over the study's models; psi: the granulated tau (the "
                   f"tau among models that differ in one hyperparameter, averaged over axes); "
                   f"95% intervals from {DRAWS} bootstrap draws, seed 0. Only values of one "
                   f"definition at one epoch are correlated.")  # fmt: skip
        st.dataframe(table, hide_index=True, width="stretch")
    labels = measures.drop_duplicates(["definition_id", "epoch"])
    options = {f"{r.definition} @ epoch {r.epoch}": (r.definition_id, r.epoch)
               for r in labels.itertuples()}  # fmt: skip
    c1, c2, c3 = st.columns([3, 1, 1])
    chosen = c1.selectbox("measure", list(options), key="meta_measure")
    target = c2.selectbox("target", list(TARGETS), format_func=TARGETS.get, key="meta_target")
    colour = c3.selectbox("colour", [c for c in COLOURS if c in measures], key="meta_colour")
    def_id, epoch = options[chosen]
    rows = measures[(measures["definition_id"] == def_id) & (measures["epoch"] == epoch)]
    st.plotly_chart(scatter(rows, "value", target, colour, "model", error="standard_error"),
                    width="stretch")  # fmt: skip
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
if result.empty:  # its columns as a static table: no data grid (nor Arrow) to load for no rows
    common.static_table(result)
    st.caption("The query returned no rows.")
    st.stop()
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
