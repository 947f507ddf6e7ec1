"""The Topology, Level sets and Morse graphs pages once their results exist: rows written the
way a task writes them (arrays in Zarr, rows referencing them), read back onto the page."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from dashboard_support import reader_role, values
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


def _filler(column: sa.Column[Any], i: int) -> Any:
    """A value for a required column this test does not care about (schemas still evolve)."""
    kind = column.type
    if isinstance(kind, sa.types.TypeDecorator):
        kind = kind.impl_instance
    if isinstance(kind, sa.JSON):
        return {}
    return {int: 1, float: 0.5, bool: False, str: f"x{i}"}.get(kind.python_type)


def insert(conn: sa.Connection, table: str, **values: Any) -> int:
    """A row with ``values`` and a filler in every other required column; its id."""
    from tracker._schema import Base

    t = Base.metadata.tables[table]
    row = dict(values)
    for i, column in enumerate(t.columns):
        required = not column.nullable and column.default is None
        if required and column.server_default is None and not column.primary_key:
            row.setdefault(column.name, _filler(column, i))
    if "spec_hash" in t.columns and "spec_hash" not in values:
        row["spec_hash"] = f"{table}-{json.dumps(values, sort_keys=True, default=str)}"[:64]
    return int(conn.execute(sa.insert(t).values(**row).returning(t.c.id)).scalar_one())


def array(conn: sa.Connection, store: Any, path: str, data: np.ndarray) -> int:
    spec = store.write(path, data)
    return insert(conn, "arrays", path=spec.path, shape=list(spec.shape), dtype=spec.dtype,
                  chunks=list(spec.chunks))  # fmt: skip


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tracker._db import Database
    from tracker._migrate import upgrade
    from tracker._store import ArrayStore

    root = tmp_path_factory.mktemp("landed")
    url, store_url = f"sqlite:///{root / 'tracker.db'}", str(root / "store.zarr")
    db = Database(url)
    upgrade(db)
    store = ArrayStore(store_url)
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(12, 2))
    diagram = np.array([[0.1, 0.5, 0], [0.2, np.inf, 0], [0.3, 0.4, 1]])
    trace = rng.random((6, 3))
    sets = np.array([[0, 0, -1], [1, 1, -1]], dtype=np.int32)
    graph = {"nodes": [{"id": 0, "attractor": True, "trivial": False},
                       {"id": 1, "attractor": False, "trivial": True}],
             "edges": [[1, 0]], "lo": [-1.0, -2.0], "hi": [1.0, 2.0], "shape": [2, 3]}  # fmt: skip
    with db.engine.begin() as conn:
        study = insert(conn, "studies", name="landed")
        model = insert(conn, "models", study_id=study, architecture="mlp", dataset="iris",
                       optimizer="sgd", batch_size=16, test_acc=0.9)  # fmt: skip
        ckpt = insert(conn, "checkpoints", model_id=model, epoch=3)
        retrain = insert(conn, "retrains", study_id=study, model_id=model, checkpoint_id=ckpt,
                         step_size=0.5)  # fmt: skip
        for k in range(4):
            insert(conn, "trajectory_points", retrain_id=retrain, save_index=k, epoch=k / 2)
        emb = insert(conn, "embeddings", study_id=study, model_id=model,
                     coords_array_id=array(conn, store, "t/coords", coords))  # fmt: skip
        insert(conn, "persistence_diagrams", study_id=study, embedding_id=emb, loss_name="train",
               knn=5, h0_count=2, h1_count=1,
               diagram_array_id=array(conn, store, "t/diagram", diagram))  # fmt: skip
        insert(conn, "levelset_runs", study_id=study, setup="mlp-iris", final_angle=0.3,
               final_test_acc=0.8, trace_fields=["loss", "angle", "norm"],
               trace_array_id=array(conn, store, "t/trace", trace))  # fmt: skip
        insert(conn, "morse_graphs", study_id=study, setup="doodl3", n_nodes=2, n_nontrivial=1,
               graph=graph,
               weight_names=["w1", "w2"],
               morse_sets_array_id=array(conn, store, "t/sets", sets))  # fmt: skip
    db.dispose()
    return {"url": url, "store": store_url, "coords": coords, "diagram": diagram,
            "trace": trace, "sets": sets}  # fmt: skip


def page(
    landed: dict[str, Any], monkeypatch: pytest.MonkeyPatch, name: str, *, empty_ok: bool = False
) -> AppTest:
    monkeypatch.setenv("TRACKER_DB_URL", landed["url"])
    monkeypatch.setenv("TRACKER_STORE", landed["store"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{Path(landed['store']).parent}/ml.db")
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page(f"views/{name}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    if not empty_ok:
        assert not at.info, [i.value for i in at.info]  # no "nothing yet" message
    return at


def spec(at: AppTest, i: int) -> dict[str, Any]:
    return json.loads(at.get("plotly_chart")[i].proto.spec)


def test_topology_page_draws_the_embedding_and_the_diagram(landed, monkeypatch) -> None:
    at = page(landed, monkeypatch, "topology")
    assert [len(df.value) for df in at.dataframe] == [1, 1, 1]  # retrains, embeddings, diagrams
    assert "4 trajectory points saved" in [c.value for c in at.caption]
    phate = spec(at, 0)["data"][0]
    np.testing.assert_allclose(values(phate["x"]), landed["coords"][:, 0])
    np.testing.assert_allclose(values(phate["y"]), landed["coords"][:, 1])
    h0, h1, _diagonal = spec(at, 1)["data"]
    assert (h0["name"], h1["name"]) == ("H0", "H1")
    np.testing.assert_allclose(values(h0["x"]), [0.1, 0.2])
    np.testing.assert_allclose(values(h1["y"]), [0.4])
    assert values(h0["y"])[1] > 0.5  # the infinite death is drawn above every finite one


def test_levelset_page_plots_the_named_trace(landed, monkeypatch) -> None:
    at = page(landed, monkeypatch, "levelsets")
    assert at.dataframe[0].value["setup"].tolist() == ["mlp-iris"]
    trace = spec(at, 1)
    np.testing.assert_allclose(values(trace["data"][0]["y"]), landed["trace"][:, 0])
    assert trace["layout"]["yaxis"]["title"]["text"] == "loss"


def test_morse_page_draws_the_graph_and_its_morse_sets(landed, monkeypatch) -> None:
    at = page(landed, monkeypatch, "morse")
    dot = at.get("graphviz_chart")[0].proto.spec
    assert '"1" -> "0"' in dot and '"0" [shape=doublecircle]' in dot
    # Node 1's Conley index is trivial: dashed and said; both counts are shown.
    assert '"1" [shape=ellipse] [style="filled,dashed"]' in dot and "1 trivial" in dot
    assert [m.value for m in at.metric] == ["1 / 2"]
    table = at.dataframe[0].value
    assert table[["n_nodes", "n_nontrivial"]].values.tolist() == [[2, 1]]
    assert list(table.columns).index("n_nontrivial") == list(table.columns).index("n_nodes") + 1
    sets = spec(at, 0)["data"][0]
    expected = np.where(landed["sets"] < 0, np.nan, landed["sets"])
    np.testing.assert_allclose(values(sets["z"]), expected)
    np.testing.assert_allclose(values(sets["x"]), [-1.0, 0.0, 1.0])
    # Categorical colours: each Morse set one flat colour, the graph drawing's own.
    from tracker.morse.plots import node_colour

    n = int(np.nanmax(expected)) + 1
    assert (sets["zmin"], sets["zmax"]) == (-0.5, n - 0.5)
    assert [c for _, c in sets["colorscale"]] == [node_colour(i) for i in range(n) for _ in "ab"]


def test_meta_page_plots_persistence_summaries_against_test_accuracy(landed, monkeypatch) -> None:
    at = page(landed, monkeypatch, "meta", empty_ok=True)  # no surfaces in this database
    (table,) = [df.value for df in at.dataframe if "h0_count" in df.value]
    assert table[["h0_count", "h1_count", "test_acc"]].values.tolist() == [[2, 1, 0.9]]
    (points,) = spec(at, 0)["data"]
    assert points["name"] == "batch_size 16"
    np.testing.assert_allclose(values(points["y"]), [0.9])


@pytest.fixture(scope="module")
def curved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Hessian spectra of two models (eigen, trace, density) and a 1D --curvature surface."""
    from tracker._db import Database
    from tracker._migrate import upgrade
    from tracker._store import ArrayStore

    root = tmp_path_factory.mktemp("curved")
    url, store_url = f"sqlite:///{root / 'tracker.db'}", str(root / "store.zarr")
    db = Database(url)
    upgrade(db)
    store = ArrayStore(store_url)
    history = np.array([[3.0, np.nan], [4.0, 2.0]])
    grid = np.stack([np.linspace(-1, 5, 7), np.array([0, 0.1, 0.2, 0.3, 0.2, 0.1, 0.1])])
    lam = np.array([[[-1.0, -0.5, -0.25]]]), np.array([[[2.0, 4.0, 5.0]]])
    with db.engine.begin() as conn:
        study = insert(conn, "studies", name="curved")
        # bn_mode and the checkpoint come first in insert()'s 64-character spec hash.
        done = {"completed_at": sa.func.current_timestamp()}
        for m, name in enumerate(("wide", "narrow")):
            model = insert(conn, "models", study_id=study, name=name, architecture="mlp",
                           dataset="iris", optimizer="sgd", batch_size=16 * 4**m)  # fmt: skip
            for epoch in (1, 3):
                ckpt = insert(conn, "checkpoints", model_id=model, epoch=epoch)
                common = {"study_id": study, "model_id": model, "checkpoint_id": ckpt,
                          "epoch": epoch, **done}  # fmt: skip
                insert(conn, "hessian_spectra", measure="eigen", top_k=2, bn_mode="eval",
                       top_eigenvalue=4.0 * (m + 1) + epoch, eigenvalues=[4.0, 2.0],
                       history_array_id=array(conn, store, f"h/{model}-{epoch}", history),
                       **common)  # fmt: skip
                # A Gauss-Newton trace, and one from before the estimator was recorded.
                config = ({"trace_method": "auto", "estimator": "gauss-newton"} if m == 0
                          else {"trace_method": "hutchinson"})  # fmt: skip
                insert(conn, "hessian_spectra", measure="trace", trace=10.0 + epoch, bn_mode="train",
                       layer_traces={"fc1": 7.0, "fc2": 3.0 + epoch}, config=config, **common)  # fmt: skip
        common["checkpoint_id"] = insert(conn, "checkpoints", model_id=model, epoch=5)
        insert(conn, "hessian_spectra", measure="density", bn_mode="eval", density_array_id=array(
            conn, store, "h/density", grid), **common)  # fmt: skip
        ids = {f"{n}_array_id": array(conn, store, f"s/{n}", v)
               for n, v in (("lambda_min", lam[0]), ("lambda_max", lam[1]))}  # fmt: skip
        insert(conn, "surfaces", study_id=study, checkpoint_id=ckpt, x_min=-1.0, x_max=1.0, nx=3,
               curvature=True, bn_mode="eval", lambda_ratio_array_id=ids["lambda_min_array_id"],
               **ids)  # fmt: skip
    db.dispose()
    return {"url": url, "store": store_url, "grid": grid, "history": history, "lam": lam}


def test_curvature_page_compares_models_and_draws_the_stored_arrays(curved, monkeypatch) -> None:
    at = page(curved, monkeypatch, "curvature")
    table = at.dataframe[0].value
    assert len(table) == 9 and set(table["status"]) == {"done"}
    traces_shown = table[table["measure"] == "trace"]
    assert dict(zip(traces_shown["model"], traces_shown["trace probes"], strict=True)) == {
        "wide": "gauss-newton", "narrow": "hessian"}  # fmt: skip
    assert table[table["measure"] != "trace"]["trace probes"].isna().all()
    assert at.multiselect[0].value == ["narrow", "wide"]
    tops, traces, chosen, *rest = (spec(at, i) for i in range(len(at.get("plotly_chart"))))
    by_model = {t["name"]: values(t["y"]).tolist() for t in tops["data"]}
    assert by_model == {"wide": [5.0, 7.0], "narrow": [9.0, 11.0]}
    assert {t["name"]: values(t["y"]).tolist() for t in traces["data"]}["wide"] == [11.0, 13.0]
    # The first spectrum with an array: eigen, its Lanczos convergence.
    np.testing.assert_allclose(values(chosen["data"][1]["y"]), curved["history"][:, 1])
    # The --curvature surface: lambda_min and lambda_max along x.
    curve = rest[-1]["data"]
    np.testing.assert_allclose(values(curve[1]["y"]), curved["lam"][1][0, 0])


def test_curvature_page_draws_a_density_on_a_log_axis(curved, monkeypatch) -> None:
    at = page(curved, monkeypatch, "curvature")
    density_id = int(at.dataframe[0].value.query("measure == 'density'")["id"].iloc[0])
    at.selectbox[0].set_value(density_id).run()
    fig = spec(at, 2)
    assert fig["layout"]["yaxis"]["type"] == "log"
    np.testing.assert_allclose(values(fig["data"][0]["x"]), curved["grid"][0])


@pytest.fixture(scope="module")
def retrained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A model's final-checkpoint spectrum and its two retrained networks' (last saves)."""
    from tracker._db import Database
    from tracker._migrate import upgrade

    root = tmp_path_factory.mktemp("retrained")
    url, store_url = f"sqlite:///{root / 'tracker.db'}", str(root / "store.zarr")
    db = Database(url)
    upgrade(db)
    with db.engine.begin() as conn:
        study = insert(conn, "studies", name="jumps")
        model = insert(conn, "models", study_id=study, name="base", architecture="mlp",
                       dataset="digits", optimizer="sgd", batch_size=32)  # fmt: skip
        ckpt = insert(conn, "checkpoints", model_id=model, epoch=4)
        common = {"study_id": study, "model_id": model, "checkpoint_id": ckpt, "epoch": 4,
                  "measure": "eigen", "top_k": 1, "bn_mode": "eval",
                  "completed_at": sa.func.current_timestamp()}  # fmt: skip
        insert(conn, "hessian_spectra", top_eigenvalue=6.0, **common)
        for seed, (step, top) in enumerate(((0.5, 4.0), (1.0, 2.5))):
            rid = insert(conn, "retrains", study_id=study, model_id=model, checkpoint_id=ckpt,
                         seed=seed, step_size=step, epochs=2, spec_hash=f"r{seed}")  # fmt: skip
            for save, value in ((0, 9.0), (2, top)):  # the jump, then the last save
                insert(conn, "hessian_spectra", top_eigenvalue=value, retrain_id=rid,
                       save_index=save, spec_hash=f"r{rid}-{save}", **common)  # fmt: skip
    db.dispose()
    return {"url": url, "store": store_url}


def test_curvature_page_plots_retrained_networks_against_the_jump(retrained, monkeypatch) -> None:
    at = page(retrained, monkeypatch, "curvature")
    table = at.dataframe[0].value
    assert sorted(table["save_index"].dropna().astype(int)) == [0, 0, 2, 2]
    per_epoch, jumps, *_ = (spec(at, i) for i in range(len(at.get("plotly_chart"))))
    # Per epoch: the checkpoint's own value only.
    (line,) = per_epoch["data"]
    assert values(line["y"]).tolist() == [6.0]
    # Against the step size: each retrain's last save, and the model's value as a line.
    (points,) = jumps["data"]
    assert values(points["x"]).tolist() == [0.5, 1.0]
    assert values(points["y"]).tolist() == [4.0, 2.5]
    assert [shape["y0"] for shape in jumps["layout"]["shapes"]] == [6.0]


PAGES = ["overview", "models", "surfaces", "topology", "levelsets", "morse", "meta", "curvature"]


def test_every_page_reads_postgresql_and_sqlite_alike(db, tmp_path, monkeypatch) -> None:
    """The pages' own queries on both databases: a queue of no-op tasks, nothing else yet. On
    PostgreSQL the dashboard connects as the read-only role, as it is deployed."""
    from tracker._queue import enqueue, get_or_create_study

    with db.session() as session:
        study = get_or_create_study(session, "queue-only")
        for i in range(3):
            enqueue(session, study, "noop", {"index": i})
    with contextlib.ExitStack() as stack:
        url = db.url
        if db.engine.dialect.name == "postgresql":
            url = stack.enter_context(reader_role(db))
        _every_page(url, tmp_path, monkeypatch)


def _every_page(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKER_DB_URL", db_url)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("TRACKER_STORE", str(elsewhere / "store.zarr"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere / 'mlflow.db'}")
    for name in PAGES:
        at = AppTest.from_file(APP, default_timeout=120)
        at.switch_page(f"views/{name}.py")
        at.run()
        assert not at.exception, (name, [e.value for e in at.exception])
        assert not at.error, (name, [e.value for e in at.error])
        if name == "overview":
            assert {m.label: m.value for m in at.metric}["Tasks"] == "3"
        if name == "meta":
            # The SQL box's example query reads the documented measures view (no rows yet:
            # its columns as a static HTML table, no Arrow table or grid).
            (html,) = [m.value for m in at.markdown if "<table" in m.value]
            assert re.findall(r"<th>(.*?)</th>", html)[:2] == ["model_id", "batch_size"]
            assert not at.table and not at.dataframe
            assert "no rows" in at.caption[-1].value
        if name == "levelsets":
            assert "the `levelset_runs` table has no rows" in at.info[0].value
        if name == "curvature":
            assert "the `hessian_spectra` table has no rows" in at.info[0].value
            assert "`tracker enqueue hessian --model ID" in at.info[0].value
    assert list(elsewhere.iterdir()) == []  # no store or MLflow database was created


@pytest.fixture
def ranked(tmp_path: Path) -> dict[str, Any]:
    """Five models whose one measure rises with their generalisation gap (tau = 1)."""
    from tracker._db import Database
    from tracker._migrate import upgrade

    url = f"sqlite:///{tmp_path / 'tracker.db'}"
    db = Database(url)
    upgrade(db)
    with db.engine.begin() as conn:
        study = insert(conn, "studies", name="ranked")
        definition = insert(conn, "measure_definitions", key="rise_r050 2d", family="surface",
                            kind="rise_r050")  # fmt: skip
        for i in range(5):
            model = insert(conn, "models", study_id=study, name=f"m{i}", architecture="mlp",
                           dataset="iris", optimizer="sgd", batch_size=16 * 2**i, seed=0,
                           train_acc=1.0, test_acc=0.9 - 0.1 * i, gap=0.1 + 0.1 * i)  # fmt: skip
            ckpt = insert(conn, "checkpoints", model_id=model, epoch=3)
            insert(conn, "measures", study_id=study, definition_id=definition, model_id=model,
                   checkpoint_id=ckpt, epoch=3, value=1.0 + i, n_seeds=1)  # fmt: skip
    db.dispose()
    return {"url": url, "store": str(tmp_path / "store.zarr")}


def _taus(at: AppTest) -> Any:
    (table,) = [df.value for df in at.dataframe if "tau 2.5%" in df.value]
    return table


def test_meta_page_draws_the_bootstrap_once_per_data(ranked, monkeypatch) -> None:
    import streamlit as st
    from streamlit.runtime.caching import cache_utils

    from tracker.meta import results

    # A clock the page's caches read: moving it on expires the 10 s query caches.
    later = [0.0]
    monotonic = cache_utils.TTLCACHE_TIMER
    monkeypatch.setattr(cache_utils, "TTLCACHE_TIMER", lambda: monotonic() + later[0])
    st.cache_data.clear()  # caches made from now on use that clock
    calls: list[int] = []
    real = results.meta_table
    monkeypatch.setattr(results, "meta_table", lambda *a, **k: calls.append(1) or real(*a, **k))

    first = _taus(page(ranked, monkeypatch, "meta", empty_ok=True))
    assert first[["target", "measure", "models", "tau"]].values.tolist() == [
        ["gap", "rise_r050", 5, 1.0]]  # fmt: skip
    later[0] += 60  # the measures are read again, unchanged: the bootstrap is not drawn again
    again = _taus(page(ranked, monkeypatch, "meta", empty_ok=True))
    assert len(calls) == 1
    pd.testing.assert_frame_equal(again, first)

    engine = sa.create_engine(ranked["url"])
    with engine.begin() as conn:  # the measure now falls as the gap rises
        conn.execute(sa.text("UPDATE measures SET value = 10 - value"))
    engine.dispose()
    later[0] += 60
    changed = _taus(page(ranked, monkeypatch, "meta", empty_ok=True))
    assert len(calls) == 2
    assert changed["tau"].tolist() == [-1.0]
    assert changed["tau 97.5%"].tolist() != first["tau 97.5%"].tolist()


def test_sql_box_shows_an_empty_result_as_a_static_table_of_its_columns(
    ranked, monkeypatch
) -> None:
    at = page(ranked, monkeypatch, "meta", empty_ok=True)
    at.text_area(key="sql").set_value(
        'SELECT id AS model, batch_size AS "<b>bs</b>" FROM models WHERE id < 0').run()  # fmt: skip
    assert not at.exception and not at.error
    (html,) = [m.value for m in at.markdown if "<table" in m.value]
    assert "<th>model</th>" in html and "<th>&lt;b&gt;bs&lt;/b&gt;</th>" in html  # escaped
    assert "<td>" not in html  # no rows
    assert "The query returned no rows." in [c.value for c in at.caption]
    assert not at.table and not [df for df in at.dataframe if "<b>bs</b>" in df.value.columns]
