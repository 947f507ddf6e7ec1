"""`tracker dashboard --json`: one JSON document with the address, printed when it starts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

from cli_support import tracker_env
from dashboard_support import free_port


def test_json_gives_the_address_at_start_and_the_server_answers_there(tmp_path, db, db_url):
    env = tracker_env(tmp_path, db_url, str(tmp_path / "store.zarr"))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker.cli", "dashboard", "--json", "--headless",
         "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        document = json.loads(first)
        assert document == {"url": f"http://127.0.0.1:{port}", "address": "127.0.0.1",
                            "port": port}  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{document['url']}/_stcore/health", timeout=5) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the dashboard did not answer in 60 s"
                time.sleep(0.2)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert out.strip() == "", out  # nothing after the one document
