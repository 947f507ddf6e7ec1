"""Goldstein's lambda_min/lambda_max map (`tracker enqueue surface --curvature`): one Lanczos
run per grid point for both ends against the two runs (which='largest', then 'smallest') the
map took before, in the same process on the same points, and the whole user path.

- map: ``tracker.surfaces.kinds.CurvatureMap.at`` (``compute.curvature.extreme_eigenvalues``)
  against the same points done with two ``top_eigenvalues`` runs, alternating in one process,
  one torch thread; the values must be equal bit for bit (the script exits 1 otherwise). Ratio =
  two runs s / one run s, with the Hessian-vector products of each.
- user path: in a new home (embedded defaults), a digits MLP trained first (not timed), then
  ``tracker enqueue surface --curvature`` + ``tracker work`` from launch to exit.

Case: the MLP [32] (relu) of examples/curvature.toml after 5 epochs of benchmarks/curvature.py's
seeded SGD (``_train``) on digits, 256 samples, tol 1e-3, at most 50 steps (the example's
settings), random unit directions.

    python benchmarks/curvature_map.py [--points 11] [--repeat 3] [--no-cli]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parent
# `python benchmarks/curvature_map.py` puts this directory first on sys.path, where
# benchmarks/queue.py would stand in for the standard library's queue (torch imports it).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
SEED = 0


def _case(points: int) -> tuple[Any, Any]:
    import numpy as np
    import torch

    from benchmarks.curvature import _train
    from compute.data import fixed_subset, load_dataset, loss_kind
    from compute.models import build_model
    from compute.state import flatten_state, layout_of
    from tracker.surfaces.kinds import CurvatureMap

    ds = load_dataset("digits")
    x, y = ds.split("train")
    model = build_model("mlp", {"widths": [32], "activation": "relu"},
                        input_shape=ds.input_shape, num_classes=ds.num_classes, seed=SEED)  # fmt: skip
    _train(model, x, y, epochs=5)
    g = torch.Generator().manual_seed(SEED)
    xs, ys = fixed_subset(x, y, 256, 0)
    layout = layout_of(model)
    centre = flatten_state(model, layout)
    dirs = [torch.randn(centre.shape, generator=g) for _ in range(2)]
    dirs = [d / d.norm() for d in dirs]
    cmap = CurvatureMap(model=model, layout=layout, centre=centre, directions=dirs,
                        groups=[(xs, ys)], loss=loss_kind(ds), bn="eval", tol=1e-3, max_iter=50,
                        seed=SEED)  # fmt: skip
    grid = np.linspace(-1.0, 1.0, points)
    coords = np.array([[a, b] for b in grid for a in grid])
    return cmap, coords


def _two_runs(cmap: Any, coords: Any) -> tuple[Any, int]:
    """The map as it was: a 'largest' and a 'smallest' Lanczos run per point."""
    import numpy as np

    from compute import curvature as cv
    from compute.state import load_flat

    out = np.full((2, len(coords)), np.nan)
    products = 0
    for p, point in enumerate(coords):
        theta = cmap.centre.clone()
        for c, d in zip(point.tolist(), cmap.directions, strict=True):
            theta.add_(d, alpha=c)
        load_flat(cmap.model, theta, cmap.layout)
        gx, gy = cmap.groups[0]
        op = cv.HessianOperator(cmap.model, gx, gy, loss=cmap.loss, bn=cmap.bn)
        for row, which in enumerate(("largest", "smallest")):
            pairs = cv.top_eigenvalues(op, 1, which=which, tol=cmap.tol, max_iter=cmap.max_iter,
                                       seed=cmap.seed)  # fmt: skip
            out[row, p] = pairs.eigenvalues[0]
        products += op.hvp_count
    return out, products


def _one_run(cmap: Any, coords: Any) -> tuple[Any, int]:
    import numpy as np

    from compute import curvature as cv

    counted = {"n": 0}
    original = cv.extreme_eigenvalues

    def counting(op: Any, **kw: Any) -> Any:
        before = op.hvp_count
        result = original(op, **kw)
        counted["n"] += op.hvp_count - before
        return result

    cv.extreme_eigenvalues = counting  # type: ignore[assignment]
    try:
        out = cmap.at(coords)
    finally:
        cv.extreme_eigenvalues = original  # type: ignore[assignment]
    return np.stack([out["lambda_max"][0], out["lambda_min"][0]]), counted["n"]


def _map(points: int, repeat: int) -> bool:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    cmap, coords = _case(points)
    times: dict[str, list[float]] = {"one": [], "two": []}
    values: dict[str, Any] = {}
    products: dict[str, int] = {}
    for _ in range(repeat):
        for name, fn in (("one", _one_run), ("two", _two_runs)):
            t = time.perf_counter()
            values[name], products[name] = fn(cmap, coords)
            times[name].append(time.perf_counter() - t)
    same = bool(np.array_equal(values["one"], values["two"], equal_nan=True))
    one, two = statistics.median(times["one"]), statistics.median(times["two"])
    n = len(coords)
    print(f"map, {points}x{points} points, MLP [32] on 256 digits, tol 1e-3, max 50 steps, "
          f"median of {repeat}:")  # fmt: skip
    print(f"  one run per point (now): {one:.3f} s, {one / n * 1e3:.1f} ms/point, "
          f"{products['one']} products")  # fmt: skip
    print(f"  two runs per point (before): {two:.3f} s, {two / n * 1e3:.1f} ms/point, "
          f"{products['two']} products")  # fmt: skip
    print(f"  ratio (before / now): {two / one:.2f}x; products {products['two'] / products['one']:.2f}x; "
          f"values bit-for-bit equal: {same}")  # fmt: skip
    print(f"  lambda_max {np.nanmin(values['one'][0]):.4g}..{np.nanmax(values['one'][0]):.4g}, "
          f"lambda_min {np.nanmin(values['one'][1]):.4g}..{np.nanmax(values['one'][1]):.4g}")  # fmt: skip
    return same


def _cli(points: int) -> None:
    tracker = str(Path(sys.executable).with_name("tracker"))
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TRACKER_HOME": str(Path(tmp) / ".tracker")}

        def run(*argv: str) -> float:
            t = time.perf_counter()
            subprocess.run([tracker, *argv], env=env, check=True, capture_output=True, cwd=tmp)
            return time.perf_counter() - t

        run("enqueue", "model", "--arch", "mlp", "--widths", "32", "--activation", "relu",
            "--dataset", "digits", "--epochs", "5", "--batch-size", "16", "--lr", "0.05")  # fmt: skip
        run("work", "--no-progress")
        grid = f"-1:1:{points}"
        enq = run("enqueue", "surface", "--model", "1", f"--x={grid}", f"--y={grid}", "--subset",
                  "256", "--metrics", "loss", "--curvature", "--curvature-max-iter", "50")  # fmt: skip
        work = run("work", "--no-progress")
    print(f"user path: `tracker enqueue surface --curvature` ({points}x{points}) + `tracker work`"
          f" from launch: {enq + work:.2f} s (enqueue {enq:.2f} s, work {work:.2f} s)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--points", type=int, default=11, help="grid points per axis (default 11)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-cli", action="store_true", help="skip the user path")
    a = p.parse_args(argv)
    same = _map(a.points, a.repeat)
    if not a.no_cli:
        _cli(a.points)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
