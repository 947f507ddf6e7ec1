"""A training run's MLflow logging in a process of its own, beside the training.

``tracker train`` is one short foreground command; in it MLflow cost ~2-3 s of a 9 s run of a
tiny model on 2 cores (importing MLflow, opening or setting up its SQLite store, drawing and
uploading the curve files), all of it in series with torch's import and the training. Started
before torch is imported (``tracker._mlflow.prestart``), this process does that work on the
other core: it imports MLflow and opens the store while the command imports torch, then logs
what the training sends it. A worker that trains many models keeps logging in-process, where
the import is paid once.

The protocol is JSON lines: one request per line on stdin; a reply line on stdout for every
request but ``metrics``. A reply is ``{"ok": ...}`` or ``{"error": "one line"}``. Requests:

  start     {study, name, params, tags, parent_run_id, previous_run_id, interrupted,
             flush_seconds} -> the new run's id (a run an earlier attempt left RUNNING is
             closed first, as ``tracked_run`` does)
  metrics   {values, step, time_ms}: buffered, sent in batches (no reply)
  training_files {history, params, tags, name}: curves, config and ids as artifacts
  end       {status, failure}: flush, tag the failure if any, terminate the run; then exit

End of input (the parent died) ends the process; the run it left RUNNING is closed FAILED by
the next attempt (``previous_run_id``).
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Any


def _reply(out: IO[str], **message: Any) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def _warm_figures() -> None:
    """Draw a throwaway curve figure to PNG and PDF while the parent trains: the first draw
    loads matplotlib, its fonts and both backends (~0.8 s on 2 cores), which the real curves
    would otherwise wait for at the end of the run."""
    import tempfile
    from pathlib import Path

    from tracker.training.plots import plot_training_curves

    try:
        with tempfile.TemporaryDirectory() as tmp:
            plot_training_curves([(0, {"train_loss": 1.0, "train_acc": 0.5})], Path(tmp) / "w")
    except Exception:  # only a warm-up (its reply is sent): the real draw reports any error
        pass


def serve(uri: str, inp: IO[str], out: IO[str]) -> int:
    from tracker import _mlflow as m

    client = m.client_for(uri)  # MLflow's import and store: the point of starting early
    run_id: str | None = None
    logger: m.RunLogger | None = None
    for line in inp:
        request = json.loads(line)
        op = request.pop("op")
        try:
            if op == "metrics":
                if logger is not None:
                    logger.metrics(request["values"], step=int(request["step"]),
                                   time_ms=request.get("time_ms"))  # fmt: skip
                continue
            if op == "start":
                m.mark_failed_if_running(client, request.get("previous_run_id"),
                                         request.get("interrupted", ""))  # fmt: skip
                run_id = m.start_run(client, request["study"], request["name"],
                                     request["params"], request["tags"],
                                     parent_run_id=request.get("parent_run_id"))  # fmt: skip
                logger = m.RunLogger(client, run_id, float(request.get("flush_seconds", 5.0)))
                _reply(out, ok=run_id)
                _warm_figures()
            elif op == "training_files":
                from tracker.training.plots import log_training_files

                assert run_id is not None, "training_files before start"
                if logger is not None:
                    logger.flush()
                log_training_files(client, run_id, [(int(e), v) for e, v in request["history"]],
                                   request["params"], request["tags"], request["name"])  # fmt: skip
                _reply(out, ok=True)
            elif op == "end":
                assert run_id is not None, "end before start"
                if logger is not None:
                    logger.flush()
                if request.get("failure"):
                    m.tag(client, run_id, {"tracker.failure": str(request["failure"])[:5000]})
                m.finish(client, run_id, str(request.get("status", "FINISHED")))
                _reply(out, ok=True)
                return 0
            else:
                _reply(out, error=f"unknown request {op!r}")
        except Exception as err:  # the parent raises it; this process goes on serving
            text = " ".join(f"{type(err).__name__}: {err}".split())
            _reply(out, error=text[:2000])
    return 0


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m tracker._mlflow_side TRACKING_URI", file=sys.stderr)
        return 2
    # Replies get the real stdout to themselves: anything a library prints goes to stderr.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return serve(sys.argv[1], sys.stdin, replies)


if __name__ == "__main__":
    from tracker._cliutil import exit_now

    # The parent waits for this process to end; with MLflow, SQLAlchemy and matplotlib loaded
    # the interpreter's module teardown alone would add ~1 s to `tracker train`.
    exit_now(main())
