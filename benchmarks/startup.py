"""Start-up costs of the `tracker` commands a new user meets, against their floors.

Every figure is a cold command line in a new process (a new home in a temporary directory,
the embedded defaults: SQLite, Zarr, MLflow's SQLite file), repeated ``--repeat`` times,
printed as the median with the spread (min-max) of the runs:

- floors: ``import torch``, ``import mlflow`` and a 2-process Dask LocalCluster's start;
- ``tracker work`` on an empty queue ("nothing to do"), and ``tracker status``;
- launch to first claim of ``tracker work`` with one no-op task queued (the task's
  ``started_at`` minus the launch), and the whole drain of that one task;
- worker start: the CPU seconds of ``run_worker`` claiming and running one no-op (what each
  loop costs), and apart the import of the worker module (once per process, in a process that
  has imported Dask already, as a Dask worker has), with the heavy modules they imported;
- ``tracker train`` of a tiny iris MLP in a new home, with the INFO lines it printed (the
  first run makes MLflow's template database, the later ones copy it: see the spread);
- the user path: ``tracker enqueue surface`` + ``tracker work`` of a 51x51 surface of a digits
  MLP (64,64) against ``benchmarks/plain_surface.py`` doing the same grid with plain torch
  (its import included), run as pairs; the ratio is tracker / plain per pair; the enqueue
  alone is printed too (it sizes tiles from the stored layout and imports no torch);
- the user path, warm worker: in the same home ``tracker work --forever`` is started in the
  background and made to drain one no-op (``enqueue noop --wait``: it is then up and idle;
  "launch to idle" is that start), then ``tracker enqueue surface ... --wait`` of a new 51x51
  surface is timed from launch to exit, twice, against the same repeat's plain script: the
  worker's first surface (its torch and engine imports happen then: a worker claims before
  heavy imports) and the next one (the steady state of a worker kept up: the figure with the
  target); the worker is stopped (SIGTERM) once its follow-ups are drained. It leaves out the worker's start, so the
  cold user path is printed beside it (a user who keeps a worker up pays that start once);
- ``--demo``: ``tracker demo`` in a new home (long: off by default).

``--base DIR`` runs every figure also on the tracker in DIR (e.g. a worktree of main), each
repeat alternating the two, so before and after share the same machine load; the last column
is then this tree / base. The load average is printed beside the table: on a shared machine
the figures are only comparable within one run.

    python benchmarks/startup.py [--repeat 3] [--base DIR] [--demo] [--only NAME,...]

Targets: first claim <= 3 s, empty queue <= 1 s, worker start <= 0.3 s CPU, user path
(cold and warm worker) <= 0.67 of the plain script, demo <= 60 s. A base tree without
``--wait`` gets no warm figure. The exit status is 0 whatever the result.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

REPO = Path(__file__).resolve().parents[1]
PLAIN = REPO / "benchmarks" / "plain_surface.py"

TARGETS = {  # figure -> the most it may be (seconds, or a ratio)
    "work, first claim": 3.0,
    "work, empty queue": 1.0,
    "worker start (CPU)": 0.3,
    "user path / plain": 0.67,
    "user path, warm worker / plain": 0.67,
    "demo": 60.0,
}

# A Dask LocalCluster of 2 processes, started and closed: its start is what is printed.
CLUSTER_SCRIPT = """
import time, logging
from distributed import LocalCluster
t = time.perf_counter()
c = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                 silence_logs=logging.ERROR)
print(f"SECONDS {time.perf_counter() - t:.3f}")
c.close()
"""

# A worker in a process that has imported Dask (as a Dask worker has): CPU seconds of importing
# the worker module (once per process), then of run_worker claiming and running one no-op
# (once per loop: what each further in-process loop costs), and the heavy modules imported.
WORKER_SCRIPT = """
import sys, time
import distributed  # noqa: F401  (a Dask worker process has it already)
before = set(sys.modules)
t = time.process_time()
from tracker._worker import WorkerConfig, run_worker
print(f"IMPORT {time.process_time() - t:.3f}")
t = time.process_time()
stats = run_worker(WorkerConfig(db_url=sys.argv[1], store_url=sys.argv[2], max_tasks=1))
print(f"SECONDS {time.process_time() - t:.3f}")
new = set(sys.modules) - before
heavy = sorted(m for m in ("torch", "mlflow", "numpy", "zarr", "sklearn") if m in new)
print(f"DONE {stats['done']} MODULES {len(new)} HEAVY {','.join(heavy) or '-'}")
"""


@dataclass
class Run:
    wall: float
    cpu: float
    out: str


@dataclass
class Figure:
    name: str
    values: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, tree: str, value: float) -> None:
        self.values.setdefault(tree, []).append(value)


def run(cmd: Sequence[str], env: dict[str, str], cwd: Path, check: bool = True) -> Run:
    """Run ``cmd``; its wall time and the CPU time of it and every process it waited for."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    # communicate() reaped it; the children's rusage grew by its (and its waited children's).
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-3000:]}")
    return Run(wall=wall, cpu=0.0, out=out)


def timed(cmd: Sequence[str], env: dict[str, str], cwd: Path, check: bool = True) -> Run:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = run(cmd, env, cwd, check)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    r.cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return r


class Tree:
    """One checkout of the tracker: commands run with it first on PYTHONPATH."""

    def __init__(self, label: str, root: Path, scratch: Path) -> None:
        self.label, self.root, self.scratch = label, root, scratch
        self.count = 0

    def home(self) -> Path:
        self.count += 1
        path = self.scratch / f"{self.label}-{self.count}"
        path.mkdir(parents=True)
        return path

    def env(self, home: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("TRACKER_DB_URL", "TRACKER_STORE", "MLFLOW_TRACKING_URI")}  # fmt: skip
        # A user's Python caches bytecode; without it every run compiles the tracker again.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPATH"] = str(self.root)
        # MLflow's prepared tables (tracker/_mlflow.py): made by the first run that needs them,
        # copied by the later ones, as on a machine where tracker has run once.
        env["TRACKER_MLFLOW_TEMPLATE_DIR"] = str(self.scratch / "mlflow-template")
        env["TRACKER_HOME"] = str(home / ".tracker")
        return env

    def tracker(self, home: Path, *args: str, check: bool = True) -> Run:
        return timed([sys.executable, "-m", "tracker.cli", *args], self.env(home), home, check)

    def python(self, home: Path, *args: str) -> Run:
        return timed([sys.executable, *args], self.env(home), home)

    def db_path(self, home: Path) -> Path:
        return home / ".tracker" / "tracker.db"


def first_claim_after(db: Path, launched: datetime) -> float:
    with sqlite3.connect(db) as conn:
        (first,) = conn.execute("SELECT min(started_at) FROM tasks").fetchone()
    claimed = datetime.fromisoformat(first).replace(tzinfo=UTC)
    return (claimed - launched).total_seconds()


def seconds_line(out: str, key: str = "SECONDS") -> float:
    m = re.search(key + r" ([0-9.]+)", out)
    if m is None:
        raise RuntimeError(f"no {key} line in:\n{out[-2000:]}")
    return float(m.group(1))


def info_lines(out: str) -> int:
    return sum(1 for line in out.splitlines() if " INFO " in line or line.startswith("INFO"))


# --- the measurements: each takes a tree and adds its values ----------------------------------


def floors(tree: Tree, figs: dict[str, Figure]) -> None:
    home = tree.home()
    figs["import torch"].add(tree.label, tree.python(home, "-c", "import torch").wall)
    figs["import mlflow"].add(tree.label, tree.python(home, "-c", "import mlflow").wall)
    out = tree.python(home, "-c", CLUSTER_SCRIPT).out
    figs["Dask LocalCluster, 2 processes"].add(tree.label, seconds_line(out))


def empty_and_status(tree: Tree, figs: dict[str, Figure]) -> None:
    home = tree.home()
    tree.tracker(home, "db", "upgrade")
    r = tree.tracker(home, "work")
    if "nothing to do" not in r.out:
        raise RuntimeError(f"tracker work on an empty queue said:\n{r.out}")
    figs["work, empty queue"].add(tree.label, r.wall)
    figs["work, empty queue (CPU)"].add(tree.label, r.cpu)
    tree.tracker(home, "enqueue", "noop", "--count", "3")
    status = tree.tracker(home, "status")
    figs["status"].add(tree.label, status.wall)
    figs["status (CPU)"].add(tree.label, status.cpu)


def first_claim(tree: Tree, figs: dict[str, Figure]) -> None:
    home = tree.home()
    tree.tracker(home, "db", "upgrade")
    tree.tracker(home, "enqueue", "noop", "--count", "1")
    launched = datetime.now(UTC)
    r = tree.tracker(home, "work", "--no-progress")
    figs["work, first claim"].add(tree.label, first_claim_after(tree.db_path(home), launched))
    figs["work, one no-op drained"].add(tree.label, r.wall)
    figs["work, one no-op drained (CPU)"].add(tree.label, r.cpu)


def worker_start(tree: Tree, figs: dict[str, Figure]) -> None:
    home = tree.home()
    tree.tracker(home, "db", "upgrade")
    tree.tracker(home, "enqueue", "noop", "--count", "1")
    db_url = f"sqlite:///{tree.db_path(home)}"
    store = str(home / ".tracker" / "store.zarr")
    out = tree.python(home, "-c", WORKER_SCRIPT, db_url, store).out
    figs["worker start (CPU)"].add(tree.label, seconds_line(out))
    figs["worker module import (CPU)"].add(tree.label, seconds_line(out, "IMPORT"))
    m = re.search(r"DONE (\d+) MODULES (\d+) HEAVY (\S+)", out)
    if m is None or m.group(1) != "1":
        raise RuntimeError(f"the worker did not run its task:\n{out[-2000:]}")
    figs["worker start (CPU)"].notes[tree.label] = f"imports {m.group(3)}"


def train_tiny(tree: Tree, figs: dict[str, Figure]) -> None:
    home = tree.home()
    r = tree.tracker(home, "train", "--arch", "mlp", "--widths", "16", "--dataset", "iris",
                     "--epochs", "2", "--batch-size", "16")  # fmt: skip
    figs["train, tiny model, new home"].add(tree.label, r.wall)
    figs["train, tiny model, new home (CPU)"].add(tree.label, r.cpu)
    figs["train, tiny model, new home"].notes[tree.label] = f"{info_lines(r.out)} INFO lines"


class UserPath:
    """One trained digits MLP per tree; each repeat runs the plain script once and, against it,
    the cold path (enqueue a new surface, then `tracker work`) and the warm path (a new surface
    by `tracker enqueue surface --wait` while `tracker work --forever` is up and idle)."""

    def __init__(self) -> None:
        self.homes: dict[str, Path] = {}
        self.seed = 0

    def surface(self, tree: Tree, home: Path, *extra: str) -> Run:
        self.seed += 2  # a new surface each time (the y direction takes seed + 1)
        return tree.tracker(home, "enqueue", "surface", "--model", "1", "--x", "-1:1:51",
                            "--y", "-1:1:51", "--seed", str(self.seed), *extra)  # fmt: skip

    def __call__(self, tree: Tree, figs: dict[str, Figure]) -> None:
        home = self.homes.get(tree.label)
        if home is None:
            home = self.homes[tree.label] = tree.home()
            tree.tracker(home, "train", "--arch", "mlp", "--widths", "64,64", "--dataset",
                         "digits", "--epochs", "5", "--batch-size", "32", "--lr", "0.05",
                         "--momentum", "0.9")  # fmt: skip
        plain = tree.python(home, str(PLAIN), "--n", "51", "--seed", str(self.seed))
        t0 = time.perf_counter()
        enq = self.surface(tree, home)
        work = tree.tracker(home, "work", "--no-progress")
        wall = time.perf_counter() - t0
        figs["user path, tracker"].add(tree.label, wall)
        figs["user path, tracker (CPU)"].add(tree.label, enq.cpu + work.cpu)
        figs["enqueue surface"].add(tree.label, enq.wall)
        figs["enqueue surface (CPU)"].add(tree.label, enq.cpu)
        figs["user path, plain script"].add(tree.label, plain.wall)
        figs["user path, plain script (CPU)"].add(tree.label, plain.cpu)
        figs["user path / plain"].add(tree.label, wall / plain.wall)
        if not self.warm(tree, home, figs, plain):
            figs["user path, warm worker"].notes[tree.label] = "this tree has no --wait"

    def warm(self, tree: Tree, home: Path, figs: dict[str, Figure], plain: Run) -> bool:
        """The warm path, timed from launch to exit of `enqueue surface --wait`; the worker's
        own start (launch until it has drained one no-op) is printed apart."""
        if "--wait" not in tree.tracker(home, "enqueue", "noop", "--help").out:
            return False
        log = (home / "worker.log").open("w")
        t0 = time.perf_counter()
        worker = subprocess.Popen(
            [sys.executable, "-m", "tracker.cli", "work", "--forever", "--no-progress"],
            env=tree.env(home), cwd=home, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            # Ready: the worker has drained one no-op (it is up, has claimed, and is idle).
            tree.tracker(home, "enqueue", "noop", "--count", "1", "--study", f"ready-{self.seed}",
                         "--wait", "--no-progress")  # fmt: skip
            figs["warm worker, launch to idle"].add(tree.label, time.perf_counter() - t0)
            # Its first surface imports torch and the engine in the worker (a worker claims
            # before heavy imports); the next one finds them loaded, as every later request does.
            first = self.surface(tree, home, "--wait", "--no-progress")
            figs["user path, warm worker, its first surface"].add(tree.label, first.wall)
            figs["its first surface / plain"].add(tree.label, first.wall / plain.wall)
            drained(tree.db_path(home))
            r = self.surface(tree, home, "--wait", "--no-progress")
            figs["user path, warm worker"].add(tree.label, r.wall)
            figs["user path, warm worker (CPU)"].add(tree.label, r.cpu)
            figs["user path, warm worker / plain"].add(tree.label, r.wall / plain.wall)
            drained(tree.db_path(home))  # the follow-ups (figures on MLflow) off the next runs
        finally:
            worker.send_signal(signal.SIGTERM)  # `tracker work`'s clean exit (status 143)
            try:
                worker.wait(timeout=120)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            log.close()
        return True


def drained(db: Path, patience: float = 600.0) -> None:
    """Return once no task is waiting, pending or running (the worker is idle again)."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        with sqlite3.connect(db) as conn:
            (left,) = conn.execute("SELECT count(*) FROM tasks WHERE status IN "
                                   "('waiting', 'pending', 'running')").fetchone()  # fmt: skip
        if not left:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the warm worker left tasks unfinished after {patience:.0f} s")


def demo(tree: Tree, figs: dict[str, Figure]) -> None:
    home = tree.home()
    r = tree.tracker(home, "demo", "--no-progress")
    figs["demo"].add(tree.label, r.wall)
    figs["demo (CPU)"].add(tree.label, r.cpu)
    figs["demo"].notes[tree.label] = f"{info_lines(r.out)} INFO lines"


MEASURES: dict[str, tuple[Callable[[Tree, dict[str, Figure]], None], list[str]]] = {
    "floors": (floors, ["import torch", "import mlflow", "Dask LocalCluster, 2 processes"]),
    "empty": (
        empty_and_status,
        ["work, empty queue", "work, empty queue (CPU)", "status", "status (CPU)"],
    ),
    "claim": (
        first_claim,
        ["work, first claim", "work, one no-op drained", "work, one no-op drained (CPU)"],
    ),
    "worker": (worker_start, ["worker start (CPU)", "worker module import (CPU)"]),
    "train": (
        train_tiny,
        ["train, tiny model, new home", "train, tiny model, new home (CPU)"],
    ),
    "user": (UserPath(), ["user path, tracker", "user path, plain script", "user path / plain",
                          "user path, warm worker", "user path, warm worker / plain",
                          "user path, warm worker, its first surface",
                          "its first surface / plain",
                          "user path, tracker (CPU)", "user path, plain script (CPU)",
                          "user path, warm worker (CPU)", "warm worker, launch to idle",
                          "enqueue surface", "enqueue surface (CPU)"]),
    "demo": (demo, ["demo", "demo (CPU)"]),
}


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:6.2f} ({min(values):.2f}-{max(values):.2f})"


def report(figs: dict[str, Figure], labels: list[str], out: TextIO = sys.stdout) -> None:
    heads = ["figure", *(f"{lab}: median (min-max)" for lab in labels)]
    if len(labels) == 2:
        heads.append(f"{labels[0]}/{labels[1]}")
    heads += ["target", "notes"]
    rows = []
    for fig in figs.values():
        row = [fig.name, *(cell(fig.values.get(lab, [])) for lab in labels)]
        meds = [statistics.median(fig.values[lab]) if fig.values.get(lab) else None
                for lab in labels]  # fmt: skip
        if len(labels) == 2:
            a, b = meds
            row.append(f"{a / b:.2f}" if a is not None and b else "-")
        target = TARGETS.get(fig.name)
        verdict = ""
        if target is not None and meds[0] is not None:
            verdict = f"<= {target:g} ({'met' if meds[0] <= target else 'NOT met'})"
        row += [verdict, "; ".join(f"{k}: {v}" for k, v in fig.notes.items())]
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [heads, *rows]) for i in range(len(heads))]
    for r in [heads, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(),
              file=out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--base", type=Path, help="also run the tracker in this checkout (paired)")
    ap.add_argument("--this", type=Path, default=REPO,
                    help="the checkout measured first (default: the one holding this file)")
    ap.add_argument("--demo", action="store_true", help="also time `tracker demo` (long)")
    ap.add_argument("--only", help="comma-separated: " + ",".join(MEASURES))
    args = ap.parse_args()
    names = args.only.split(",") if args.only else [m for m in MEASURES if m != "demo"]
    if args.demo and "demo" not in names:
        names.append("demo")
    with tempfile.TemporaryDirectory(prefix="tracker-startup-") as tmp:
        trees = [Tree("this", args.this.resolve(), Path(tmp))]
        if args.base is not None:
            trees.append(Tree("base", args.base.resolve(), Path(tmp)))
        figs: dict[str, Figure] = {}
        for name in names:
            fn, fig_names = MEASURES[name]
            for f in fig_names:
                figs[f] = Figure(f)
            repeats = 1 if name == "demo" else args.repeat
            for i in range(repeats):
                # Alternate which tree goes first, so neither always runs on a warmer cache.
                for tree in trees if i % 2 == 0 else trees[::-1]:
                    fn(tree, figs)
            print(f"[startup] {name} done; load {os.getloadavg()[0]:.1f}", file=sys.stderr)
            report({f: figs[f] for f in fig_names}, [t.label for t in trees], sys.stderr)
    print(f"start-up figures, seconds; {args.repeat} run(s) each; cores {os.cpu_count()}, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip
    report(figs, [t.label for t in trees])


if __name__ == "__main__":
    main()
