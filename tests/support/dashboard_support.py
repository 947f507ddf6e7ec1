"""Helpers shared by the dashboard tests (the fixtures live in tests/dashboard/conftest.py)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

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
