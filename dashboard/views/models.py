"""Models: a filterable table of trained models and their MLflow training curves overlaid."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import common, data

MODELS = """
SELECT m.id, st.name AS study, m.name, m.dataset, m.architecture, m.batch_size, m.lr,
       m.weight_decay, m.momentum, m.optimizer, m.seed, m.epochs, m.train_loss, m.train_acc,
       m.test_loss, m.test_acc, t.status, m.mlflow_run_id, t.provenance
FROM models m JOIN studies st ON st.id = m.study_id LEFT JOIN tasks t ON t.id = m.task_id
ORDER BY m.id
"""
FILTERS = ["study", "dataset", "architecture", "batch_size", "lr", "weight_decay", "seed"]
DASHES = ["solid", "dash", "dot", "dashdot"]  # one line style per metric, one colour per model
METRICS = ["train_loss", "val_loss", "test_loss", "train_acc", "val_acc", "test_acc", "lr"]


@st.cache_data(ttl=common.TTL, show_spinner=False)
def _history(uri: str, run_id: str) -> pd.DataFrame:
    return data.metric_history(uri, run_id, METRICS)


@st.cache_data(ttl=common.ARRAY_TTL, show_spinner=False)
def _links(uri: str, ui: str, run_ids: tuple[str, ...]) -> dict[str, str]:
    return data.run_links(uri, ui, list(run_ids))


def _filtered(models: pd.DataFrame) -> pd.DataFrame:
    cols = st.columns(len(FILTERS))
    keep = pd.Series(True, index=models.index)
    for col, name in zip(cols, FILTERS, strict=True):
        options = sorted(models[name].dropna().unique().tolist())
        chosen = col.multiselect(name.replace("_", " "), options, key=f"filter_{name}")
        if chosen:
            keep &= models[name].isin(chosen)
    low = st.slider("minimum test accuracy", 0.0, 1.0, 0.0, 0.01, key="filter_test_acc")
    if low > 0:
        keep &= models["test_acc"].fillna(-1) >= low
    return models[keep]


def _curves(src: data.Sources, chosen: pd.DataFrame, metrics: list[str], log: bool) -> None:
    problem = data.mlflow_available(src.mlflow_uri)
    if problem:
        st.info(problem)
        return
    fig = go.Figure()
    for row in chosen.itertuples():
        if not row.mlflow_run_id:
            st.caption(f"model {row.id} has no MLflow run yet ({row.status})")
            continue
        try:
            history = _history(src.mlflow_uri, row.mlflow_run_id)
        except Exception as err:
            st.warning(f"model {row.id}: cannot read MLflow run {row.mlflow_run_id}: {err}")
            continue
        label = f"{row.id}: {row.name or row.architecture} (bs {row.batch_size}, lr {row.lr:g})"
        for i, metric in enumerate(metrics):
            points = history[history["key"] == metric]
            name = label if len(metrics) == 1 else f"{label} · {metric}"
            fig.add_trace(go.Scatter(x=points["step"], y=points["value"], mode="lines+markers",
                                     name=name, line={"dash": DASHES[i % len(DASHES)]}))  # fmt: skip
    fig.update_layout(xaxis_title="epoch", yaxis_title=", ".join(metrics), height=420,
                      margin={"t": 30, "b": 40}, legend={"orientation": "h"})  # fmt: skip
    if log:
        fig.update_yaxes(type="log")
    st.plotly_chart(fig, width="stretch")


src = common.sources()
st.title("Models")
models = common.query(src.db_url, MODELS)
if models.empty:
    st.info("No models yet: `tracker enqueue model --arch mlp --widths 32 --dataset digits "
            "--epochs 5 --lr 0.05` (or `tracker enqueue examples/demo.toml`), then `tracker work`.")
    st.stop()

models["provenance"] = models["provenance"].map(common.provenance_text)
shown = _filtered(models)
run_ids = tuple(r for r in shown["mlflow_run_id"].dropna().tolist() if r)
links = (
    _links(src.mlflow_uri, src.mlflow_ui, run_ids)
    if run_ids and not data.mlflow_available(src.mlflow_uri)
    else {}
)
shown = shown.assign(mlflow=shown["mlflow_run_id"].map(links))
st.caption(f"{len(shown)} of {len(models)} models")
st.dataframe(
    shown,
    hide_index=True,
    width="stretch",
    column_config={
        "mlflow": st.column_config.LinkColumn("MLflow run", display_text="open in MLflow"),
        "lr": st.column_config.NumberColumn(format="%g"),
        "weight_decay": st.column_config.NumberColumn(format="%g"),
    },
)

st.subheader("Training curves")
labels = {r.id: f"{r.id}: {r.name or r.architecture}" for r in shown.itertuples()}
trained = [r.id for r in shown.itertuples() if r.mlflow_run_id]
chosen_ids = st.multiselect(
    "models", list(labels), default=trained[:4], format_func=labels.__getitem__
)
c1, c2 = st.columns([4, 1])
metrics = c1.multiselect("metrics", METRICS, default=["train_loss"], key="metrics")
log_y = c2.checkbox("log y", value=False, key="log_y")
if chosen_ids and metrics:
    _curves(src, shown[shown["id"].isin(chosen_ids)], metrics, log_y)
else:
    st.caption("Pick models above to overlay their curves.")
