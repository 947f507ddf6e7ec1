"""What every page shares: one engine and store per process, cached queries, empty states.

Queries are cached for ``TTL`` seconds, so a page re-run (every widget change) does not hit
the database again, while a queue that is being drained still shows its progress.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
import streamlit as st
from sqlalchemy.orm import Session

from dashboard import data
from tracker._exceptions import TrackerError

if TYPE_CHECKING:
    from tracker._store import ArrayStore

TTL = 10  # seconds a query result is reused
ARRAY_TTL = 300  # stored arrays of finished work do not change


@st.cache_resource(show_spinner=False)
def engine(db_url: str) -> sa.Engine:
    """The process's one read-only engine for ``db_url``."""
    return data.readonly_engine(db_url)


@st.cache_resource(show_spinner=False)
def store(store_url: str) -> ArrayStore:
    return data.readonly_store(store_url)


@st.cache_data(ttl=TTL, show_spinner=False)
def _schema_problem(db_url: str) -> str | None:
    return data.schema_problem(engine(db_url))


@st.cache_data(ttl=60, show_spinner=False)
def sql_box_problem(db_url: str) -> str | None:
    """Why the connected role may not run the SQL box (checked once a minute), or None."""
    return data.sql_box_problem(engine(db_url))


def sources() -> data.Sources:
    """The configured locations; stops the page with a clear message if the database is unusable."""
    src = data.sources()
    try:
        problem = _schema_problem(src.db_url)
    except Exception as err:  # a malformed URL, a missing driver
        problem = str(err).splitlines()[0]
    if problem:
        st.error(f"Cannot show {data.redact(src.db_url)}: {problem}")
        st.stop()
    return src


def numeric(df: pd.DataFrame) -> pd.DataFrame:
    """SQLite returns NaN stored by the tracker as the text 'NaN': make such columns floats."""
    special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
    for col in df.columns:
        if df[col].dtype != object:
            continue
        values = df[col].dropna()
        texts = [v for v in values if isinstance(v, str)]
        if texts and all(isinstance(v, (int, float)) or v in special for v in values):
            df[col] = pd.to_numeric(df[col].replace(special), errors="coerce")
    return df


@st.cache_data(ttl=TTL, show_spinner=False)
def query(db_url: str, sql: str, params: tuple[tuple[str, Any], ...] = ()) -> pd.DataFrame:
    """A trusted query's rows (cached for TTL seconds)."""
    return numeric(data.frame(engine(db_url), sql, **dict(params)))


def static_table(df: pd.DataFrame, digits: int = 4) -> None:
    """``df`` as a plain HTML table in the page's markdown (escaped; floats to ``digits``
    significant digits, missing values blank).

    Not st.table or st.dataframe: both send the frame as Arrow, and the browser loads and runs
    Streamlit's Arrow and number-formatting bundles (~1 MB of scripts) in every new tab that
    shows one; measured on the Meta-analysis page, a new tab was ~0.1 s of CPU and 0.1-0.3 s
    faster without them. For short summaries (a row per measure and target, a query's columns).
    """
    html = df.to_html(index=False, escape=True, na_rep="", border=0,
                      float_format=lambda v: f"{v:.{digits}g}")  # fmt: skip
    st.markdown(html, unsafe_allow_html=True)


def provenance_text(value: Any) -> str:
    """A provenance cell (JSON text on SQLite, a dict on PostgreSQL) as one line."""
    import json

    from tracker._provenance import describe

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "not recorded"
    return describe(json.loads(value) if isinstance(value, str) else value)


def table(db_url: str, name: str, order: str = "id") -> pd.DataFrame:
    """Every row of one result table, whatever columns it has today."""
    return query(db_url, f"SELECT * FROM {name} ORDER BY {order}")


@st.cache_data(ttl=ARRAY_TTL, show_spinner=False)
def array(db_url: str, store_url: str, array_id: int) -> np.ndarray:
    """A stored array by its ``arrays`` row id (through tracker._arrays.read_array)."""
    from tracker._arrays import read_array

    with Session(engine(db_url)) as session:
        return read_array(session, store(store_url), int(array_id), verify=False)


@st.cache_data(ttl=ARRAY_TTL, show_spinner=False)
def surface(db_url: str, store_url: str, surface_id: int) -> dict[str, Any]:
    """A finished surface's grid and arrays (through tracker.surfaces.results.load_surface)."""
    from tracker.surfaces.results import load_surface

    with Session(engine(db_url)) as session:
        s = load_surface(session, store(store_url), surface_id)
        return {
            "id": surface_id,
            "label": s.label,
            "xs": s.xs,
            "ys": s.ys,
            "loss": np.asarray(s.loss, dtype=float),
            "acc": np.asarray(s.acc, dtype=float),
            "epoch": s.epoch,
            "model_id": s.model.id if s.model is not None else None,
        }


def safe_surface(src: data.Sources, surface_id: int) -> dict[str, Any] | None:
    """A surface, or None with a warning on the page if its arrays cannot be read."""
    try:
        return surface(src.db_url, src.store_url, surface_id)
    except TrackerError as err:
        st.warning(str(err))
        return None


def nothing_yet(table_name: str, what: list[str], how: str) -> None:
    """The labelled empty state of a page whose results have not landed yet."""
    lines = "\n".join(f"- {item}" for item in what)
    st.info(
        f"**No results yet:** the `{table_name}` table has no rows. {how}\n\n"
        f"When they land, this page shows:\n{lines}"
    )
