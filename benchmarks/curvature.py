"""Hessian curvature: compute/curvature.py against PyHessian 0.1, in one run.

Per case the same model (seeded initial weights), data, tolerance and seeds; per measure the
wall time of each tool, and the ratio PyHessian / tracker:

  top-1    the largest-magnitude eigenvalue to relative tolerance ``--tol`` on PyHessian's
           terms: the tracker's Lanczos (``top_eigenvalues(which='magnitude',
           stop='change')``) against PyHessian's power iteration (``eigenvalues(maxIter,
           tol)``), both stopping when the estimate changes by < tol relative.
  top-1-residual  the same against the tracker's default, stricter stop (Ritz residual
           <= tol * |lambda|); an extra row, not part of 'whole'.
  trace    Hutchinson with ``--probes`` Rademacher probes (PyHessian with ``tol=-inf``, so its
           early stop never fires and it takes exactly that many): the tracker's default
           estimator, which for these piecewise-linear networks (ReLU, BatchNorm in eval mode)
           probes the Gauss-Newton matrix in output space, one backward per probe, whose trace
           is the Hessian's (compute.piecewise); both standard errors are printed.
  trace-hessian  the same with the tracker's probes of the Hessian (one Hessian-vector product
           each, PyHessian's estimator): an extra row, not part of 'whole'.
  trace@se the trace at equal standard error: the tracker's Hutch++ (``--hutchpp-probes``
           products in all) against PyHessian's Hutchinson with ``--probes`` probes; it counts
           only where the tracker's standard error is no larger. An extra row, not in 'whole'.
  density  one SLQ run of ``--slq-steps`` Lanczos steps. PyHessian 0.1's ``density`` calls
           ``torch.eig``, which torch 2.x removed: it gets ``torch.linalg.eigh`` in its place.
           The tracker's time includes its smoothing onto the 10,000-point grid (PyHessian's
           smoothing lives outside its package, in the repository's density_plot.py).

  whole    construction (PyHessian: the forward and create_graph backward it keeps; tracker:
           the operator's sizing, its kept forward graphs, whose loss is its finite-loss
           check, and their gradient graphs, which a task's first product builds and which
           are built here so that each measure counts the same work as PyHessian's;
           with ``--hvp forward`` torch.func's one-time imports and one warm-up product)
           plus the three measures: the full path a task runs.

Each tool runs in its own child process on one torch thread (the tracker's default, for
bitwise reruns; PyHessian is pinned the same way, so the comparison is like for like), which
gives each its own peak RSS. The fraction of each measure's time spent inside Hessian-vector
products is printed (PyHessian's ``hessian_vector_product`` is wrapped with a timer). Before
anything is timed each process pays the one-time import that the first product of either tool
triggers (torch.fx's symbolic shapes, with sympy: ~0.5 s); it is printed, not counted, since
otherwise it lands in whichever measure runs first, for both tools alike.
The tracker's child sets glibc's allocator as `tracker work` and `tracker train` set it for the
threads they compute on (``tracker._malloc``: freed tensor memory reused instead of faulted in
again); PyHessian's keeps a plain script's defaults, or the same settings with
``--same-malloc``, which separates the allocator from the rest.
``--probe-block B`` forces the tracker's probes per reverse product (default: its size rule,
``compute.curvature.default_probe_block``; 1 for the digits MLP on its full split).

Cases (``--cases``):
  resnet20  CIFAR ResNet-20 (BN in eval mode) on ``--samples`` CIFAR-shaped inputs (seeded
            Gaussian noise; labels uniform); PyHessian takes them in one batch, the tracker
            in batches of 64 (its CPU rule, compute.curvature.CPU_BATCH_ACTIVATION_BYTES).
  digits    MLP [100, 100] (relu) on the full digits train split (1,438 samples), one batch.
  digits-trained  the same MLP after 30 epochs of seeded SGD (train loss ~0.01), where a few
            eigenvalues dominate the Hessian (the case Hutch++ is for); training is not timed.
Then the tracker alone: ResNet-56 top-5 eigenpairs on ``--r56-samples`` inputs (default
``--samples``; at most ``--r56-max-iter`` Lanczos steps), its peak RSS
against the 4 GiB target (``--no-resnet56`` skips it).

``--hvp`` picks the tracker's Hessian-vector product: 'auto' (its default: reverse-over-reverse
on gradient graphs kept for the whole measure, PyHessian's kind of product), 'reverse' or
'forward' (forward-over-reverse, torch.func's jvp of grad under vmap), to separate the product
from the algorithms around it. The table's 'ms per HVP' column compares the products alone.

Targets (issue 15), on CPU: every ratio >= 2x; the ResNet-56 top-5 run under 4 GiB. With
``--device cuda`` both tools compute on the first GPU (clocks read after a synchronise; the
warm-up also initialises CUDA, cuBLAS and cuDNN): every ratio >= 3x.
The issue's sizes are ``--samples 512 --probes 100 --slq-steps 100 --max-iter 100``
(``--full``); the defaults are smaller so that a loaded 2-core box finishes in minutes.

    python benchmarks/curvature.py [--cases resnet20,digits] [--samples 64] [--probes 30]
                                   [--slq-steps 30] [--tol 1e-3] [--max-iter 100]
                                   [--r56-max-iter 40] [--full] [--quick] [--no-resnet56]
                                   [--repeat N]

``--repeat N`` runs each tool N times, alternating, and counts each measure's fastest run; the
spread column (slowest / fastest) says how much the machine's load moved the times (on a
loaded 2-core box a lone run's ratio can be off by 2x either way).

``--cli`` measures instead what a user waits for, from command launch to result, ``--repeat``
times: in a new home (embedded defaults) the digits MLP [100, 100] at its seeded
initialisation (`tracker train --epochs 0`, set-up, printed apart), then `tracker enqueue
hessian --top-k 1 --trace --density` (``--probes``, ``--max-iter`` steps, ``--tol``) and
`tracker work` (a new study label per repeat, so each computes afresh), against
benchmarks/plain_hessian.py doing the same three measures with PyHessian on the same weights
(its interpreter start and imports included; each tool with its default threads). The two
losses are printed to show the weights and data are the same.

``--quick`` is a smoke run (tiny sizes). The exit status is 0 whatever the ratios: this is a
measurement, not a test.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python benchmarks/curvature.py` puts this directory first on sys.path, where
# benchmarks/queue.py would shadow the standard library's `queue`.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
_REPO = _HERE.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

SEED = 0
TARGET_RATIO = {"cpu": 2.0, "cuda": 3.0}  # issue 15: PyHessian / tracker, per device
TARGET_R56_GIB = 4.0
MEASURES = ("top-1", "trace", "density")  # the path 'whole' adds up
EXTRA = ("top-1-residual", "trace-hessian", "trace@se")


def _problem(case: str, samples: int, device: str = "cpu") -> tuple[Any, Any, Any]:
    """(model, x, y) of a case on ``device``: seeded initial weights, ready tensors."""
    model, x, y = _cpu_problem(case, samples)
    return model.to(device), x.to(device), y.to(device)


def _cpu_problem(case: str, samples: int) -> tuple[Any, Any, Any]:
    import torch

    from compute.models import build_model

    if case in ("resnet20", "resnet56"):
        g = torch.Generator().manual_seed(SEED)
        x = torch.randn(samples, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (samples,), generator=g)
        model = build_model(case, {}, input_shape=(3, 32, 32), num_classes=10, seed=SEED)
        return model, x, y
    from compute.data import load_dataset

    ds = load_dataset("digits")
    x, y = ds.split("train")
    if samples < int(x.shape[0]) and samples > 0 and case == "digits-quick":
        x, y = x[:samples], y[:samples]
    model = build_model("mlp", {"widths": [100, 100], "activation": "relu"},
                        input_shape=ds.input_shape, num_classes=ds.num_classes, seed=SEED)  # fmt: skip
    if case == "digits-trained":
        _train(model, x, y)
    return model, x, y


def _train(model: Any, x: Any, y: Any, epochs: int = 30) -> None:
    """Seeded SGD (lr 0.05, momentum 0.9, batch 64) to a train loss near 0.01: a Hessian with a
    few dominant eigenvalues, unlike the flat spectrum at initialisation. Deterministic on one
    thread, so both tools' processes measure the same weights; not timed."""
    import torch
    from torch.nn import functional as F

    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            batch = order[i : i + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()


def _process_warm_up(device: str = "cpu") -> float:
    """What the first Hessian-vector product of any tool pays once per process, outside the
    measures: torch.autograd.grad with grad_outputs imports torch.fx's symbolic shapes (and
    sympy, ~0.4-0.6 s here) on its first call; on a GPU, CUDA's context and the cuBLAS and
    cuDNN handles (a small convolution and matrix product, forward and backward). Left in, it
    lands in whichever measure runs first (top-1) for both tools alike; timed here and
    printed instead."""
    t0 = time.perf_counter()
    import torch.fx.experimental.symbolic_shapes

    if device == "cuda":
        from torch.nn import functional as F

        w = torch.randn(4, 3, 3, 3, device=device, requires_grad=True)
        out = F.conv2d(torch.randn(2, 3, 8, 8, device=device), w).flatten(1)
        (out @ torch.randn(out.shape[1], 2, device=device)).square().sum().backward()
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _sync(device: str) -> None:
    """Wait for the GPU's queued work, so a clock reading covers it (no-op on the CPU)."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _peak_gpu_bytes(device: str) -> int | None:
    if device != "cuda":
        return None
    import torch

    return int(torch.cuda.max_memory_allocated())


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _child_tracker(case: str, a: argparse.Namespace) -> dict[str, Any]:
    from compute.curvature import (
        HessianOperator,
        hutchinson_trace,
        hutchpp_trace,
        spectral_density,
        top_eigenvalues,
    )

    model, x, y = _problem(case, a.r56_samples if case == "resnet56" else a.samples, a.device)
    out: dict[str, Any] = {"warm_up": _process_warm_up(a.device)}
    t0 = time.perf_counter()
    op = HessianOperator(model, x, y, hvp=a.hvp, probe_block=a.probe_block)
    # PyHessian's constructor builds the gradient's graph (backward with create_graph); the
    # operator's first product would, so it is built here too: each measure then counts
    # products on both sides, and 'whole' holds the same work either way.
    op.build_gradients()
    out["build"] = time.perf_counter() - t0
    if op.hvp_mode == "forward":
        # A warm-up product outside the measures: torch.func's first call in a process pays
        # one-time set-up a long-lived worker pays once (it is in 'whole', through 'build').
        t0 = time.perf_counter()
        op.matvec(op.theta)
        out["build"] += time.perf_counter() - t0
        op.hvp_seconds, op.hvp_count = 0.0, 0

    def timed(name: str, fn: Any) -> Any:
        """A measure's time, and its products: Hessian-vector products or, for a Gauss-Newton
        trace, output probes (one backward each), with the fraction of time inside them."""
        hvp_s, hvp_n = op.hvp_seconds, op.hvp_count
        gn_s, gn_n = op.gn_seconds, op.gn_count
        _sync(a.device)
        t = time.perf_counter()
        result = fn()
        _sync(a.device)
        seconds = time.perf_counter() - t
        inside = op.hvp_seconds - hvp_s + op.gn_seconds - gn_s
        out[name] = {"seconds": seconds, "hvp_fraction": inside / seconds,
                     "hvps": op.hvp_count - hvp_n + op.gn_count - gn_n,
                     "gn": op.gn_count > gn_n}  # fmt: skip
        return result

    if case == "resnet56":
        eig = timed("top-5", lambda: top_eigenvalues(op, 5, tol=a.tol, max_iter=a.r56_max_iter,
                                                     seed=SEED))  # fmt: skip
        out["top-5"]["values"] = eig.eigenvalues.tolist()
        out["top-5"]["converged"] = eig.converged
    else:
        eig = timed("top-1", lambda: top_eigenvalues(op, 1, which="magnitude", tol=a.tol,
                                                     max_iter=a.max_iter, seed=SEED,
                                                     stop="change"))  # fmt: skip
        out["top-1"]["value"] = float(eig.eigenvalues[0])
        strict = timed("top-1-residual", lambda: top_eigenvalues(
            op, 1, which="magnitude", tol=a.tol, max_iter=a.max_iter, seed=SEED))  # fmt: skip
        out["top-1-residual"]["value"] = float(strict.eigenvalues[0])
        tr = timed("trace", lambda: hutchinson_trace(op, a.probes, seed=SEED))
        out["trace"]["value"], out["trace"]["stderr"] = tr.trace, tr.stderr
        out["trace"]["estimator"] = tr.config["estimator"]
        th = timed("trace-hessian", lambda: hutchinson_trace(op, a.probes, seed=SEED,
                                                             estimator="hessian"))  # fmt: skip
        out["trace-hessian"]["value"], out["trace-hessian"]["stderr"] = th.trace, th.stderr
        pp = timed("trace@se", lambda: hutchpp_trace(op, a.hutchpp_probes, seed=SEED))
        out["trace@se"]["value"], out["trace@se"]["stderr"] = pp.trace, pp.stderr
        timed("density", lambda: spectral_density(op, 1, a.slq_steps, seed=SEED))
    out["peak_rss"] = _peak_rss_bytes()
    out["peak_gpu"] = _peak_gpu_bytes(a.device)
    out["hvp_mode"] = op.hvp_mode
    out["graphs_kept"] = op.keep_graphs
    out["probe_chunk"] = op.probe_chunk
    out["probe_block"] = op.probe_block
    out["batch_size"] = op.batch_size
    return out


def _child_pyhessian(case: str, a: argparse.Namespace) -> dict[str, Any]:
    import importlib

    import numpy as np
    import torch
    from torch import nn

    # torch 2.x removed torch.eig, which PyHessian 0.1's density calls on its symmetric T.
    def eig(t: torch.Tensor, eigenvectors: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        values, vectors = torch.linalg.eigh(t)
        return torch.stack([values, torch.zeros_like(values)], 1), vectors

    torch.eig = eig  # type: ignore[attr-defined]
    # The package's __init__ rebinds `pyhessian.hessian` to the class: fetch the module itself.
    ph = importlib.import_module("pyhessian.hessian")
    clock = {"seconds": 0.0, "count": 0}
    inner = ph.hessian_vector_product

    def timed_hvp(*args: Any) -> Any:
        _sync(a.device)
        t = time.perf_counter()
        result = inner(*args)
        _sync(a.device)
        clock["seconds"] += time.perf_counter() - t
        clock["count"] += 1
        return result

    ph.hessian_vector_product = timed_hvp
    model, x, y = _problem(case, a.samples, a.device)
    torch.manual_seed(SEED)
    out: dict[str, Any] = {"warm_up": _process_warm_up(a.device)}
    t0 = time.perf_counter()
    h = ph.hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=a.device == "cuda")
    _sync(a.device)
    out["build"] = time.perf_counter() - t0

    def timed(name: str, fn: Any) -> Any:
        s0, c0 = clock["seconds"], clock["count"]
        _sync(a.device)
        t = time.perf_counter()
        result = fn()
        _sync(a.device)
        seconds = time.perf_counter() - t
        out[name] = {"seconds": seconds, "hvp_fraction": (clock["seconds"] - s0) / seconds,
                     "hvps": clock["count"] - c0}  # fmt: skip
        return result

    values, _ = timed("top-1", lambda: h.eigenvalues(maxIter=a.max_iter, tol=a.tol, top_n=1))
    out["top-1"]["value"] = float(values[0])
    out["top-1-residual"] = out["top-1"]  # PyHessian has one stop: the same run
    samples = np.asarray(timed("trace", lambda: h.trace(maxIter=a.probes, tol=float("-inf"))))
    out["trace"]["value"] = float(samples.mean())
    out["trace"]["stderr"] = float(samples.std(ddof=1) / np.sqrt(len(samples)))
    out["trace@se"] = out["trace"]  # PyHessian has Hutchinson only: the same run
    out["trace-hessian"] = out["trace"]
    timed("density", lambda: h.density(iter=a.slq_steps, n_v=1))
    out["peak_rss"] = _peak_rss_bytes()
    out["peak_gpu"] = _peak_gpu_bytes(a.device)
    return out


def _run_child(tool: str, case: str, argv: list[str]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", tool, case, *argv],
        capture_output=True, text=True, env=env, cwd=_REPO,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{tool} on {case} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _malloc_text(m: dict[str, Any]) -> str:
    return "tuned (tracker._malloc)" if m.get("malloc") else "glibc defaults"


def _ratio(r: float, target: float) -> str:
    return f"{r:6.2f}x {'PASS' if r >= target else 'MISS'}"


def _fastest(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The first run with each measure (and construction) taken from the run where it was
    fastest, and each measure's spread (slowest / fastest) over the runs."""
    best = dict(runs[0])
    best["build"] = min(r["build"] for r in runs)
    best["warm_up"] = min(r["warm_up"] for r in runs)
    for m in MEASURES + EXTRA:
        times = [r[m]["seconds"] for r in runs]
        best[m] = {**min((r[m] for r in runs), key=lambda x: x["seconds"]),
                   "spread": max(times) / min(times)}  # fmt: skip
    return best


def _per_hvp(m: dict[str, Any]) -> str:
    return f"{1000 * m['seconds'] * m['hvp_fraction'] / max(m['hvps'], 1):.1f}"


def _products(m: dict[str, Any]) -> str:
    return f"{m['hvps']} GN" if m.get("gn") else str(m["hvps"])


LIKE_FOR_LIKE = """
Like for like: the same model, weights, data, loss and one torch thread per tool. top-1: both
stop when the top eigenvalue estimate changes by < tol relative between two products
(PyHessian's power iteration's rule; the tracker's Lanczos with stop='change'), so a gain is
Lanczos converging in fewer products (the HVP column shows both counts). top-1-residual: the
tracker's default, stricter stop (Ritz residual ||H y - theta y|| <= tol * |theta|) against
the same PyHessian run; not in 'whole'. trace: exactly --probes Rademacher probes each, the
tracker's by its default estimator (GN: Gauss-Newton output probes, one backward each, where
the network is piecewise linear; their standard error is printed beside PyHessian's);
trace-hessian: the tracker's probes of the Hessian, PyHessian's estimator, not in 'whole'.
density: exactly --slq-steps Lanczos steps each, one run. trace@se: the tracker's Hutch++ with
--hutchpp-probes products against PyHessian's --probes-probe Hutchinson run; a ratio counts only
where the tracker's standard error is no larger (else the row says SE ours>theirs). 'whole'
adds construction. Each
process first pays a one-time import of the first product (printed as the warm-up), outside
the measures for both tools."""


def _user_path(a: argparse.Namespace) -> None:
    """``--cli``: the tracker's command-line path against a plain PyHessian script."""
    import sqlite3
    import statistics
    import tempfile

    measures = ["--probes", str(a.probes), "--max-iter", str(a.max_iter), "--tol", str(a.tol)]
    with tempfile.TemporaryDirectory(prefix="tracker-curvature-") as tmp:
        home = Path(tmp)
        env = {k: v for k, v in os.environ.items()
               if k not in ("TRACKER_DB_URL", "TRACKER_STORE", "MLFLOW_TRACKING_URI",
                            "PYTHONDONTWRITEBYTECODE")}  # fmt: skip
        env["TRACKER_HOME"] = str(home / ".tracker")

        def launch(*cmd: str) -> tuple[float, str]:
            t = time.perf_counter()
            proc = subprocess.run(cmd, env=env, cwd=home, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
            return time.perf_counter() - t, proc.stdout

        tracker = (sys.executable, "-m", "tracker.cli")
        setup, _ = launch(*tracker, "train", "--arch", "mlp", "--widths", "100,100", "--dataset",
                          "digits", "--epochs", "0", "--name", "m")  # fmt: skip
        print(f"user path (--cli): digits MLP [100, 100] at its seeded initialisation, "
              f"{a.probes} probes, {a.max_iter} Lanczos steps, tol {a.tol}; set-up "
              f"(`tracker train --epochs 0` in a new home) {setup:.2f} s")  # fmt: skip
        ratios = []
        for r in range(max(1, a.repeat)):
            enqueue, _ = launch(*tracker, "enqueue", "hessian", "--model", "m", "--top-k", "1",
                                "--trace", "--density", *measures, "--study", f"cli{r}")  # fmt: skip
            work, _ = launch(*tracker, "work", "--no-progress")
            ours = enqueue + work
            theirs, out = launch(sys.executable, str(_HERE / "plain_hessian.py"), *measures[:2],
                                 "--slq-steps", str(a.max_iter), *measures[2:])  # fmt: skip
            plain = json.loads(out.strip().splitlines()[-1])
            with sqlite3.connect(home / ".tracker" / "tracker.db") as db:
                rows = db.execute(
                    "SELECT h.measure, h.loss_value, h.hvp_count, h.seconds FROM hessian_spectra h "
                    "JOIN studies s ON s.id = h.study_id WHERE s.name = ? ORDER BY h.measure",
                    (f"cli{r}",)).fetchall()  # fmt: skip
            tasks = ", ".join(f"{m} {sec:.2f} s ({n} HVPs)" for m, _, n, sec in rows)
            ratios.append(theirs / ours)
            print(f"  repeat {r + 1}: tracker {ours:.2f} s (enqueue {enqueue:.2f} + work "
                  f"{work:.2f}; tasks: {tasks}), plain PyHessian script {theirs:.2f} s "
                  f"(of which after its start {plain['seconds']:.2f} s); plain/tracker "
                  f"{theirs / ours:.2f}x; losses {rows[0][1]:.6f} / {plain['loss']:.6f}")  # fmt: skip
        print(f"  median plain/tracker: {statistics.median(ratios):.2f}x")


def _gib(b: int) -> str:
    return f"{b / 2**30:.2f} GiB"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="resnet20,digits")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--probes", type=int, default=30)
    p.add_argument("--slq-steps", type=int, default=30)
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--r56-max-iter", type=int, default=40)
    p.add_argument("--r56-samples", type=int, default=None, help="default: --samples")
    p.add_argument(
        "--hvp",
        choices=("auto", "forward", "reverse"),
        default="auto",
        help="the tracker's Hessian-vector product (HessianOperator's hvp)",
    )
    p.add_argument("--hutchpp-probes", type=int, default=30, metavar="M",
                   help="products of the tracker's Hutch++ in the trace@se row")  # fmt: skip
    p.add_argument("--probe-block", type=int, default=None, metavar="B",
                   help="the tracker's probes per reverse product (default: its size rule)")  # fmt: skip
    p.add_argument("--full", action="store_true", help="the issue's sizes (long on CPU)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where both tools compute (cuda: the first GPU; issue 15's >= 3x)")  # fmt: skip
    p.add_argument("--no-resnet56", action="store_true")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per tool, alternating; each measure's fastest counts")  # fmt: skip
    p.add_argument("--cli", action="store_true",
                   help="the user path from command launch: tracker enqueue + work vs a script")  # fmt: skip
    p.add_argument("--same-malloc", action="store_true",
                   help="PyHessian's process gets the tracker's allocator settings too")  # fmt: skip
    p.add_argument("--child", nargs=2, metavar=("TOOL", "CASE"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.full:
        a.samples, a.probes, a.slq_steps, a.max_iter = 512, 100, 100, 100
    if a.quick:
        a.samples, a.probes, a.slq_steps, a.max_iter, a.r56_max_iter = 8, 4, 5, 10, 5
        a.hutchpp_probes = 6
    if a.r56_samples is None:
        a.r56_samples = a.samples
    if a.child:
        import torch

        torch.set_num_threads(1)
        tool, case = a.child
        malloc: dict[str, int] = {}
        if tool == "tracker" or a.same_malloc:
            from tracker._malloc import tune_this_process

            malloc = tune_this_process(1)
        result = (_child_tracker if tool == "tracker" else _child_pyhessian)(case, a)
        result["malloc"] = malloc
        print(json.dumps(result))
        return 0
    if a.cli:
        _user_path(a)
        return 0
    child_argv = ["--samples", str(a.samples), "--probes", str(a.probes), "--slq-steps",
                  str(a.slq_steps), "--tol", str(a.tol), "--max-iter", str(a.max_iter),
                  "--r56-max-iter", str(a.r56_max_iter), "--r56-samples", str(a.r56_samples), "--hvp", a.hvp,
                  "--device", a.device]  # fmt: skip
    child_argv += ["--hutchpp-probes", str(a.hutchpp_probes)]
    if a.same_malloc:
        child_argv.append("--same-malloc")
    if a.probe_block is not None:
        child_argv += ["--probe-block", str(a.probe_block)]
    print(f"curvature benchmark: samples {a.samples} (resnet), probes {a.probes}, SLQ steps "
          f"{a.slq_steps}, tol {a.tol}, max-iter {a.max_iter}, tracker hvp {a.hvp}, "
          f"1 torch thread per tool, device {a.device}")  # fmt: skip
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    if a.quick:
        cases = ["digits-quick" if c == "digits" else c for c in cases]
    rows = []
    for case in cases:
        wall = time.perf_counter()
        ours_runs, theirs_runs = [], []
        for _ in range(max(1, a.repeat)):  # alternating, so a load change hits both tools
            ours_runs.append(_run_child("tracker", case, child_argv))
            theirs_runs.append(_run_child("pyhessian", case, child_argv))
        ours, theirs = _fastest(ours_runs), _fastest(theirs_runs)
        print(f"\n[{case}] ran in {time.perf_counter() - wall:.1f} s; tracker hvp "
              f"{ours['hvp_mode']} (graphs kept: {ours['graphs_kept']}), sample batch "
              f"{ours['batch_size']}, probe chunk {ours['probe_chunk']}, probe block "
              f"{ours['probe_block']}; construction: tracker {ours['build']:.3f} s, pyhessian "
              f"{theirs['build']:.3f} s; process warm-up outside the measures: tracker "
              f"{ours['warm_up']:.3f} s, pyhessian {theirs['warm_up']:.3f} s; allocator: "
              f"tracker {_malloc_text(ours)}, pyhessian {_malloc_text(theirs)}")  # fmt: skip
        print(f"  top-1: tracker {ours['top-1']['value']:.6g} (residual stop "
              f"{ours['top-1-residual']['value']:.6g}), pyhessian "
              f"{theirs['top-1']['value']:.6g}")  # fmt: skip
        print(f"  trace: tracker ({ours['trace']['estimator']} probes) "
              f"{ours['trace']['value']:.6g} +- {ours['trace']['stderr']:.2g}, with Hessian "
              f"probes {ours['trace-hessian']['value']:.6g} +- "
              f"{ours['trace-hessian']['stderr']:.2g}; "
              f"pyhessian {theirs['trace']['value']:.6g} +- {theirs['trace']['stderr']:.2g}; "
              f"tracker Hutch++ ({a.hutchpp_probes} products) {ours['trace@se']['value']:.6g} "
              f"+- {ours['trace@se']['stderr']:.2g}")  # fmt: skip
        rows.append((case, ours, theirs))
    print(LIKE_FOR_LIKE)
    print("\n| case | measure | tracker s | pyhessian s | pyhessian/tracker | products "
          "tracker/pyh | ms per product tracker/pyh | in products tracker/pyh | spread "
          "tracker/pyh |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for case, ours, theirs in rows:
        for m in MEASURES + EXTRA:
            o, t = ours[m], theirs[m]
            verdict = _ratio(t["seconds"] / o["seconds"], TARGET_RATIO[a.device])
            if m == "trace@se" and o["stderr"] > t["stderr"]:  # not at equal error: no claim
                verdict = f"{t['seconds'] / o['seconds']:6.2f}x SE {o['stderr']:.2g}>{t['stderr']:.2g}"
            print(f"| {case} | {m} | {o['seconds']:.3f} | {t['seconds']:.3f} | "
                  f"{verdict} | {_products(o)}/{t['hvps']} | "
                  f"{_per_hvp(o)}/{_per_hvp(t)} | "
                  f"{o['hvp_fraction']:.0%}/{t['hvp_fraction']:.0%} | "
                  f"{o['spread']:.2f}/{t['spread']:.2f} |")  # fmt: skip
        whole_o = ours["build"] + sum(ours[m]["seconds"] for m in MEASURES)
        whole_t = theirs["build"] + sum(theirs[m]["seconds"] for m in MEASURES)
        hvps_o = sum(ours[m]["hvps"] for m in MEASURES)
        hvps_t = sum(theirs[m]["hvps"] for m in MEASURES)
        print(f"| {case} | whole | {whole_o:.3f} | {whole_t:.3f} | {_ratio(whole_t / whole_o, TARGET_RATIO[a.device])} "
              f"| {hvps_o}/{hvps_t} | | | |")  # fmt: skip
    print("\npeak RSS (each tool in its own process):")
    for case, ours, theirs in rows:
        print(f"  {case}: tracker {_gib(ours['peak_rss'])}, pyhessian {_gib(theirs['peak_rss'])}")
        if ours.get("peak_gpu") is not None:
            print(f"  {case} GPU memory (peak allocated): tracker {_gib(ours['peak_gpu'])}, "
                  f"pyhessian {_gib(theirs['peak_gpu'])}")  # fmt: skip
    if not a.no_resnet56:
        r56 = _run_child("tracker", "resnet56", child_argv)
        top5 = r56["top-5"]
        verdict = "PASS" if r56["peak_rss"] < TARGET_R56_GIB * 2**30 else "MISS"
        print(f"\nresnet56 top-5 ({a.r56_samples} samples, sample batch {r56['batch_size']}): {top5['seconds']:.1f} s, {top5['hvps']} "
              f"HVPs ({top5['hvp_fraction']:.0%} of the time), converged {top5['converged']}, "
              f"peak RSS {_gib(r56['peak_rss'])} (target < {TARGET_R56_GIB:.0f} GiB: {verdict})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
