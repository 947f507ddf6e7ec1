"""What keeps the dashboard quick to open (issue 19): each page loads only the libraries it
needs, the start-up warm-up loads the pages' modules but none of the heavy ones, and a large
surface is drawn in 3D on a thinned grid in one scene, with its true values and coordinates.
Timings themselves are in benchmarks/dashboard.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dashboard_support import Seeded, values
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "dashboard" / "app.py")
HEAVY = ("torch", "dask", "distributed", "mlflow", "zarr")

# Runs pages in a fresh interpreter (this test process has imported torch and the rest while
# seeding) and prints, after each group of pages, which heavy libraries are loaded.
PAGES_SCRIPT = """
import json, sys
from streamlit.testing.v1 import AppTest
out = {}
for group in json.loads(sys.argv[2]):
    for page in group:
        at = AppTest.from_file(sys.argv[1], default_timeout=120)
        if page != "overview":
            at.switch_page(f"views/{page}.py")
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
    out[",".join(group)] = sorted(m for m in json.loads(sys.argv[3]) if m in sys.modules)
print(json.dumps(out))
"""


def _fresh_python(script: str, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600,
        cwd=REPO, env={**os.environ, **(env or {}), "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_each_page_loads_only_the_heavy_libraries_it_needs(dashboard_env: Seeded) -> None:
    groups = [
        ["overview", "topology", "morse", "curvature", "meta"],  # tables and charts: none
        ["surfaces", "levelsets"],  # stored arrays: Zarr
        ["models"],  # training curves: MLflow
    ]
    loaded = json.loads(_fresh_python(PAGES_SCRIPT, APP, json.dumps(groups), json.dumps(HEAVY)))
    first, arrays, curves = (loaded[",".join(g)] for g in groups)
    assert first == []
    assert arrays == ["zarr"]
    assert curves == ["mlflow", "zarr"]


WARM_SCRIPT = """
import json, socket, sys
from dashboard import warm
with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen()
    warm.warm("127.0.0.1", server.getsockname()[1])
print(json.dumps({m: m in sys.modules for m in json.loads(sys.argv[1])}))
"""


def test_the_warm_up_loads_the_pages_modules_but_no_heavy_library() -> None:
    wanted = ["pandas", "pyarrow", "plotly.graph_objects", "matplotlib.figure",
              "dashboard.common", "dashboard.render", "tracker._status"]  # fmt: skip
    loaded = json.loads(_fresh_python(WARM_SCRIPT, json.dumps(wanted + list(HEAVY))))
    assert [m for m in wanted if not loaded[m]] == []
    assert [m for m in HEAVY if loaded[m]] == []


def test_the_warm_up_gives_up_when_no_server_comes(monkeypatch: pytest.MonkeyPatch) -> None:
    from dashboard import warm

    monkeypatch.setattr(warm, "SERVER_WAIT_S", 0.2)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    warm.warm("127.0.0.1", port, modules=("a_module_that_is_not_there",))  # returns quietly


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two seeded 101x101 surfaces imported into a fresh home (the benchmark's seeding)."""
    from benchmarks.dashboard import seed_surfaces

    home = tmp_path_factory.mktemp("large") / ".tracker"
    assert seed_surfaces(home, 101, count=2) == [1, 2]
    return home


def test_a_large_surface_is_drawn_in_3d_on_a_thinned_grid_in_one_scene(
    large: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import h5py

    from dashboard.interactive import MAX_3D_SIDE, thinned

    for name in ("TRACKER_DB_URL", "TRACKER_STORE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRACKER_HOME", str(large))
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("views/surfaces.py")
    at.query_params["view"] = "3D"
    at.query_params["rotate"] = "1"  # the interactive scene (the default 3D view is an image)
    at.query_params["ids"] = "1,2"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (fig,) = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    assert [t["type"] for t in fig["data"]] == ["surface", "surface"]
    assert {t.get("scene", "scene") for t in fig["data"]} == {"scene"}  # one WebGL scene
    idx = thinned(101)
    assert len(idx) <= MAX_3D_SIDE and idx[0] == 0 and idx[-1] == 100
    full = []
    for i, trace in enumerate(fig["data"]):
        with h5py.File(large / f"surface{i}.h5", "r") as f:
            grid = np.asarray(f["train_loss"])
            xs = np.asarray(f["xcoordinates"])
        full.append(grid)
        np.testing.assert_allclose(values(trace["z"]), grid[np.ix_(idx, idx)])
        # Hovering shows the point's own coordinates, not its place in the shared scene.
        custom = values(trace["customdata"]).reshape(len(idx), len(idx), 2)
        np.testing.assert_allclose(custom[0, :, 0], xs[idx])
        assert "%{customdata[0]" in trace["hovertemplate"] and "%{z" in trace["hovertemplate"]
    # The colour scale is the full grids' range, whatever points were dropped.
    assert fig["layout"]["coloraxis"]["cmin"] == pytest.approx(min(g.min() for g in full))
    assert fig["layout"]["coloraxis"]["cmax"] == pytest.approx(max(g.max() for g in full))
    captions = [c.value for c in at.caption]
    assert any("#1 (101x101)" in c and "every point" in c for c in captions), captions
