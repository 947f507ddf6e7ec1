"""`tracker work`'s worker plugin (log routing) when a worker dies during its broadcast: the
chaos test once saw a worker killed while the local cluster started fail the whole run with a
traceback ("Stream is closed" from ConnectionPool.register_worker_plugin)."""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

from distributed.comm.core import CommClosedError

from tracker._logplugin import LogToFile
from tracker._logs import THIRD_PARTY, route_to_file
from tracker._work import PLUGIN_TRIES, register_plugin


class _Client:
    """A client whose first ``failures`` broadcasts lose a worker, as distributed reports it."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls, self.plugins = failures, 0, []

    def register_plugin(self, plugin: object) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise CommClosedError("in <TCP (closed) ConnectionPool.register_worker_plugin "
                                  "local=tcp://127.0.0.1:1 remote=tcp://127.0.0.1:2>: Stream is closed")  # fmt: skip
        self.plugins.append(plugin)


def test_a_lost_worker_during_the_broadcast_is_asked_again(tmp_path: Path) -> None:
    plugin = LogToFile(tmp_path / "work.log")
    client, out = _Client(failures=1), io.StringIO()
    assert register_plugin(client, plugin, out, pause=0) is True
    assert client.calls == 2 and client.plugins == [plugin] and out.getvalue() == ""


def test_broadcasts_that_keep_failing_leave_one_line_and_the_run_goes_on(tmp_path: Path) -> None:
    client, out = _Client(failures=99), io.StringIO()
    assert register_plugin(client, LogToFile(tmp_path / "work.log"), out, pause=0) is False
    assert client.calls == PLUGIN_TRIES
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "plugin 'tracker-log-to-file'" in lines[0]
    assert "CommClosedError" in lines[0] and "continuing without it" in lines[0]


def test_routing_twice_to_one_file_adds_one_handler(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "work.log"
    saved = {name: (list(lg.handlers), lg.level, lg.propagate)
             for name in THIRD_PARTY for lg in [logging.getLogger(name)]}  # fmt: skip
    showwarning = warnings.showwarning
    try:
        route_to_file(path)
        route_to_file(path)  # the plugin's setup again, after a re-registration
        for name, (before, _, _) in saved.items():
            added = [h for h in logging.getLogger(name).handlers if h not in before]
            assert len(added) == 1 and added[0].baseFilename == str(path.absolute()), name
    finally:
        for name, (before, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            for h in logger.handlers:
                if h not in before:
                    h.close()
            logger.handlers[:] = before
            logger.level, logger.propagate = level, propagate
        warnings.showwarning = showwarning
