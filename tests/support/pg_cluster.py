"""A private PostgreSQL server for tests that stop and restart it (the shared server at
127.0.0.1:5432 serves the other tests running beside them and must stay up)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_BIN = Path(os.environ.get("TRACKER_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


@dataclass
class PrivateCluster:
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args]),
            check=True, capture_output=True, timeout=90,
        )  # fmt: skip

    def restart(self) -> None:
        """Stop (fast: every connection is cut) and start again."""
        self._ctl("restart", "-m", "fast", "-l", str(self.data / "server.log"))


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    """initdb + start on a free port; skipped (failed under CI) without the server binaries."""
    if not (PG_BIN / "initdb").exists():
        message = f"PostgreSQL server binaries not found in {PG_BIN} (Debian package postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="tracker-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data = root / "data"
    subprocess.run(
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                      "--no-sync"]),
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    port = _free_port()
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(
            f"\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\n"
            "fsync = off\nmax_connections = 100\n"
        )
    cluster = PrivateCluster(data, port)
    cluster._ctl("start", "-l", str(data / "server.log"))
    try:
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster._ctl("stop", "-m", "immediate")
        shutil.rmtree(root, ignore_errors=True)
