"""The baseline of benchmarks/curvature.py's user path (``--cli``): a plain PyHessian script.

What a PyHessian user runs for one model, start to finish: import torch and PyHessian, load
digits (the seeded 80/20 train split of `--dataset digits`), build the digits MLP (64 ->
widths -> 10, ReLU) from ``torch.manual_seed(seed)`` (the tracker's `--train-seed` init, so
the weights are the same), then the top eigenvalue (power iteration, ``maxIter``, ``tol``), the
trace (exactly ``--probes`` Hutchinson probes) and the density (``--slq-steps`` Lanczos
steps, one run) on the whole train split. Prints one JSON line: the loss, the three results
and the seconds since the interpreter started.

    python benchmarks/plain_hessian.py [--widths 100,100] [--probes 100] [--slq-steps 100]
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.plain_surface import load_digits_train, mlp  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="100,100")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probes", type=int, default=100)
    p.add_argument("--slq-steps", type=int, default=100)
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--tol", type=float, default=1e-3)
    a = p.parse_args()
    # torch 2.x removed torch.eig, which PyHessian 0.1's density calls on its symmetric T.
    torch.eig = lambda t, eigenvectors=True: (  # type: ignore[attr-defined]
        torch.stack([torch.linalg.eigvalsh(t), torch.zeros(len(t))], 1), torch.linalg.eigh(t)[1])
    ph = importlib.import_module("pyhessian.hessian")
    x, y = load_digits_train()
    torch.manual_seed(a.seed)
    model = mlp([int(w) for w in a.widths.split(",")]).eval()
    with torch.no_grad():
        loss = float(nn.functional.cross_entropy(model(x), y))
    h = ph.hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False)
    top, _ = h.eigenvalues(maxIter=a.max_iter, tol=a.tol, top_n=1)
    trace = np.asarray(h.trace(maxIter=a.probes, tol=float("-inf")))
    nodes, _ = h.density(iter=a.slq_steps, n_v=1)
    print(json.dumps({"loss": loss, "top_eigenvalue": float(top[0]), "trace": float(trace.mean()),
                      "trace_stderr": float(trace.std(ddof=1) / np.sqrt(len(trace))),
                      "density_nodes": len(nodes[0]), "seconds": time.perf_counter() - T0}))  # fmt: skip


if __name__ == "__main__":
    main()
