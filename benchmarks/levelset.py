"""Level-set traversal cost: the tracker's path against a plain torch script of the same walk.

One IRIS_FF traversal (phase 1: 100 epochs of Adam; phase 2: ``--steps`` predictor steps,
1,000 by default), with the same seed, timed two ways:

  tracker  a temporary TRACKER_HOME (SQLite, Zarr, MLflow); the run enqueued with the function
           behind ``tracker enqueue levelset``; then the worker loop (``run_worker``, the loop a
           Dask worker of ``tracker work`` runs) claims the task and runs it: lease and
           heartbeat, an MLflow run with every predictor step logged in batches, the snapshots
           written chunk by chunk into Zarr, the trace array, the row filled in at completion.
           Timed from the claim loop's start to its return. One-off costs of a process or an
           installation happen before the clock starts: creating the databases, MLflow's
           client (its schema check), importing the task kinds' modules, torch's lazy import
           of its compiler when the first optimiser is built.
  plain    this file's own implementation of the same algorithm in plain torch (an
           nn.Sequential, torch.autograd.grad over its parameters, no queue, no database, no
           MLflow, no Zarr), on the same tensors, with the same initialisation and batch order.

Both run on one intra-op thread (the tracker runs these small networks so). The data are
loaded once, untimed. The final R = ||theta||^2 of both is printed as a check that they
computed the same walk. Printed last: ratio plain_time / tracker_time (target >= 0.9).

    .venv/bin/python benchmarks/levelset.py [--steps 1000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
REPO = _HERE.parent
# `python benchmarks/levelset.py` puts this folder first on sys.path, where benchmarks/queue.py
# would shadow the standard library's queue: keep the repository root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402  (after the sys.path fix)
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

SETUP = "IRIS_FF"
BASE_SEED = 0


# --- the plain script -------------------------------------------------------------------------


def plain_init(weight: torch.Tensor, gen: torch.Generator) -> None:
    """Truncated (2 sd) normal with Keras' Glorot-normal spread."""
    fan_in, fan_out = weight.shape[1], weight.shape[0]
    std = math.sqrt(2.0 / (fan_in + fan_out)) / 0.87962566103423978
    with torch.no_grad():
        weight.normal_(0.0, 1.0, generator=gen)
        while bool((weight.abs() > 2.0).any()):
            bad = weight.abs() > 2.0
            weight[bad] = torch.randn(int(bad.sum()), generator=gen)
        weight.mul_(std)


def plain_walk(x, y, tx, ty, seed: int, steps: int, epochs: int = 100) -> tuple[float, int]:
    """Phase 1 and the predictor/corrector walk; returns the final R and the predictor steps."""
    sizes = [x.shape[1], 100, 100, 100, 100, 3]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.Tanh()]
    net = nn.Sequential(*layers[:-1])
    gen = torch.Generator().manual_seed(seed)
    for m in net:
        if isinstance(m, nn.Linear):
            plain_init(m.weight, gen)
            nn.init.zeros_(m.bias)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    order_gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=order_gen)
        for s in range(0, x.shape[0], 32):
            idx = order[s : s + 32]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    params = list(net.parameters())

    def loss_grad() -> tuple[float, torch.Tensor, torch.Tensor]:
        out = net(x)
        loss = F.cross_entropy(out, y)
        grads = torch.autograd.grad(loss, params)
        return float(loss.detach()), torch.cat([g.reshape(-1) for g in grads]), out.detach()

    def theta() -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in params])

    def move(delta: torch.Tensor) -> None:
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(theta() - delta, params)

    def angle(a: torch.Tensor, b: torch.Tensor) -> float:
        c = float(a.dot(b)) / (float(a.norm()) * float(b.norm()))
        return math.degrees(math.acos(max(-1.0, min(1.0, c))))

    l0 = loss_grad()[0]
    eta, eta_min, eta_c = 1e-5, 1e-5, 1e-6
    r_prev, after_corr, k, since = None, False, 0, 0
    snapshots, trace = [], []
    while k < steps:
        loss, g_l, out = loss_grad()
        gap = loss - l0
        if gap * gap > 1e-10:
            if since >= 20_000:
                break
            q = 2.0 * gap * g_l
            if r_prev is not None:
                q = q - q.dot(r_prev) * r_prev
            move(eta_c * q / q.norm())
            after_corr, since = True, since + 1
            continue
        th = theta()
        g_r = 2.0 * th
        a = angle(g_r, g_l)
        if k % 50 == 0:
            snapshots.append(th.numpy().copy())
        if float(g_l.norm()) / math.sqrt(g_l.numel()) < 1e-6:
            r = g_r
        else:
            u = g_l / g_l.norm()
            r = g_r - g_r.dot(u) * u
        r = r / r.norm()
        if after_corr or r_prev is None:
            eta = eta_min
        elif angle(r, r_prev) >= 0.1:
            eta = max(0.1 * eta, eta_min)
        else:
            eta = min(1.1 * eta, 0.1)
        with torch.no_grad():
            test_out = net(tx)
            test = (
                float(F.cross_entropy(test_out, ty)),
                float((test_out.argmax(1) == ty).float().mean()),
            )
        acc = float((out.argmax(1) == y).float().mean())
        trace.append([k, a, float(th.dot(th)), loss, acc, *test, eta, since, gap])
        if a >= 180.0 - 0.1:
            break
        move(eta * r)
        r_prev, after_corr, k, since = r, False, k + 1, 0
    # R of the last recorded step (before its move), as the tracker's row reports it.
    return trace[-1][2], len(trace)


# --- the tracker path -------------------------------------------------------------------------


def tracker_walk(home: Path, steps: int, epochs: int = 100) -> tuple[float, float, int]:
    """Enqueue one traversal and drain it with the worker loop; (seconds, final R, steps)."""
    from tracker._config import resolve
    from tracker._mlflow import client_for
    from tracker._registry import load_plugins
    from tracker._schema import LevelSetRun
    from tracker._worker import WorkerConfig, run_worker
    from tracker.cli import main

    settings = resolve(home=str(home))
    flags = ["--home", str(home)]
    assert main(["db", "upgrade", *flags]) == 0
    client_for(settings.mlflow_uri)  # one-off: tables and the worker's client, untimed
    load_plugins()  # a running worker has imported every task kind's module already
    assert main(["enqueue", "levelset", "--setup", SETUP, "--runs", "1", "--seed", str(BASE_SEED),
                 "--max-predictor-steps", str(steps), "--phase1-epochs", str(epochs), *flags]) == 0  # fmt: skip
    cfg = WorkerConfig(db_url=settings.db_url, store_url=settings.store_url,
                       mlflow_uri=settings.mlflow_uri, kinds=("levelset.run",))  # fmt: skip
    started = time.perf_counter()
    stats = run_worker(cfg)
    seconds = time.perf_counter() - started
    assert stats["done"] == 1, stats
    from tracker._db import open_database

    db = open_database(settings.db_url)
    with db.session() as session:
        row = session.query(LevelSetRun).one()
        r, n = float(row.final_weight_norm_sq), int(row.n_predictor_steps)
    db.dispose()
    return seconds, r, n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="predictor steps (default 1000)")
    parser.add_argument("--phase1-epochs", type=int, default=100, help="Adam epochs (default 100)")
    parser.add_argument("--repeat", type=int, default=1, help="passes; the best time is kept")
    args = parser.parse_args()

    from compute import levelset as ls

    data = ls.load_setup_data(ls.get_setup(SETUP))
    seed = ls.run_seeds(BASE_SEED, 1)[0]
    # torch imports its compiler lazily when the first optimiser is built (~10 s on a busy
    # machine): pay that once, before either clock.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    plain_times, tracker_times = [], []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            t, r_tracker, n_tracker = tracker_walk(
                Path(tmp) / ".tracker", args.steps, args.phase1_epochs
            )
        tracker_times.append(t)
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        started = time.perf_counter()
        r_plain, n_plain = plain_walk(data.train_x, data.train_y, data.test_x, data.test_y,
                                      seed, args.steps, args.phase1_epochs)  # fmt: skip
        plain_times.append(time.perf_counter() - started)
        torch.set_num_threads(before)
        print(f"pass {i + 1}: tracker {tracker_times[-1]:.2f} s, plain {plain_times[-1]:.2f} s",
              flush=True)  # fmt: skip
    agree = math.isclose(r_tracker, r_plain, rel_tol=1e-5) and n_tracker == n_plain
    print(f"setup {SETUP}, seed {seed}, predictor steps: tracker {n_tracker}, plain {n_plain}")
    print(f"final R: tracker {r_tracker:.6f}, plain {r_plain:.6f} "
          f"({'agree' if agree else 'DIFFER'})")  # fmt: skip
    best_t, best_p = min(tracker_times), min(plain_times)
    print(f"tracker_time {best_t:.3f} s  plain_time {best_p:.3f} s")
    print(f"ratio plain_time / tracker_time = {best_p / best_t:.3f} "
          f"({'PASS' if best_p / best_t >= 0.9 else 'MISS'}, target >= 0.9)")  # fmt: skip
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
