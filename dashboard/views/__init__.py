"""The dashboard's pages: scripts that app.py lists in st.navigation (a package so that a
non-editable install ships them)."""
