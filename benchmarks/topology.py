"""Memory and time of the topology analysis (issue 4): streamed PCA, PHATE, persistence.

For each D in ``--dims`` the samples are written first, as the retrain tasks write them: 16
trajectories (4 seeds x 4 step sizes) of ``samples / 16`` saves each, one Zarr array
[saves, D] of float32 per trajectory with chunks (1, 65,536), row by row. The parameters are
random walks (a seeded Gaussian start plus seeded Gaussian steps per save), so the samples
have the structure of trajectories without any training. Then, in a fresh process, the
analysis the ``embedding`` and ``persistence`` tasks run:

  pca          exact PCA scores from the Gram matrix, streamed in column blocks from Zarr
               (``compute.topology.streamed_pca``, 100 components)
  phate        cosine PHATE of the scores (``compute.topology.phate_embedding``)
  persistence  20-NN graph in diffusion potential, lower-star flag complex to dimension 2,
               gudhi persistence in dimensions 0 and 1 (a seeded random per-sample loss)

Each stage prints its wall time and the analysis process's peak resident memory so far
(``ru_maxrss``, which never decreases), so the last line of a case is the peak of the whole
analysis. Target: peak RSS under 4 GiB for D = 1.5e6 with 640 samples.

    python benchmarks/topology.py [--samples 640] [--dims 1e5,1.5e6] [--seed 0] [--keep DIR]

The exit status is 0 whatever the figures (a measurement, not a test) unless a stage fails.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# This folder holds queue.py, which would shadow the standard library's queue (multiprocessing
# imports it): run with the repository on the path instead of the script's folder.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks"]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TRAJECTORIES = 16
TARGET_GIB = 4.0


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _paths(n_samples: int) -> list[tuple[str, int]]:
    """(array path, saves) per trajectory; the samples are split as evenly as possible."""
    base, extra = divmod(n_samples, TRAJECTORIES)
    return [(f"retrains/{i}/trajectory", base + (i < extra)) for i in range(TRAJECTORIES)
            if base + (i < extra) > 0]  # fmt: skip


def write_samples(store_url: str, n_samples: int, dims: int, seed: int) -> dict[str, Any]:
    """Random-walk trajectories into Zarr, one row at a time (never all of them in memory)."""
    import numpy as np

    from compute.topology import trajectory_chunks
    from tracker._store import ArrayStore

    started = time.perf_counter()
    store = ArrayStore(store_url)
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal(dims, dtype=np.float32)
    for path, saves in _paths(n_samples):
        store.create(path, (saves, dims), np.float32, trajectory_chunks(dims))
        row = centre + 0.5 * rng.standard_normal(dims, dtype=np.float32)  # the jump
        for i in range(saves):
            store.write_block(path, (slice(i, i + 1), slice(None)), row[None, :])
            row += 0.05 * rng.standard_normal(dims, dtype=np.float32)  # a retrain step
    return {"seconds": time.perf_counter() - started, "rss_mib": _rss_mib()}


def analyse(store_url: str, n_samples: int, dims: int, seed: int, knn: int) -> list[dict[str, Any]]:
    """The embedding and persistence stages, timed, with the peak RSS after each."""
    t = time.perf_counter()
    import numpy as np
    import phate  # noqa: F401  (imported here so the phate stage times only the embedding)

    from compute.topology import (
        TrajectoryColumns,
        knn_edges,
        persistence_diagram,
        phate_embedding,
        streamed_pca,
        summarize_diagram,
    )
    from tracker._store import ArrayStore

    stages: list[dict[str, Any]] = [
        {"stage": "imports", "seconds": time.perf_counter() - t, "rss_mib": _rss_mib()}
    ]
    store = ArrayStore(store_url)
    reader = TrajectoryColumns(store, [p for p, _ in _paths(n_samples)], np.arange(dims))
    t = time.perf_counter()
    pca = streamed_pca(reader, n_samples, dims, 100)
    stages.append({"stage": "pca", "seconds": time.perf_counter() - t, "rss_mib": _rss_mib(),
                   "note": f"{pca.scores.shape[1]} components, "
                           f"{pca.explained_variance_ratio.sum():.3f} of the variance"})  # fmt: skip
    t = time.perf_counter()
    emb = phate_embedding(pca.scores, seed)
    stages.append({"stage": "phate", "seconds": time.perf_counter() - t, "rss_mib": _rss_mib(),
                   "note": f"t = {emb.t}"})  # fmt: skip
    t = time.perf_counter()
    loss = np.random.default_rng(seed).random(n_samples)
    edges = knn_edges(emb.potential, min(knn, n_samples - 1))
    diagram = persistence_diagram(loss, edges)
    summary = summarize_diagram(diagram)
    stages.append({"stage": "persistence", "seconds": time.perf_counter() - t,
                   "rss_mib": _rss_mib(),
                   "note": f"{len(edges)} edges, H0 {summary['h0_count']}, H1 {summary['h1_count']}"})  # fmt: skip
    return stages


def _in_child(fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` in a fresh process so its peak RSS is its own."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=640, help="samples in all (640)")
    parser.add_argument("--dims", default="1e5,1.5e6", help="parameter counts D (1e5,1.5e6)")
    parser.add_argument("--knn", type=int, default=20, help="neighbours of the graph (20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", metavar="DIR", help="write the stores here and keep them")
    args = parser.parse_args(argv)
    dims = [int(float(d)) for d in args.dims.split(",") if d.strip()]
    print(f"topology benchmark: {args.samples} samples in {TRAJECTORIES} trajectories, "
          f"D = {', '.join(f'{d:,}' for d in dims)}; peak RSS target {TARGET_GIB:g} GiB")  # fmt: skip
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="topology-bench-"))
    try:
        for d in dims:
            store_url = str(root / f"store-{d}.zarr")
            wrote = _in_child(write_samples, store_url, args.samples, d, args.seed)
            gib = args.samples * d * 4 / 2**30
            print(f"\nD = {d:,}: wrote {gib:.2f} GiB of float32 samples in {wrote['seconds']:.1f} s "
                  f"(writer peak RSS {wrote['rss_mib']:.0f} MiB)")  # fmt: skip
            stages = _in_child(analyse, store_url, args.samples, d, args.seed, args.knn)
            print(f"{'stage':<12} {'seconds':>8} {'peak RSS MiB':>13}  note")
            for s in stages:
                print(f"{s['stage']:<12} {s['seconds']:>8.1f} {s['rss_mib']:>13.0f}  {s.get('note', '')}")  # fmt: skip
            total = sum(s["seconds"] for s in stages)
            peak = max(s["rss_mib"] for s in stages) / 1024
            verdict = "PASS" if peak < TARGET_GIB else "MISS"
            print(f"D = {d:,}: analysis {total:.1f} s, peak RSS {peak:.2f} GiB "
                  f"(target < {TARGET_GIB:g} GiB: {verdict})")  # fmt: skip
            if not args.keep:
                shutil.rmtree(store_url, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
