"""Surfaces: up to eight side by side on one colour scale, 1D curves, differences, panels.

Heatmaps, contours, differences, curves, panels and, by default, the 3D view are PNG images
drawn on the server (dashboard/render.py) and cached per surface set, so a page of four
101x101 surfaces shows in the browser without Plotly's 4.7 MB bundle; Plotly draws only the
interactive views (hover, and 3D when "interactive" is on: dashboard/interactive.py).

Why the 3D view is an image by default: Plotly's WebGL scene took 4.9-5.9 s to show in
headless Chromium on 2 cores (software GL), of which ~1.4 s is loading Plotly's bundle and
2-3.5 s setting up the scene, whatever its size (one 41x41 surface without axes or hover
still took 2-2.7 s), against the 3 s target; the image of the same four surfaces is drawn
in ~0.8 s once and then cached per camera angle.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import common, interactive, render

SURFACES = """
SELECT s.id, st.name AS study, m.id AS model_id, m.name AS model, c.epoch,
       s.retrain_id, s.save_index, d.kind AS direction, s.nx, s.ny, s.x_min, s.x_max,
       s.y_min, s.y_max, s.split, s.bn_mode,
       s.n_minibatches, s.centre_loss, s.min_loss, s.rise_r050, s.flatness_width,
       s.completed_at, s.loss_array_id, s.source,
       (SELECT t.provenance FROM tiles ti JOIN tasks t ON t.id = ti.task_id
        WHERE ti.surface_id = s.id AND t.provenance IS NOT NULL ORDER BY ti.id LIMIT 1)
       AS provenance
FROM surfaces s JOIN studies st ON st.id = s.study_id
LEFT JOIN checkpoints c ON c.id = s.checkpoint_id
LEFT JOIN models m ON m.id = c.model_id
LEFT JOIN directions d ON d.id = s.x_direction_id
ORDER BY s.id
"""
# "3D" and "hover" are interactive Plotly views; the others are server-drawn images.
VIEWS = ["heatmap", "contour", "hover", "3D"]
MAX_SIDE_BY_SIDE = 8


def _label(row: Any) -> str:
    grid = f"{row.nx}x{int(row.ny)}" if pd.notna(row.ny) else f"{row.nx}"
    who = row.model if isinstance(row.model, str) else (row.source or "imported")
    epoch = f", epoch {int(row.epoch)}" if pd.notna(row.epoch) else ""
    if pd.notna(row.retrain_id):  # around a retrained network: a save of its trajectory
        epoch = f", retrain {int(row.retrain_id)} save {int(row.save_index)}"
    return f"#{row.id} {who}{epoch} {row.direction or ''} {grid}"


@st.cache_data(ttl=common.ARRAY_TTL, show_spinner=False, max_entries=256)
def mesh_3d(db_url: str, store_url: str, surface_id: int, metric: str, log: bool) -> dict[str, Any]:
    """One surface's 3D mesh on the thinned grid, built once per surface."""
    return interactive.mesh(common.surface(db_url, store_url, surface_id), metric, log)


def same_grid(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (
        a["loss"].shape[1:] == b["loss"].shape[1:]
        and np.allclose(a["xs"], b["xs"])
        and np.allclose(a["ys"], b["ys"])
    )


@st.cache_data(ttl=common.ARRAY_TTL, show_spinner=False, max_entries=128)
def chart_png(
    db_url: str, store_url: str, chart: str, ids: tuple[int, ...], metric: str, log: bool,
    view: str = "heatmap",
) -> bytes:  # fmt: skip
    """One server-drawn chart of these surfaces as PNG bytes, drawn once per surface set."""
    surfs = [common.surface(db_url, store_url, i) for i in ids]
    if chart == "side":
        fig = render.side_by_side(surfs, metric, log, view)
    elif chart == "difference":
        fig = render.difference(surfs[0], surfs[1], metric)
    elif chart == "curves":
        fig = render.curves(surfs, metric, log)
    else:
        fig = render.panel(surfs, metric, log)
    return render.png(fig)


@st.cache_data(ttl=common.ARRAY_TTL, show_spinner=False, max_entries=64)
def png_3d(
    db_url: str, store_url: str, ids: tuple[int, ...], metric: str, log: bool, elev: int,
    azim: int,
) -> bytes:  # fmt: skip
    """The surfaces in 3D from one camera angle, a server-drawn PNG, once per angle."""
    surfs = [common.surface(db_url, store_url, i) for i in ids]
    return render.png(render.surfaces_3d(surfs, metric, log, elev, azim))


def _shared_int(name: str, default: int, lo: int, hi: int) -> int:
    value = _shared(name, "")
    try:
        number = int(value)
    except ValueError:
        return default
    return number if lo <= number <= hi else default


def show_png(src: Any, chart: str, surfs: list[dict[str, Any]], caption: str, **kw: Any) -> None:
    """The chart as an image; ``kw``: metric, log and, for the side-by-side, view."""
    ids = tuple(int(s["id"]) for s in surfs)
    image = chart_png(src.db_url, src.store_url, chart, ids, **kw)
    width = "stretch" if chart != "difference" else "content"
    st.image(image, caption=caption, width=width, output_format="PNG")


def _load(src: Any, ids: list[int]) -> list[dict[str, Any]]:
    loaded = [common.safe_surface(src, i) for i in ids]
    return [s for s in loaded if s is not None]


def _shared(name: str, default: str) -> str:
    """A selection from the page's URL (?study=...&ids=...), so a view can be shared."""
    value = st.query_params.get(name)
    return value if isinstance(value, str) and value else default


src = common.sources()
st.title("Surfaces")
table = common.query(src.db_url, SURFACES)
complete = table[table["loss_array_id"].notna()]
if table.empty:
    st.info("No surfaces yet. Train a model and enqueue a surface around it, then compute it:\n\n"
            "`tracker train --arch mlp --widths 32 --dataset digits --epochs 5 --lr 0.05`\n\n"
            "`tracker enqueue surface --model 1 --x -1:1:51 --y -1:1:51 && tracker work`")
    st.stop()
if complete.empty:
    st.info(f"{len(table)} surface(s) enqueued, none complete yet: `tracker work` computes them.")
    st.stop()

studies = sorted(complete["study"].unique().tolist())
study_options = ["(all)", *studies]
wanted_study = _shared("study", "(all)")
study = st.selectbox("study", study_options, key="study",
                     index=study_options.index(wanted_study) if wanted_study in study_options
                     else 0)  # fmt: skip
if study != "(all)":
    complete = complete[complete["study"] == study]
labels = {int(r.id): _label(r) for r in complete.itertuples()}
two_d = complete[complete["ny"].notna()]
one_d = complete[complete["ny"].isna()]

c1, c2, c3 = st.columns(3)
metrics = ["loss", "acc"]
metric = c1.radio("value", metrics, horizontal=True,
                  index=metrics.index(_shared("metric", "loss")) if _shared("metric", "loss")
                  in metrics else 0)  # fmt: skip
view = c2.radio("view", VIEWS, horizontal=True, key="view",
                index=VIEWS.index(_shared("view", "heatmap")) if _shared("view", "heatmap")
                in VIEWS else 0,
                help="hover is interactive (Plotly): it shows each point's value; heatmap, "
                "contour and 3D are drawn as images (3D can be rotated in the browser)")  # fmt: skip
log = c3.checkbox("log10 scale", value=_shared("log", "0") == "1")

st.subheader("2D surfaces side by side")
chosen: list[int] = []
camera: dict[str, str] = {}  # the 3D view's mode and angle, for the address bar
if two_d.empty:
    st.caption("No complete 2D surfaces: `tracker enqueue surface --model ID --x -1:1:51 "
               "--y -1:1:51`, then `tracker work`.")  # fmt: skip
else:
    ids2 = [int(i) for i in two_d["id"]]
    from_url = [int(i) for i in _shared("ids", "").split(",") if i.isdigit() and int(i) in ids2]
    chosen = st.multiselect(f"2D surfaces (two to {MAX_SIDE_BY_SIDE})", ids2,
                            default=from_url[:MAX_SIDE_BY_SIDE] or ids2[-4:][:4],
                            max_selections=MAX_SIDE_BY_SIDE,
                            format_func=labels.__getitem__)  # fmt: skip
    surfs = _load(src, chosen)
    if len(surfs) == 1:
        st.caption("Pick a second surface to compare.")
    setups = {common.provenance_text(p) for p in two_d[two_d["id"].isin(chosen)]["provenance"]}
    if len(setups) > 1:  # fp32 against bf16, CPU against GPU: not the same computation
        st.warning("These surfaces were computed with different setups: " + "; ".join(sorted(setups)))  # fmt: skip
    elif setups:
        st.caption(f"computed with {setups.pop()}")
    if surfs and view == "3D":
        rotate = st.toggle("interactive (rotate in the browser)", key="rotate",
                           value=_shared("rotate", "0") == "1",
                           help="Plotly's 3D scene: drag to rotate, hover for values. It "
                           "takes a few seconds to appear (WebGL); the image shows at once")  # fmt: skip
        camera["rotate"] = "1" if rotate else "0"
    if surfs and view == "3D" and camera["rotate"] == "0":
        e_col, a_col = st.columns(2)
        elev = e_col.slider("elevation (degrees)", 0, 90, step=15, key="elev",
                            value=_shared_int("elev", render.ELEVATION, 0, 90))  # fmt: skip
        azim = a_col.slider("azimuth (degrees)", -180, 180, step=15, key="azim",
                            value=_shared_int("azim", render.AZIMUTH, -180, 180))  # fmt: skip
        camera.update(elev=str(elev), azim=str(azim))
        ids3 = tuple(int(s["id"]) for s in surfs)
        side = max(max(len(s["xs"]), len(s["ys"])) for s in surfs)
        note = (f" — drawn on at most {render.MAX_3D_EDGES} points a side; heatmap and hover "
                "show every point") if side > render.MAX_3D_EDGES else ""  # fmt: skip
        st.image(png_3d(src.db_url, src.store_url, ids3, metric, log, elev, azim),
                 caption=" · ".join(s["label"] for s in surfs) + note, width="stretch",
                 output_format="PNG")  # fmt: skip
    elif surfs and view == "3D":
        meshes = [mesh_3d(src.db_url, src.store_url, s["id"], metric, log) for s in surfs]
        st.plotly_chart(interactive.side_by_side_3d(meshes, metric, log), width="stretch")
        thin = [f"#{m['id']} ({m['grid'][1]}x{m['grid'][0]})" for m in meshes
                if m["z"].shape != m["grid"]]  # fmt: skip
        note = (f" — drawn on every k-th point (at most {interactive.MAX_3D_SIDE} a side) of "
                + ", ".join(thin) + "; heatmap and hover show every point") if thin else ""
        st.caption(" · ".join(s["label"] for s in surfs) + note)
    elif surfs and view == "hover":
        st.plotly_chart(interactive.hover_heatmaps(surfs, metric, log), width="stretch")
        st.caption(" · ".join(s["label"] for s in surfs))
    elif surfs:
        show_png(
            src,
            "side",
            surfs,
            " · ".join(s["label"] for s in surfs),
            metric=metric,
            log=log,
            view=view,
        )
    if len(surfs) >= 2:
        st.subheader("Difference of two surfaces")
        by_id = {s["id"]: s for s in surfs}
        a_col, b_col = st.columns(2)
        a = a_col.selectbox("A", list(by_id), index=0, format_func=labels.__getitem__)
        b = b_col.selectbox("B", list(by_id), index=1, format_func=labels.__getitem__)
        if same_grid(by_id[a], by_id[b]):
            show_png(
                src,
                "difference",
                [by_id[a], by_id[b]],
                f"#{a} minus #{b}",
                metric=metric,
                log=False,
            )
        else:
            st.warning(f"#{a} and #{b} are on different grids: a difference needs the same grid.")

# The current selection in the address bar: copy the URL to share this view.
st.query_params.from_dict({"study": study, "metric": metric, "view": view,
                           "log": "1" if log else "0", "ids": ",".join(map(str, chosen)),
                           **camera})  # fmt: skip
st.caption("The address bar holds this selection: copy it to share the view.")

st.subheader("1D curves overlaid")
if one_d.empty:
    st.caption("No complete 1D surfaces.")
else:
    ids1 = [int(i) for i in one_d["id"]]
    chosen1 = st.multiselect("1D surfaces", ids1, default=ids1[-4:],
                             format_func=labels.__getitem__)  # fmt: skip
    curves1 = _load(src, chosen1)
    if curves1:
        show_png(
            src, "curves", curves1, " · ".join(s["label"] for s in curves1), metric=metric, log=log
        )

st.subheader("Minibatch panels per epoch (seed 001)")
multi = two_d[(two_d["n_minibatches"].fillna(1) > 1) & two_d["retrain_id"].isna()]
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
        show_png(src, "panel", rows, f"model {model_id}, epoch {epoch}", metric=metric, log=log)
    elif rows:
        st.warning("These surfaces are on different grids; a panel needs one grid.")
