"""`tracker dashboard` starts Streamlit through dashboard.serve, the pages' imports done first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_serve_warms_the_page_imports_then_runs_streamlits_own_command_line():
    code = (
        "import sys, dashboard.serve as s\n"
        "s.warm_imports()\n"
        "print(' '.join(m for m in ('plotly.graph_objects', 'matplotlib.figure', 'pandas', "
        "'sqlalchemy', 'zarr', 'tracker.morse.plots') if m in sys.modules))\n"
        "print('dashboard.common' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout.split("\n")  # fmt: skip
    assert out[0].split() == ["plotly.graph_objects", "matplotlib.figure", "pandas",
                              "sqlalchemy", "zarr", "tracker.morse.plots"]  # fmt: skip
    assert out[1] == "False"  # its st.cache_data functions are made inside the runtime
    version = subprocess.run([sys.executable, "-m", "dashboard.serve", "version"],
                             capture_output=True, text=True, cwd=REPO, timeout=300)  # fmt: skip
    assert version.returncode == 0 and "Streamlit, version" in version.stdout


def test_tracker_dashboard_runs_the_warmed_server():
    import argparse

    from tracker._cmd_dashboard import streamlit_argv

    argv = streamlit_argv(argparse.Namespace(address="127.0.0.1", port=8501))
    assert argv[1:4] == ["-m", "dashboard.serve", "run"] and argv[4].endswith("app.py")
