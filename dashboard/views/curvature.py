"""Curvature: Hessian spectra of models and checkpoints side by side, as they land.

The top eigenvalue and the trace per epoch for the chosen models, the same measures of their
retrained networks against the jump's step size (`tracker enqueue hessian --retrains all`),
one spectrum's density (log y) or Lanczos convergence, per-layer traces, and Goldstein's lambda_min / lambda_max map
of the surfaces enqueued with --curvature. Everything is read from ``hessian_spectra``, the
Zarr arrays its rows reference, and the surfaces' curvature arrays.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import common

SPECTRA = """
SELECT h.id, h.model_id, COALESCE(m.name, 'model ' || CAST(m.id AS VARCHAR(20))) AS model,
       m.architecture, m.dataset, m.batch_size, h.epoch, h.retrain_id, h.save_index,
       r.step_size AS jump_step, r.seed AS jump_seed, h.measure,
       CASE WHEN h.completed_at IS NOT NULL THEN 'done' ELSE COALESCE(t.status, 'pending') END
           AS status, h.split,
       h.subset_size, h.bn_mode, h.top_eigenvalue, h.trace, h.trace_stderr, h.trace_probes,
       h.iterations, h.converged, h.seconds, h.eigenvalues, h.layer_traces,
       h.history_array_id, h.density_array_id, h.config
FROM hessian_spectra h JOIN models m ON m.id = h.model_id LEFT JOIN tasks t ON t.id = h.task_id
LEFT JOIN retrains r ON r.id = h.retrain_id
ORDER BY h.model_id, h.retrain_id IS NOT NULL, h.retrain_id, h.save_index, h.epoch, h.measure, h.id
"""
CURVATURE_SURFACES = """
SELECT id, checkpoint_id, nx, ny, lambda_min_array_id, lambda_max_array_id,
       lambda_ratio_array_id, x_min, x_max, y_min, y_max
FROM surfaces WHERE curvature AND lambda_max_array_id IS NOT NULL ORDER BY id
"""


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _weights(row: Any) -> str:
    """Which weights a spectrum row measures, for a caption."""
    if pd.isna(row["retrain_id"]):
        return f"epoch {row['epoch']}"
    return f"retrain {int(row['retrain_id'])} save {int(row['save_index'])}"


def _probes(measure: str, config: Any) -> str | None:
    """What a trace's probes went through: 'gauss-newton' (output probes of a piecewise-linear
    network), 'hessian', 'hutch++', or the method asked for while the task is pending."""
    if measure != "trace":
        return None
    cfg = _json(config) or {}
    if cfg.get("trace_method") == "hutchpp":
        return "hutch++"
    return cfg.get("estimator") or {"hutchinson": "hessian"}.get(cfg.get("trace_method"), "auto")


src = common.sources()
st.title("Curvature")
spectra = common.query(src.db_url, SPECTRA)
if spectra.empty:
    common.nothing_yet(
        "hessian_spectra",
        ["the top Hessian eigenvalue and the trace per epoch, one line per model",
         "a spectrum's eigenvalue density (log scale) or its Lanczos convergence",
         "per-layer traces, and the lambda_min / lambda_max map of --curvature surfaces"],
        "Fill it with `tracker enqueue hessian --model ID --epochs all --trace --density`, "
        "then `tracker work`.",
    )  # fmt: skip
    st.stop()

spectra["trace probes"] = [_probes(m, c) for m, c in zip(spectra["measure"], spectra["config"],
                                                         strict=True)]  # fmt: skip
shown = spectra.drop(columns=["eigenvalues", "layer_traces", "history_array_id",
                              "density_array_id", "config"])  # fmt: skip
st.dataframe(shown, hide_index=True, width="stretch")

done = spectra[spectra["status"] == "done"]
own = done[done["retrain_id"].isna()]  # the checkpoints' own spectra, not retrained networks'
models = sorted(done["model"].unique().tolist())
chosen = st.multiselect("models to compare", models, default=models[:6])
for measure, column, label in (("eigen", "top_eigenvalue", "top eigenvalue"),
                               ("trace", "trace", "trace")):  # fmt: skip
    part = own[(own["measure"] == measure) & own["model"].isin(chosen)]
    if part.empty:
        continue
    fig = go.Figure()
    for name, rows in part.groupby("model"):
        rows = rows.sort_values("epoch").drop_duplicates("epoch", keep="last")
        fig.add_trace(go.Scatter(x=rows["epoch"], y=rows[column], mode="lines+markers",
                                 name=str(name)))  # fmt: skip
    fig.update_layout(xaxis_title="epoch", yaxis_title=label, height=360)
    st.plotly_chart(fig, width="stretch")

# Jump and retrain (seed 000's question): where do retrained networks land, flatter or sharper
# than the model they jumped from? Their last saves' values against the jump's step size.
retrained = done[done["retrain_id"].notna() & done["model"].isin(chosen)]
for measure, column, label in (("eigen", "top_eigenvalue", "top eigenvalue"),
                               ("trace", "trace", "trace")):  # fmt: skip
    part = retrained[retrained["measure"] == measure]
    if part.empty:
        continue
    last = part.sort_values("save_index").drop_duplicates("retrain_id", keep="last")
    fig = go.Figure()
    for name, rows in last.groupby("model"):
        fig.add_trace(go.Scatter(
            x=rows["jump_step"], y=rows[column], mode="markers", name=f"{name}, retrained",
            text=[f"retrain {int(r)} (seed {int(s)}), save {int(i)}" for r, s, i in
                  zip(rows["retrain_id"], rows["jump_seed"], rows["save_index"], strict=True)],
        ))  # fmt: skip
        base = own[(own["model"] == name) & (own["measure"] == measure)].sort_values("epoch")
        if len(base):
            fig.add_hline(y=float(base[column].iloc[-1]), line_dash="dot",
                          annotation_text=f"{name}, epoch {int(base['epoch'].iloc[-1])}")  # fmt: skip
    fig.update_layout(xaxis_title="jump step size", yaxis_title=f"{label} after retraining",
                      height=360)  # fmt: skip
    st.plotly_chart(fig, width="stretch")

with_arrays = done[done["history_array_id"].notna() | done["density_array_id"].notna()]
if len(with_arrays):
    sid = st.selectbox("spectrum", [int(i) for i in with_arrays["id"]])
    row = with_arrays[with_arrays["id"] == sid].iloc[0]
    if pd.notna(row["density_array_id"]):
        grid, dens = common.array(src.db_url, src.store_url, int(row["density_array_id"]))
        fig = go.Figure(go.Scatter(x=grid, y=np.maximum(dens, 1e-12), mode="lines"))
        fig.update_layout(xaxis_title="eigenvalue", yaxis_title="density", yaxis_type="log",
                          height=360)  # fmt: skip
        st.caption(f"eigenvalue density (SLQ), model {row['model']}, {_weights(row)}")
        st.plotly_chart(fig, width="stretch")
    else:
        hist = np.asarray(common.array(src.db_url, src.store_url, int(row["history_array_id"])))
        fig = go.Figure([go.Scatter(x=np.arange(1, hist.shape[0] + 1), y=hist[:, i],
                                    mode="lines", name=f"lambda_{i + 1}")
                         for i in range(hist.shape[1])])  # fmt: skip
        fig.update_layout(xaxis_title="Lanczos step", yaxis_title="Ritz value", height=360)
        st.caption(f"Lanczos convergence, model {row['model']}, {_weights(row)}")
        st.plotly_chart(fig, width="stretch")

layered = done[done["layer_traces"].notna()]
if len(layered):
    row = layered.iloc[-1]
    traces = _json(row["layer_traces"]) or {}
    st.caption(f"per-layer traces, model {row['model']}, {_weights(row)}")
    st.bar_chart(pd.DataFrame({"layer": list(traces), "trace": list(traces.values())})
                 .set_index("layer"))  # fmt: skip

maps = common.query(src.db_url, CURVATURE_SURFACES)
if len(maps):
    sid = st.selectbox("surface with a curvature map", [int(i) for i in maps["id"]])
    srow = maps[maps["id"] == sid].iloc[0]
    lo = np.asarray(common.array(src.db_url, src.store_url, int(srow["lambda_min_array_id"])))[0]
    hi = np.asarray(common.array(src.db_url, src.store_url, int(srow["lambda_max_array_id"])))[0]
    xs = np.linspace(srow["x_min"], srow["x_max"], int(srow["nx"]))
    if pd.isna(srow["ny"]):
        fig = go.Figure([go.Scatter(x=xs, y=lo[0], name="lambda_min"),
                         go.Scatter(x=xs, y=hi[0], name="lambda_max")])  # fmt: skip
        fig.update_layout(xaxis_title="x", yaxis_title="Hessian eigenvalue", height=360)
    else:
        ys = np.linspace(srow["y_min"], srow["y_max"], int(srow["ny"]))
        ratio = np.abs(lo / np.where(hi == 0, np.nan, hi))
        fig = go.Figure(go.Heatmap(x=xs, y=ys, z=ratio,
                                   colorbar={"title": {"text": "|lambda_min/lambda_max|"}}))  # fmt: skip
        fig.update_layout(xaxis_title="x", yaxis_title="y", height=420)
    st.caption(f"surface {sid}: Goldstein's Hessian eigenvalue map")
    st.plotly_chart(fig, width="stretch")
