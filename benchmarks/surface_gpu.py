"""The GPU cases of benchmarks/surface.py (``surface.py --gpu-cases``), issue 17.

All on one CUDA device, CIFAR-shaped inputs (seeded Gaussian noise: pixels do not change
throughput), ResNet-56 at its seeded initial weights, the tracker's directions:

  (g1) one minibatch of 256: the engine (its auto plan: K grid points per vmap call) against a
       per-point loop (weights copied in, one forward per point) on the same GPU, fp32 and bf16.
       Target: engine >= 4x the loop in bf16.
  (g2) 10,000 samples: the engine's points x samples per second (bf16, the loop strategy with
       the first-affine cache, the forward compiled with ``--compile-mode``) against the
       inference ceiling of the same model on the same data measured in the same run (bf16,
       channels_last, torch.compile with the same mode, batches of ``--ceiling-batch``).
       Target: >= 0.9 of the ceiling. Compile times are reported apart. The largest relative
       difference between the fp32 and the bf16 surface on the timed points is printed.
  (g3) the whole tracker path on a 51x51 grid of (g2): a temporary home (SQLite, Zarr), the
       model imported (`tracker import model`, no MLflow), the test split of generated CIFAR-10
       pickles, `tracker enqueue surface --gpu --precision bf16 --compile MODE`, then one
       `tracker work --cuda`; wall time from the enqueue to the surface's completion, and from
       the launch of `tracker work` to its exit. Target: under 2 minutes.

    python benchmarks/surface.py --gpu-cases [--json OUT.json] [--cases g1,g2,g3]
                                 [--g3-grid 51] [--compile-mode default]

A measurement, not a test: the exit status is 0 whatever the ratios (1 only when a case could
not run at all).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

TARGET_G1 = 4.0
TARGET_G2 = 0.9
TARGET_G3_SECONDS = 120.0
SEED = 0


def _sync() -> None:
    torch.cuda.synchronize()


def _problem(samples: int) -> Any:
    from benchmarks.surface import Case, build_problem

    case = Case(f"resnet56-{samples}", "resnet56", {}, "cifar10", "synthetic", samples, True)
    return build_problem(case, torch.device("cuda"))


def _engine(p: Any, **options: Any) -> Any:
    from compute.engine import SurfaceEvaluator

    return SurfaceEvaluator(p.model, p.layout, p.centre, p.directions, [(p.x, p.y)],
                            loss=p.loss, bn_mode="eval", device="cuda", **options)  # fmt: skip


def _timed(fn: Any) -> float:
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def _coords(n: int) -> np.ndarray:
    xs = np.linspace(-1.0, 1.0, n)
    gx, gy = np.meshgrid(xs, xs)
    return np.column_stack([gx.ravel(), gy.ravel()])


def _loop_rate(p: Any, coords: np.ndarray, precision: str) -> float:
    """Points per second of the per-point loop: centre + a d1 + b d2 into the weights, one
    forward of the minibatch per point (bf16 under autocast, as the engine does)."""
    import copy

    from compute.state import unflatten

    net = copy.deepcopy(p.model).cuda().eval()
    state = net.state_dict()
    centre, d1, d2 = (v.cuda() for v in (p.centre, *p.directions))
    x, y = p.x.cuda(), p.y.cuda()

    def run() -> None:
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16,
                                                    enabled=precision == "bf16"):  # fmt: skip
            for a, b in coords.tolist():
                for name, piece in unflatten(centre + a * d1 + b * d2, p.layout).items():
                    state[name].copy_(piece)
                torch.nn.functional.cross_entropy(net(x).float(), y).item()

    run()  # warm-up: cuDNN's algorithm choice
    return coords.shape[0] / _timed(run)


def case_g1(grid: int) -> dict[str, Any]:
    p = _problem(256)
    coords = _coords(grid)
    out: dict[str, Any] = {"samples": 256, "points": int(coords.shape[0])}
    for precision in ("fp32", "bf16"):
        ev = _engine(p, precision=precision)
        ev.evaluate(coords[: 2 * ev.plan["points_per_call"]])  # warm-up
        engine = coords.shape[0] / _timed(lambda ev=ev: ev.evaluate(coords))
        loop = _loop_rate(p, coords, precision)
        out[precision] = {"engine_points_s": engine, "loop_points_s": loop,
                          "ratio": engine / loop, "plan": _plan(ev.plan)}  # fmt: skip
        print(f"(g1) {precision}: engine {engine:,.0f} points/s (K={ev.plan['points_per_call']}, "
              f"{ev.plan['strategy']}), per-point loop {loop:,.0f}: {engine / loop:.2f}x "
              f"(target >= {TARGET_G1:g}x in bf16)", flush=True)  # fmt: skip
    out["pass"] = out["bf16"]["ratio"] >= TARGET_G1
    return out


def _ceiling(p: Any, mode: str, batch: int, passes: int) -> tuple[float, float]:
    """Images per second of compiled bf16 channels_last inference over the data; compile s."""
    import copy

    net = copy.deepcopy(p.model).cuda().eval().to(memory_format=torch.channels_last)
    x = p.x.cuda().contiguous(memory_format=torch.channels_last)
    y = p.y.cuda()
    fast = torch.compile(net, mode=mode, dynamic=False)

    def one_pass() -> None:
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16):
            for start in range(0, x.shape[0] - batch + 1, batch):
                torch.nn.functional.cross_entropy(fast(x[start : start + batch]).float(),
                                                  y[start : start + batch])  # fmt: skip

    compile_s = _timed(one_pass)  # the first pass compiles
    seconds = _timed(lambda: [one_pass() for _ in range(passes)])
    return passes * (x.shape[0] // batch) * batch / seconds, compile_s


def case_g2(mode: str, batch: int, points: int) -> dict[str, Any]:
    p = _problem(10_000)
    coords = _coords(int(np.ceil(np.sqrt(points))))[:points]
    ceiling, ceiling_compile = _ceiling(p, mode, batch, passes=max(3, points // 8))
    ev = _engine(p, precision="bf16", compile_mode=mode)
    ev.evaluate(coords[:2])  # warm-up (the compile itself happened at construction)
    seconds = _timed(lambda: ev.evaluate(coords))
    rate = points * p.x.shape[0] / seconds
    exact = _engine(p, precision="fp32").evaluate(coords)["loss"]
    half = ev.evaluate(coords)["loss"]
    rel = float(np.max(np.abs(half - exact) / np.abs(exact)))
    out = {"samples": int(p.x.shape[0]), "points": points, "compile_mode": mode,
           "engine_images_s": rate, "ceiling_images_s": ceiling, "ratio": rate / ceiling,
           "engine_compile_s": ev.plan.get("compile_seconds"),
           "ceiling_compile_s": ceiling_compile, "bf16_vs_fp32_max_rel": rel,
           "plan": _plan(ev.plan), "pass": rate / ceiling >= TARGET_G2}  # fmt: skip
    print(f"(g2) engine {rate:,.0f} images/s against the compiled ceiling {ceiling:,.0f}: "
          f"{rate / ceiling:.2f} (target >= {TARGET_G2:g}); compile {ev.plan.get('compile_seconds')}"
          f" s (engine), {ceiling_compile:.1f} s (ceiling); bf16 vs fp32 max relative loss "
          f"difference {rel:.2e}", flush=True)  # fmt: skip
    return out


def _plan(plan: dict[str, Any]) -> dict[str, Any]:
    keys = ("strategy", "points_per_call", "sample_batch", "first_affine", "channels_last",
            "precision", "compile", "compile_seconds", "oom_retries", "device")  # fmt: skip
    return {k: plan[k] for k in keys if k in plan}


def _fake_cifar(root: Path, train: int, test: int) -> None:
    """CIFAR-10 python pickles of seeded noise (the layout torchvision reads)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    per = train // 5
    files = [(f"data_batch_{i}", per) for i in range(1, 6)] + [("test_batch", test)]
    for name, n in files:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n).tolist()}  # fmt: skip
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, fh)


def _tracker(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "tracker.cli", *args], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"tracker {' '.join(args)} failed ({result.returncode}): "
                           f"{(result.stderr or result.stdout).strip()[-2000:]}")  # fmt: skip
    return result


def case_g3(grid: int, mode: str) -> dict[str, Any]:
    import sqlalchemy as sa

    from compute.models import build_model

    tmp = Path(tempfile.mkdtemp(prefix="gpu-g3-"))
    try:
        home = tmp / ".tracker"
        data = home / "data"  # the default data root of a tracker home
        _fake_cifar(data, train=5_000, test=10_000)
        model = build_model("resnet56", {}, input_shape=(3, 32, 32), num_classes=10, seed=SEED)
        torch.save(model.state_dict(), tmp / "resnet56.pt")
        env = {k: v for k, v in os.environ.items()
               if k not in ("TRACKER_DB_URL", "TRACKER_STORE", "MLFLOW_TRACKING_URI")}  # fmt: skip
        env["TRACKER_HOME"] = str(home)
        repo = Path(__file__).resolve().parents[1]
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH")) if p)
        _tracker(["import", "model", str(tmp / "resnet56.pt"),
                  "--arch", "resnet56", "--dataset", "cifar10", "--name", "r56"], env, tmp)  # fmt: skip
        started = time.perf_counter()
        _tracker(["enqueue", "surface", "--model", "r56", "--x", f"-1:1:{grid}",
                  "--y", f"-1:1:{grid}", "--split", "test", "--gpu", "--precision", "bf16",
                  "--compile", mode], env, tmp)  # fmt: skip
        launched = time.perf_counter()
        work = _tracker(["work", "--cuda", "--no-progress"], env, tmp)
        exited = time.perf_counter()
        engine = sa.create_engine(f"sqlite:///{home / 'tracker.db'}")
        with engine.connect() as conn:
            done = conn.execute(sa.text(
                "select completed_at is not null, (select count(*) from tasks where status"
                " = 'failed') from surfaces order by id desc limit 1")).one()  # fmt: skip
        engine.dispose()
        if not done[0] or done[1]:
            raise RuntimeError(f"the surface did not complete ({done[1]} failed tasks): "
                               f"{work.stdout[-1500:]}{work.stderr[-1500:]}")  # fmt: skip
        total = exited - started
        out = {"grid": grid, "points": grid * grid, "samples": 10_000,
               "enqueue_to_done_s": total, "work_launch_to_exit_s": exited - launched,
               "pass": total < TARGET_G3_SECONDS}  # fmt: skip
        print(f"(g3) tracker path {grid}x{grid} x 10,000 samples: {total:.1f} s from enqueue to "
              f"completion (`tracker work --cuda` launch to exit {exited - launched:.1f} s; "
              f"target < {TARGET_G3_SECONDS:g} s)", flush=True)  # fmt: skip
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(cases: list[str], json_path: str | None, g3_grid: int, mode: str, g1_grid: int = 16,
        g2_points: int = 64, ceiling_batch: int = 1000) -> int:  # fmt: skip
    if not torch.cuda.is_available():
        print("--gpu-cases: no CUDA device is available", file=sys.stderr)
        return 1
    figures: dict[str, Any] = {"device": torch.cuda.get_device_name(0),
                               "torch": torch.__version__}  # fmt: skip
    print(f"GPU cases on {figures['device']} (torch {torch.__version__})", flush=True)
    runners = {"g1": lambda: case_g1(g1_grid), "g2": lambda: case_g2(mode, ceiling_batch, g2_points),
               "g3": lambda: case_g3(g3_grid, mode)}  # fmt: skip
    status = 0
    for name in cases:
        started = time.perf_counter()
        try:
            figures[name] = runners[name]()
        except Exception as err:  # a case that cannot run is reported; the others still run
            figures[name] = {"error": f"{type(err).__name__}: {err}"[:3000]}
            print(f"({name}) could not run: {figures[name]['error']}", flush=True)
            status = 1
        figures[name]["case_seconds"] = time.perf_counter() - started
        if json_path:
            Path(json_path).write_text(json.dumps(figures, indent=2, default=str))
    return status
