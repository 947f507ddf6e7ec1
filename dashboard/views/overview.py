"""Overview: studies, work per kind and status, live queue progress, recent failures.

Its tables are short summaries (a row per study, per study and kind, the last 20 failures),
drawn as static tables: the interactive data grid (st.dataframe) loads and draws its own
bundle in every new tab, ~0.3 s of a page that should show within 1 s.
"""

from __future__ import annotations

import streamlit as st

from dashboard import common
from tracker._status import error_summary

STATUSES = ["waiting", "pending", "running", "done", "failed"]

STUDIES = """
SELECT s.id, s.name, s.description, s.created_at,
       (SELECT count(*) FROM models m WHERE m.study_id = s.id) AS models,
       (SELECT count(*) FROM surfaces f WHERE f.study_id = s.id) AS surfaces,
       (SELECT count(*) FROM tasks t WHERE t.study_id = s.id) AS tasks,
       (SELECT count(*) FROM tasks t WHERE t.study_id = s.id AND t.status = 'done') AS done
FROM studies s ORDER BY s.id
"""
COUNTS = """
SELECT st.name AS study, t.kind, t.status, count(*) AS n
FROM tasks t JOIN studies st ON st.id = t.study_id
GROUP BY st.name, t.kind, t.status
"""
FAILURES = """
SELECT t.id AS task, st.name AS study, t.kind, t.status, t.attempts, t.max_attempts,
       t.finished_at, t.error
FROM tasks t JOIN studies st ON st.id = t.study_id
WHERE t.error IS NOT NULL AND t.status IN ('failed', 'pending')
ORDER BY coalesce(t.finished_at, t.started_at) DESC, t.id DESC
LIMIT 20
"""

src = common.sources()
st.title("Overview")
live = st.toggle("Live: refresh every 5 s", value=False, help="re-read the queue while it drains")


@st.fragment(run_every=5 if live else None)
def queue() -> None:
    studies = common.query(src.db_url, STUDIES)
    counts = common.query(src.db_url, COUNTS)
    total, done = int(counts["n"].sum()) if len(counts) else 0, 0
    if len(counts):
        done = int(counts.loc[counts["status"] == "done", "n"].sum())
    failed = int(counts.loc[counts["status"] == "failed", "n"].sum()) if len(counts) else 0

    cols = st.columns(4)
    cols[0].metric("Studies", len(studies))
    cols[1].metric("Tasks", total)
    cols[2].metric("Done", done)
    cols[3].metric("Failed", failed)
    if total:
        st.progress(done / total, text=f"queue: {done} of {total} tasks done")

    st.subheader("Studies")
    if studies.empty:
        st.info("No studies yet: `tracker enqueue examples/demo.toml` adds one, then "
                "`tracker work` computes it (or `tracker demo` does both).")
    else:
        st.table(studies, hide_index=True)

    st.subheader("Work per kind and status")
    if counts.empty:
        st.info("No tasks yet: `tracker enqueue examples/demo.toml` adds some.")
    else:
        pivot = (
            counts.pivot_table(
                index=["study", "kind"], columns="status", values="n", aggfunc="sum", fill_value=0
            )
            .reindex(columns=STATUSES, fill_value=0)
            .reset_index()
        )
        st.table(pivot, hide_index=True)

    st.subheader("Recent failures")
    failures = common.query(src.db_url, FAILURES)
    if failures.empty:
        st.success("No failed tasks.")
        return
    failures.insert(3, "message", failures["error"].map(error_summary))
    st.table(failures.drop(columns=["error"]), hide_index=True)
    for row in failures.itertuples():
        retry = " (will retry)" if row.status == "pending" else ""
        with st.expander(f"task {row.task} [{row.study}/{row.kind}]{retry}"):
            st.code(row.error or "", language=None)


queue()
