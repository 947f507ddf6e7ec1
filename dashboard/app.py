"""The tracker dashboard: `tracker dashboard` runs this with `streamlit run`.

Pages are plain scripts under views/; each reads the database, store and MLflow locations
that `tracker dashboard` put in the environment (see dashboard/data.py) and writes nothing.
Not pages/: Streamlit treats a pages/ folder beside the entry script as its older multipage
app and, for a URL such as /models, runs that script alone, without this navigation.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).resolve().parent / "views"

st.set_page_config(page_title="tracker", layout="wide")

navigation = st.navigation(
    {
        "Runs": [
            # The default page lives at "/" (Streamlit ignores its url_path).
            st.Page(PAGES / "overview.py", title="Overview", default=True),
            st.Page(PAGES / "models.py", title="Models", url_path="models"),
            st.Page(PAGES / "surfaces.py", title="Surfaces", url_path="surfaces"),
        ],
        "Analyses": [
            st.Page(PAGES / "topology.py", title="Topology", url_path="topology"),
            st.Page(PAGES / "levelsets.py", title="Level sets", url_path="levelsets"),
            st.Page(PAGES / "morse.py", title="Morse graphs", url_path="morse"),
            st.Page(PAGES / "curvature.py", title="Curvature", url_path="curvature"),
            st.Page(PAGES / "meta.py", title="Meta-analysis", url_path="meta"),
        ],
    }
)
navigation.run()
