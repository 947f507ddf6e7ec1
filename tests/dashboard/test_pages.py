"""Every page through streamlit.testing.v1.AppTest over the seeded study: no exception, and
the numbers on the page are the ones in the database, the Zarr store and MLflow."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from dashboard_support import Seeded, count, values
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


def run_page(page: str | None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    if page is not None:
        at.switch_page(f"views/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def figures(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def rows(db_url: str, sql: str) -> list[Any]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql)))
    finally:
        engine.dispose()


def test_overview_counts_the_queue_and_shows_the_failure(dashboard_env: Seeded) -> None:
    at = run_page(None)
    metrics = {m.label: m.value for m in at.metric}
    tasks = count(dashboard_env.db_url, "tasks")
    assert metrics == {"Studies": "1", "Tasks": str(tasks), "Done": str(tasks - 1), "Failed": "1"}
    per_kind = at.table[1].value  # a static table (no data grid bundle in the browser)
    assert per_kind["failed"].sum() == 1 and per_kind["done"].sum() == tasks - 1
    assert set(per_kind.loc[per_kind["failed"] == 1, "kind"]) == {"test.fail"}
    errors = [c.value for c in at.code]
    assert any("is designed to fail" in text for text in errors), errors


def test_models_table_and_training_curves_come_from_the_rows_and_mlflow(
    dashboard_env: Seeded,
) -> None:
    at = run_page("models")
    table = at.dataframe[0].value
    assert sorted(table["batch_size"]) == [16, 64]
    expected = {
        r.id: (r.test_acc, r.train_loss, r.mlflow_run_id)
        for r in rows(dashboard_env.db_url, "SELECT * FROM models")
    }
    for r in table.itertuples():
        assert r.test_acc == pytest.approx(expected[r.id][0])
        assert r.mlflow.endswith(f"/runs/{expected[r.id][2]}")
    (fig,) = figures(at)
    assert len(fig["data"]) == 2  # both models overlaid
    for trace in fig["data"]:
        model_id = int(trace["name"].split(":")[0])
        steps, losses = values(trace["x"]), values(trace["y"])
        assert list(steps) == [0, 1, 2, 3]  # epoch 0 and the three epochs
        assert losses[-1] == pytest.approx(expected[model_id][1], rel=1e-6)
    # Several metrics at once, on a log axis: one curve per model and metric.
    at.multiselect(key="metrics").set_value(["train_loss", "test_loss"]).run()
    at.checkbox(key="log_y").check().run()
    (fig,) = figures(at)
    assert len(fig["data"]) == 4 and fig["layout"]["yaxis"]["type"] == "log"
    assert {t["name"].rsplit(" · ", 1)[1] for t in fig["data"]} == {"train_loss", "test_loss"}
    at.multiselect(key="metrics").set_value(["train_loss"]).run()
    at.checkbox(key="log_y").uncheck().run()
    # Filters narrow the table (and the curves).
    at.multiselect(key="filter_batch_size").set_value([64]).run()
    assert at.dataframe[0].value["batch_size"].tolist() == [64]
    assert len(figures(at)[0]["data"]) == 1
    best = max(r[0] for r in expected.values())
    at.multiselect(key="filter_batch_size").set_value([]).run()
    low = math.floor(best * 100) / 100
    at.slider(key="filter_test_acc").set_value(low).run()
    assert not at.exception
    kept = at.dataframe[0].value
    assert (kept["test_acc"] >= low).all() and best in kept["test_acc"].tolist()


def _stored(db_url: str, store_url: str) -> tuple[dict[int, np.ndarray], dict[int, int]]:
    """Every surface's stored loss array (read apart from the dashboard) and its minibatches."""
    import zarr

    root = zarr.open_group(store_url, mode="r")
    found = rows(db_url, "SELECT s.id, a.path, s.n_minibatches FROM surfaces s "
                         "JOIN arrays a ON a.id = s.loss_array_id")  # fmt: skip
    return {r.id: np.asarray(root[r.path]) for r in found}, {r.id: r.n_minibatches for r in found}


def test_surfaces_page_draws_images_and_plotly_only_in_3d(dashboard_env: Seeded) -> None:
    """Heatmaps, difference, curves, panel and the default 3D view are server-drawn images
    (no Plotly bundle for the browser); the interactive 3D view is Plotly, on one colour
    scale, with the stored grids."""
    at = run_page("surfaces")
    assert figures(at) == []
    images = at.get("image")
    chosen = at.multiselect[0].value
    assert len(chosen) >= 2 and len(images) == 4  # side by side, difference, curves, panel
    side, diff, *_ = [img.proto.imgs[0] for img in images]
    assert len(side.caption.split(" · ")) == len(chosen)
    assert diff.caption == f"#{chosen[0]} minus #{chosen[1]}"
    assert all(img.proto.imgs[0].url for img in images)
    at.radio(key="view").set_value("contour").run()
    assert not at.exception and figures(at) == [] and len(at.get("image")) == 4
    at.radio(key="view").set_value("3D").run()
    assert not at.exception and figures(at) == [] and len(at.get("image")) == 4
    at.toggle(key="rotate").set_value(True).run()
    assert not at.exception
    (side3d,) = figures(at)
    stored, _ = _stored(dashboard_env.db_url, dashboard_env.store_url)
    grids = {sid: stored[sid][0] for sid in chosen}
    for trace, sid in zip(side3d["data"], chosen, strict=True):
        assert trace["type"] == "surface" and trace["coloraxis"] == "coloraxis"
        np.testing.assert_allclose(values(trace["z"]), grids[sid])
    lo = min(float(np.nanmin(g)) for g in grids.values())
    hi = max(float(np.nanmax(g)) for g in grids.values())
    assert side3d["layout"]["coloraxis"]["cmin"] == pytest.approx(lo)
    assert side3d["layout"]["coloraxis"]["cmax"] == pytest.approx(hi)


def test_surface_images_share_one_colour_scale_and_show_the_stored_grids(
    dashboard_env: Seeded,
) -> None:
    """The image charts' content, through the page's own loader and drawing functions."""
    from matplotlib.collections import QuadMesh

    from dashboard import common, render

    stored, minibatches = _stored(dashboard_env.db_url, dashboard_env.store_url)

    def load(sid: int) -> dict[str, Any]:
        return common.surface(dashboard_env.db_url, dashboard_env.store_url, sid)

    two_d = sorted(sid for sid, arr in stored.items() if arr.shape[1] > 1)
    surfs = [load(sid) for sid in two_d]
    for view in ("heatmap", "contour"):
        fig = render.side_by_side(surfs, "loss", False, view)
        assert render.png(fig).startswith(b"\x89PNG")
        lo = min(float(np.nanmin(stored[sid][0])) for sid in two_d)
        hi = max(float(np.nanmax(stored[sid][0])) for sid in two_d)
        panels = fig.axes[: len(surfs)]
        assert [ax.get_title() for ax in panels] == [render.title(s) for s in surfs]
        assert all(t.startswith(f"#{sid}: ") and "epoch" in t
                   for t, sid in zip([ax.get_title() for ax in panels], two_d, strict=True))
        for ax, sid in zip(panels, two_d, strict=True):
            drawn = ax.collections[0]
            assert drawn.norm.vmin == pytest.approx(lo) and drawn.norm.vmax == pytest.approx(hi)
            if view == "heatmap":
                assert isinstance(drawn, QuadMesh)
                np.testing.assert_allclose(drawn.get_array().reshape(stored[sid][0].shape),
                                           stored[sid][0])  # fmt: skip
        assert panels[0].get_shared_x_axes().joined(panels[0], panels[-1])
    # The difference of the two models' 7x5 surfaces, centred on zero.
    a, b = [sid for sid in two_d if stored[sid].shape[1:] == (5, 7)][:2]
    mesh = render.difference(load(a), load(b), "loss").axes[0].collections[0]
    np.testing.assert_allclose(mesh.get_array().reshape(5, 7), stored[a][0] - stored[b][0])
    assert mesh.norm.vmin == pytest.approx(-mesh.norm.vmax)
    # 1D curves: one line per stored 1D surface.
    one_d = sorted(sid for sid, arr in stored.items() if arr.shape[1] == 1)
    lines = render.curves([load(sid) for sid in one_d], "loss", False).axes[0].lines
    assert len(lines) == len(one_d) == 2
    for line, sid in zip(lines, one_d, strict=True):
        np.testing.assert_allclose(line.get_ydata(), stored[sid][0, 0])
    # Seed 001's panel: one direction pair (row) x two minibatches (columns).
    (multi,) = [sid for sid, n in minibatches.items() if n == 2]
    fig = render.panel([load(multi)], "loss", False)
    meshes = [ax.collections[0] for ax in fig.axes[:2]]
    for g, m in enumerate(meshes):
        np.testing.assert_allclose(m.get_array().reshape(3, 3), stored[multi][g])
    assert {(m.norm.vmin, m.norm.vmax) for m in meshes} == {
        (float(np.nanmin(stored[multi])), float(np.nanmax(stored[multi])))
    }


@pytest.mark.parametrize("page", ["topology", "morse", "curvature"])
def test_pages_of_analyses_not_landed_yet_say_what_they_will_show(
    dashboard_env: Seeded, page: str
) -> None:
    at = run_page(page)
    messages = " ".join(i.value for i in at.info)
    tables = {"topology": ["retrains", "embeddings", "persistence_diagrams"],
              "morse": ["morse_graphs"], "curvature": ["hessian_spectra"]}[page]  # fmt: skip
    for table in tables:
        assert count(dashboard_env.db_url, table) == 0
        assert f"the `{table}` table has no rows" in messages
    assert "this page shows" in messages


def test_levelset_page_shows_figure2_table1_and_figure7_of_the_stored_runs(
    dashboard_env: Seeded,
) -> None:
    """The figures of `tracker plot levelset`, recomputed here from the rows and Zarr arrays."""
    import zarr

    before = rows(dashboard_env.db_url, "SELECT * FROM levelset_runs ORDER BY id")
    at = run_page("levelsets")
    assert [s.value for s in at.selectbox[:2]] == ["IRIS_FF", "(all)"]
    runs = rows(dashboard_env.db_url,
                "SELECT r.final_test_loss, r.final_test_acc, r.snapshot_steps, t.path AS trace "
                "FROM levelset_runs r JOIN arrays t ON t.id = r.trace_array_id "
                "ORDER BY r.run_index")  # fmt: skip
    l2 = rows(dashboard_env.db_url, "SELECT l2_lambda, final_test_loss FROM l2_baseline_runs "
                                    "ORDER BY l2_lambda")  # fmt: skip
    assert len(runs) == 2 and len(l2) == 2
    # Table 1: the traversal's mean final test loss, then one row per lambda.
    table = next(df.value for df in at.dataframe if "l2_lambda" in df.value)
    assert table["method"].tolist() == ["levelset", "l2", "l2"]
    assert table["n_runs"].tolist() == [2, 1, 1]
    assert table["l2_lambda"].tolist()[1:] == [0.0, 1e-3]
    assert table["test_loss_mean"].iloc[0] == pytest.approx(np.mean([r[0] for r in runs]))
    assert table["test_acc_std"].iloc[0] == pytest.approx(np.std([r[1] for r in runs]))
    assert table["test_loss_mean"].tolist()[1:] == pytest.approx([r[1] for r in l2])
    # Figure 2: four panels; R's mean line is the mean of the two stored traces.
    fig2, fig7 = figures(at)[:2]
    root = zarr.open_group(dashboard_env.store_url, mode="r")
    traces = [np.asarray(root[r.trace]) for r in runs]
    assert [t.shape[0] for t in traces] == [20, 20]
    titles = [a["text"] for a in fig2["layout"]["annotations"]]
    assert titles == ["angle(grad R, grad L) [deg]", "R = |theta|^2", "test loss", "test accuracy"]
    means = [t for t in fig2["data"] if t["name"].endswith(" mean")]
    assert [t["name"] for t in means] == [f"{n} mean" for n in
                                          ("angle_deg", "weight_norm_sq", "test_loss", "test_acc")]  # fmt: skip
    from compute.levelset import TRACE_FIELDS

    r_col = TRACE_FIELDS.index("weight_norm_sq")
    expected = np.mean([t[:, r_col] for t in traces], axis=0)
    np.testing.assert_allclose(values(means[1]["y"]), expected, rtol=1e-6)
    # Figure 7: every snapshot of both runs, the mean traversal end and the lambda=1e-3 end.
    n_snaps = sum(len(json.loads(r[2]) if isinstance(r[2], str) else r[2]) for r in runs)
    points, *ends = fig7["data"]
    assert points["type"] == "scatter3d" and len(values(points["x"])) == n_snaps
    assert [e["name"] for e in ends] == ["traversal end (mean)", "L2 end, lambda=0.001 (mean)"]
    # Read-only: the page changed nothing.
    assert rows(dashboard_env.db_url, "SELECT * FROM levelset_runs ORDER BY id") == before


def test_meta_analysis_scatters_a_measure_against_the_gap_by_batch_size(
    dashboard_env: Seeded,
) -> None:
    at = run_page("meta")
    # Two models are too few for a tau (it needs 3); the measures are there.
    assert any("3 or more models" in c.value for c in at.caption)
    option = next(o for o in at.selectbox(key="meta_measure").options
                  if o.startswith("rise_r050 1d random/filter") and "grid=-1:1:9 " in o)  # fmt: skip
    at.selectbox(key="meta_measure").set_value(option).run()
    assert not at.exception and not at.error
    measure = at.dataframe[0].value
    assert sorted(measure["batch_size"]) == [16, 64] and set(measure["kind"]) == {"rise_r050"}
    np.testing.assert_allclose(measure["gap"], measure["train_acc"] - measure["test_acc"])
    sql = "SELECT rise_r050 FROM surfaces WHERE nx = 9 AND ny IS NULL ORDER BY id"
    assert sorted(measure["value"]) == sorted(r[0] for r in rows(dashboard_env.db_url, sql))
    fig = figures(at)[0]
    assert sorted(t["name"] for t in fig["data"]) == ["batch_size 16", "batch_size 64"]
    assert fig["layout"]["yaxis"]["title"]["text"] == "gap"
    # The SQL box: a query gives a table and a scatter of two numeric columns.
    at.text_area(key="sql").set_value("SELECT id, batch_size, test_acc FROM models").run()
    assert not at.exception and not at.error
    assert sorted(at.dataframe[-1].value["batch_size"]) == [16, 64]
    scatter = figures(at)[-1]
    assert scatter["layout"]["xaxis"]["title"]["text"] == "id"


@pytest.mark.parametrize(
    "sql",
    ["INSERT INTO studies (name) VALUES ('x')", "UPDATE models SET lr = 1",
     "DELETE FROM models", "DROP TABLE models"],
)  # fmt: skip
def test_sql_box_refuses_changes_with_a_clear_message(dashboard_env: Seeded, sql: str) -> None:
    before = rows(dashboard_env.db_url, "SELECT id, lr FROM models ORDER BY id")
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("views/meta.py")
    at.run()
    at.text_area(key="sql").set_value(sql).run()
    assert not at.exception
    assert [e.value for e in at.error] and "read-only" in at.error[0].value, at.error
    assert rows(dashboard_env.db_url, "SELECT id, lr FROM models ORDER BY id") == before
    assert count(dashboard_env.db_url, "studies") == 1
