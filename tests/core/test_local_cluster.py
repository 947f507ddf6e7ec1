"""The local Dask cluster `tracker work --workers N` starts."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
import warnings

import pytest

from tracker._work import _close_quietly, _start_local_cluster


def test_a_cluster_without_dashboard_leaves_port_8787_alone():
    """Its scheduler's HTTP server takes a free port, so a second cluster on the machine (or
    anything else on 8787) gives no 'port in use' warning, and no dashboard is served."""
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        held.bind(("127.0.0.1", 8787))
        held.listen(1)
    except OSError:
        pass  # something else holds 8787 already: the same situation
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cluster = _start_local_cluster(0, cuda=False, resources={}, dashboard=False)
        try:
            port = cluster.scheduler.http_server.port
            assert port != 8787
            base = f"http://127.0.0.1:{port}"
            with urllib.request.urlopen(f"{base}/health", timeout=10) as answer:
                assert answer.status == 200
            with pytest.raises(urllib.error.HTTPError) as missing:
                urllib.request.urlopen(f"{base}/status", timeout=10)
            assert missing.value.code == 404  # no dashboard pages
        finally:
            _close_quietly(cluster)
    finally:
        held.close()
