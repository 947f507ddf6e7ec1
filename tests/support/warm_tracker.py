"""Warm `tracker` processes for the tests: a fork server with the heavy libraries imported.

A cold `python -m tracker.cli` spends seconds importing torch, MLflow, SQLAlchemy and Zarr
before it reads its arguments; the suite starts a few hundred of them. This server imports
those libraries once and forks one child per command. The child is still a separate process
with the caller's own stdin, stdout and stderr (passed over a Unix socket), environment,
working directory, ``sys.path`` (the directory and PYTHONPATH as ``-m`` sets them) and argv,
and it runs ``tracker.cli`` as ``__main__`` the way ``python -m`` does (``runpy``), so exit
codes, tracebacks, atexit handlers and one-line errors are the ones a user gets.

What a fork cannot give: a start without those imports. Tests about imports and start-up (the
``--help`` and empty-queue import checks, PYTHONPROFILEIMPORTTIME) run their own interpreter,
and `run_tracker` goes cold by itself for an environment that changes more than the tracker's
own variables (TRACKER_*, MLFLOW_*, PYTHONPATH), since the preloaded libraries read theirs on
import. TRACKER_TEST_COLD=1 makes every command cold.

Two modes: ``python warm_tracker.py serve SOCKET`` (started by cli_support) and
``python -I -S warm_tracker.py run SOCKET ARGS...`` (a stdlib-only client standing in for
the command: it hands over its descriptors, waits, and exits as the child did).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys

# The libraries a command may import, in the order a command imports them. Importing them
# must start no thread (a fork copies only the forking thread): `serve` checks.
PRELOAD = (
    "numpy", "sqlalchemy", "sqlalchemy.dialects.sqlite", "sqlalchemy.dialects.postgresql",
    "psycopg", "alembic.command", "zarr", "torch", "torch.nn.functional", "matplotlib",
    "matplotlib.pyplot", "mlflow", "mlflow.tracking", "distributed", "h5py",
    # What tasks import on first use: an optimizer's first step (torch._dynamo, ~1.1 s),
    # the digits/iris loaders (sklearn.datasets, ~0.5 s), the torchvision models (~1.2 s).
    "torch._dynamo", "sklearn.datasets", "torchvision",
    "tracker._schema", "tracker._db", "tracker._migrate", "tracker._store",
    "tracker._arrays", "tracker._queue", "tracker._work", "tracker._worker", "tracker._status",
)  # fmt: skip
# What the child's environment may change without a cold start (read when used, not on import).
# glibc reads MALLOC_* at a process's start: a forked child keeps the server's allocator
# settings, but the Dask workers it spawns read the child's environment as a cold start would
# (`tracker work` sets them for those workers, in os.environ, when it runs in a test's process).
# torch._dynamo's import (an optimizer's first step) sets TORCHINDUCTOR_CACHE_DIR to the default
# it reads on each use; a test that trained in-process had it, the server's copy did not.
WARM_SAFE_PREFIXES = ("TRACKER_", "MLFLOW_", "PYTEST_", "PYTHONPATH", "MALLOC_",
                      "TORCHINDUCTOR_CACHE_DIR")  # fmt: skip
HEADER = struct.Struct("!I")
STATUS = struct.Struct("!i")


# ---- the client (standard library only; runs under -I -S) ----


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the warm tracker server closed the connection")
        data += chunk
    return data


def client(path: str, args: list[str]) -> None:
    request = json.dumps({"args": args, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    socket.send_fds(sock, [HEADER.pack(len(request)) + request], [0, 1, 2])
    (code,) = STATUS.unpack(_recv_exact(sock, STATUS.size))
    if code < 0:  # killed by a signal: die of the same one
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


# ---- the server ----


def _preload() -> list[str]:
    """Import PRELOAD; return the base sys.path (without the script's folder and PYTHONPATH)."""
    import importlib
    import threading

    script_dir = sys.path[0]
    for name in PRELOAD:
        importlib.import_module(name)
    if threading.active_count() != 1:
        raise RuntimeError(f"preloading started threads: {threading.enumerate()}")
    own = {script_dir, *os.environ.get("PYTHONPATH", "").split(os.pathsep)}
    return [p for p in sys.path if p not in own]


def _child(request: dict, fds: list[int], base_path: list[str], drop: list) -> None:
    """In the forked child: become `python -m tracker.cli ARGS` in the caller's place, then exit
    as the interpreter does (threads joined, atexit handlers run, output flushed) without
    tearing the inherited heap down object by object (seconds of copy-on-write faults)."""
    import runpy
    import types

    for thing in drop:  # the server's sockets and selector, without touching reused numbers
        if isinstance(thing, socket.socket):
            os.close(thing.detach())
        elif isinstance(thing, int):
            os.close(thing)
        else:
            thing.close()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    cwd = os.getcwd()
    extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [cwd, *extra, *base_path]
    sys.argv = ["-m", *request["args"]]
    if "multiprocessing.process" in sys.modules:  # spawned children resolve paths from it
        sys.modules["multiprocessing.process"].ORIGINAL_DIR = cwd  # type: ignore[attr-defined]
    if "numpy" in sys.modules:  # a cold process draws its global seed from the OS
        sys.modules["numpy"].random.seed()
    sys.modules["__main__"] = types.ModuleType("__main__")
    code = 0
    try:
        runpy._run_module_as_main("tracker.cli")  # type: ignore[attr-defined]  # what -m calls
    except SystemExit as stop:  # as the interpreter reads it
        if stop.code is None:
            code = 0
        elif isinstance(stop.code, int):
            code = stop.code
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    # A command that ends normally leaves through tracker.cli's own exit_now; this is the
    # same exit for the others (SystemExit from argparse, an uncaught error).
    from tracker._cliutil import exit_now

    exit_now(code)


def serve(path: str) -> None:
    """Accept requests on ``path`` until stdin (a pipe from the test process) closes.

    The heavy libraries are imported first and frozen out of the garbage collector, so that
    the children share their pages instead of copying them."""
    import gc
    import selectors

    base_path = _preload()
    gc.collect()
    gc.freeze()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, ("accept",))
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, ("parent",))
    running: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, connection)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            what = key.data[0]
            if what == "parent":
                for pid, _ in running.values():
                    os.kill(pid, signal.SIGKILL)
                os._exit(0)
            if what == "accept":
                conn, _ = listener.accept()
                msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                (size,) = HEADER.unpack(msg[: HEADER.size])
                body = msg[HEADER.size :]
                if len(body) < size:
                    body += _recv_exact(conn, size - len(body))
                request = json.loads(body)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    drop = [sel, listener, conn, *(c for _, c in running.values()), *running]
                    _child(request, fds, base_path, drop)
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                running[pidfd] = (pid, conn)
                sel.register(pidfd, selectors.EVENT_READ, ("exited", pidfd))
                sel.register(conn, selectors.EVENT_READ, ("client", pidfd))
            elif what == "exited":
                pidfd = key.data[1]
                pid, conn = running.pop(pidfd)
                _, status = os.waitpid(pid, 0)
                sel.unregister(pidfd)
                os.close(pidfd)
                if conn.fileno() in sel.get_map():
                    sel.unregister(conn)
                with contextlib.suppress(OSError):  # a killed client (a timeout) is not waiting
                    conn.sendall(STATUS.pack(os.waitstatus_to_exitcode(status)))
                conn.close()
            elif what == "client":  # the client went away before the child ended: a timeout
                pidfd = key.data[1]
                if pidfd in running:
                    os.kill(running[pidfd][0], signal.SIGKILL)
                    sel.unregister(running[pidfd][1])


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        client(sys.argv[2], sys.argv[3:])
