"""Helpers shared by the dashboard tests (the fixtures live in tests/dashboard/conftest.py)."""

from __future__ import annotations

import base64
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa


@dataclass(frozen=True)
class Seeded:
    """A study drained into a temporary tracker home."""

    root: Path
    env: dict[str, str]
    db_url: str
    store_url: str
    mlflow_uri: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def count(db_url: str, table: str) -> int:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() or 0)
    finally:
        engine.dispose()


def values(encoded: Any) -> np.ndarray:
    """A plotly array: a list, or the typed-array form {dtype, bdata, shape}."""
    if isinstance(encoded, dict) and "bdata" in encoded:
        arr = np.frombuffer(base64.b64decode(encoded["bdata"]), dtype=encoded["dtype"])
        shape = encoded.get("shape")
        if isinstance(shape, str):
            shape = [int(n) for n in shape.split(",")]
        return arr.reshape(shape) if shape else arr
    return np.asarray(encoded, dtype=float)


@contextlib.contextmanager
def reader_role(db: Any) -> Iterator[str]:
    """A read-only role made by `tracker db create-reader`'s function on the PostgreSQL
    database ``db`` (named after it: roles are server-wide), dropped afterwards; yields its URL."""
    from tracker._readonly import create_reader

    role = f"r_{db.engine.url.database}"[:63]
    create_reader(db.engine, role, None)
    url = db.engine.url.set(username=role, password=None).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with db.engine.begin() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE "{role}"')
