"""Morse graph time: the tracker's path against a plain script doing the same computation.

One Iris ensemble (DOODL3's setup: 100 models, 150 epochs by default) is trained once through
the queue in a temporary TRACKER_HOME (SQLite, Zarr, MLflow; not timed). Then, per pass:

  plain    a script written for this benchmark, on the same early/final weights already in
           memory: pick the two kernel weights with the largest final std (ascending, as DOODL3's notebooks), fit sklearn's
           GaussianProcessRegressor (RBF(0.5, [0.01, 2]) + WhiteKernel, the same seed), build
           ``CMGDB.Model(subdiv, lo, hi, F)`` on the padded bounding box with a batched
           padded corner box map, ``ComputeConleyMorseGraph``, and the order retraction from
           ``MorseReachabilityMasks`` (the greatest reachable node per box).
  tracker  ``add_morse`` (the function behind ``tracker enqueue morse``) and a worker loop
           (``run_worker``, the loop ``tracker work`` runs in each Dask worker) draining the
           morse task: claim, read the weights from Zarr, the same computation through
           compute.morse, the Morse sets and retraction rasters written to Zarr, the row
           finalised with the graph, GP parameters and array references. compute.morse
           evaluates the GP once per grid vertex (``GridCornerMap``) where the plain script
           evaluates it at every box's four corners on every pass CMGDB makes; the graphs
           agree (checked per pass), the GP calls are about 8x fewer.

Each pass uses its own GP seed (a fresh spec: enqueueing the same spec again is a no-op), the
same seed for both paths, and checks that both give the same nodes and edges. The fastest pass
of each counts (the machine may be shared) and the ratio plain_time / tracker_time is printed
with PASS (>= 0.9) or MISS. Imports and one small warm-up computation come first, untimed.

    python benchmarks/morse.py [--subdiv 15] [--models 100] [--epochs 150] [--repeat 3]
                               [--quick]

``--quick`` is a smoke run: 12 models, 5 epochs, subdivision 8, one pass. The exit status is 0
whatever the ratio: this is a measurement, not a test.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python benchmarks/morse.py` puts this directory first on sys.path, where benchmarks/queue.py
# would shadow the standard library's `queue`.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
_REPO = _HERE.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

TARGET = 0.9


# --- the plain script -------------------------------------------------------------------------


def plain_morse(early: np.ndarray, final: np.ndarray, kernels: list[int], subdiv: int,
                seed: int) -> dict[str, Any]:  # fmt: skip
    """DOODL3's computation written directly against sklearn and CMGDB."""
    import CMGDB
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, WhiteKernel

    std = final[:, kernels].std(axis=0)
    cols = [kernels[i] for i in np.argsort(std, kind="stable")[-2:]]  # the notebooks' order
    x, y = early[:, cols].astype(np.float64), final[:, cols].astype(np.float64)
    gp = GaussianProcessRegressor(kernel=RBF(0.5, (0.01, 2.0)) + WhiteKernel(), random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(x, y)
    pts = np.vstack([x, y])
    lo, hi = list(pts.min(axis=0) - 0.5), list(pts.max(axis=0) + 0.5)

    def batch(rects: np.ndarray) -> np.ndarray:
        return CMGDB.BoxMapBatch(gp.predict, rects, padding=True)

    model = CMGDB.Model(subdiv, lo, hi, lambda r: batch(np.array([r]))[0].tolist())
    model.set_batch_map(batch)
    mg, map_graph = CMGDB.ComputeConleyMorseGraph(model, cache_map_graph=True)
    n = mg.num_vertices()
    edges = sorted((int(u), int(v)) for u, v in mg.edges())
    # Retraction: per box, the reachable node above all other reachable nodes.
    below = {v: set() for v in range(n)}
    for v in range(n):
        stack = list(mg.adjacencies(v))
        while stack:
            w = stack.pop()
            if w not in below[v]:
                below[v].add(w)
                stack.extend(mg.adjacencies(w))
    masks = np.asarray(CMGDB.MorseReachabilityMasks(map_graph, mg,
                                                    list(range(map_graph.num_vertices()))))  # fmt: skip
    retraction = np.full(len(masks), -1)
    for mask in np.unique(masks):
        reach = [i for i in range(n) if (int(mask) >> i) & 1]
        tops = [c for c in reach if all(d == c or d in below[c] for d in reach)]
        if reach:
            retraction[masks == mask] = tops[0] if len(tops) == 1 else -2
    return {"nodes": n, "edges": edges, "columns": cols, "retraction": retraction}


# --- the tracker path -------------------------------------------------------------------------


class Tracker:
    """A temporary tracker installation with one trained Iris ensemble."""

    def __init__(self, root: Path, models: int, epochs: int) -> None:
        from tracker._config import resolve
        from tracker._db import open_database
        from tracker._migrate import upgrade
        from tracker._queue import get_or_create_study
        from tracker._store import ArrayStore
        from tracker._worker import WorkerConfig
        from tracker.morse.rows import EnsembleSpec, add_ensemble

        self.settings = resolve(home=root / ".tracker")
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.db = open_database(self.settings.db_url, check=False)
        upgrade(self.db, "head")
        self.store = ArrayStore(self.settings.store_url)
        self.config = WorkerConfig(db_url=self.settings.db_url, store_url=self.settings.store_url,
                                   mlflow_uri=self.settings.mlflow_uri)  # fmt: skip
        spec = EnsembleSpec(setup="doodl3-iris", n_models=models, epochs=epochs, batch_size=5,
                            chunk_size=models)  # fmt: skip
        with self.db.session() as s:
            study = get_or_create_study(s, "bench-morse")
            self.ensemble_id = add_ensemble(s, study, spec)[0].id
        started = time.perf_counter()
        self.drain(("ensemble.train", "ensemble.complete"))
        self.train_seconds = time.perf_counter() - started

    def drain(self, kinds: tuple[str, ...]) -> None:
        from dataclasses import replace

        from tracker._worker import run_worker

        stats = run_worker(replace(self.config, kinds=kinds))
        if stats["failed"]:
            raise SystemExit(f"benchmark: a {kinds} task failed: `tracker status` in {self.settings.home}")  # fmt: skip

    def weights(self) -> tuple[np.ndarray, np.ndarray, list[int]]:
        from tracker._schema import Ensemble
        from tracker.morse.results import ensemble_weights

        with self.db.session() as s:
            ens = s.get(Ensemble, self.ensemble_id)
            early, final = ensemble_weights(s, self.store, ens)
            return early, final, list(ens.kernel_columns)

    def morse(self, subdiv: int, seed: int) -> dict[str, Any]:
        """Enqueue and compute one Morse graph; return its row's figures."""
        from tracker._schema import ArrayRef, MorseGraph
        from tracker.morse.rows import MorseSpec, add_morse

        with self.db.session() as s:
            row, _ = add_morse(s, None, MorseSpec(self.ensemble_id, subdiv=subdiv, seed=seed),
                               force=True)  # fmt: skip
            mid = row.id
        self.drain(("morse",))
        with self.db.session() as s:
            row = s.get(MorseGraph, mid)
            raster = self.store.read(s.get(ArrayRef, row.retraction_array_id).path)
            return {"nodes": row.n_nodes, "edges": [tuple(e) for e in row.graph["edges"]],
                    "columns": row.source["weight_columns"], "retraction": raster,
                    "compute_seconds": row.seconds}  # fmt: skip


def _timed(fn: Any, *args: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - started, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subdiv", type=int, default=15)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=3, help="passes; the fastest counts")
    parser.add_argument("--quick", action="store_true", help="12 models, 5 epochs, subdiv 8")
    args = parser.parse_args(argv)
    if args.quick:
        args.subdiv, args.models, args.epochs, args.repeat = 8, 12, 5, 1
    with tempfile.TemporaryDirectory(prefix="bench-morse-") as tmp:
        tracker = Tracker(Path(tmp), args.models, args.epochs)
        print(f"Iris ensemble: {args.models} models x {args.epochs} epochs trained through the "
              f"queue in {tracker.train_seconds:.1f} s (not timed below)")  # fmt: skip
        early, final, kernels = tracker.weights()
        # Warm-up: imports and first calls of sklearn, CMGDB and the worker loop, untimed.
        plain_morse(early, final, kernels, 6, 10_000)
        tracker.morse(6, 10_000)
        plain_times, tracker_times = [], []
        for p in range(args.repeat):
            seed = p
            t_plain, plain = _timed(plain_morse, early, final, kernels, args.subdiv, seed)
            t_tracker, tracked = _timed(tracker.morse, args.subdiv, seed)
            same = plain["nodes"] == tracked["nodes"] and plain["edges"] == tracked["edges"]
            same = same and plain["columns"] == tracked["columns"]
            same_boxes = sorted(np.unique(plain["retraction"], return_counts=True)[1].tolist()) == \
                sorted(np.unique(tracked["retraction"], return_counts=True)[1].tolist())  # fmt: skip
            print(f"pass {p + 1}: plain {t_plain:.3f} s, tracker {t_tracker:.3f} s "
                  f"(its computation {tracked['compute_seconds']:.3f} s); "
                  f"{tracked['nodes']} nodes, {len(tracked['edges'])} edges, same graph: "
                  f"{'yes' if same else 'NO'}, same retraction counts: "
                  f"{'yes' if same_boxes else 'NO'}")  # fmt: skip
            plain_times.append(t_plain)
            tracker_times.append(t_tracker)
        best_plain, best_tracker = min(plain_times), min(tracker_times)
        ratio = best_plain / best_tracker
        verdict = "PASS" if ratio >= TARGET else "MISS"
        print(f"subdiv {args.subdiv} ({2**args.subdiv:,} boxes), best of {args.repeat}: "
              f"plain {best_plain:.3f} s, tracker {best_tracker:.3f} s")  # fmt: skip
        print(f"ratio plain_time / tracker_time = {ratio:.3f} (target >= {TARGET}) {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
