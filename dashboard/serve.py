"""`tracker dashboard`'s server: Streamlit, with the pages' heavy imports warmed meanwhile.

`python -m streamlit run app.py` imports nothing of the pages until the first visitor's session
runs them, so that visitor waits for matplotlib, Plotly, pandas, SQLAlchemy and Zarr (seconds
on 2 cores). Here a background thread imports them while Streamlit starts and waits for the
browser: they are in ``sys.modules`` by the time a session runs the pages (a session that
comes earlier waits on Python's import lock for the module the thread is importing, never
imports it twice). Done before Streamlit listened instead, the imports delayed the server and
the first page came later, not sooner. Run as ``python -m dashboard.serve run APP [flags]``.
"""

from __future__ import annotations

import sys


def warm_imports() -> None:
    """Import what the pages import (each page's script still imports them: now a lookup).

    The dashboard's own modules are left to the first session: their ``st.cache_data``
    functions must be made inside Streamlit's runtime, which binds their cache storage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.figure
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import plotly.graph_objects
    import plotly.subplots  # noqa: F401
    import sqlalchemy  # noqa: F401
    import zarr  # noqa: F401

    import tracker._status
    import tracker.morse.plots  # noqa: F401


def main() -> None:
    import threading

    from streamlit.web import cli

    threading.Thread(target=warm_imports, name="warm-imports", daemon=True).start()
    sys.argv = ["streamlit", *sys.argv[1:]]
    sys.exit(cli.main())


if __name__ == "__main__":
    main()
