"""The baseline of the user-path figure in benchmarks/startup.py: a plain torch script.

It does what a loss-landscapes-style script does for one 2D surface, start to finish: import
torch, load digits (the same seeded 80/20 train split as `--dataset digits`), build the digits
MLP (64 -> widths -> 10), draw two filter-normalised random directions (biases left out), and
evaluate the loss and accuracy of one forward over the whole train split at each point of a
N x N grid, writing each point's weights into the model in place. Nothing is stored.

    python benchmarks/plain_surface.py [--n 51] [--widths 64,64] [--seed 0]
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import gzip  # noqa: E402
import itertools  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

# `python benchmarks/plain_surface.py` puts benchmarks/ first on sys.path, where queue.py
# would shadow the standard library's `queue` (which torch imports).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402


def load_digits_train(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits CSV shipped in scikit-learn, pixels / 16, a seeded 80/20 split's train part."""
    import sklearn.datasets

    path = sklearn.datasets.__path__[0] + "/data/digits.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    x, y = table[:, :-1] / 16.0, table[:, -1].astype(np.int64)
    # The tracker's split: a permutation from the seed's stream 0, its first 20% the test rows.
    order = np.random.default_rng([seed, 0]).permutation(len(x))
    train = order[round(0.2 * len(x)) :]
    return torch.from_numpy(x[train]), torch.from_numpy(y[train])


def mlp(widths: list[int]) -> nn.Sequential:
    dims = [64, *widths, 10]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


def filter_normalised(params: list[torch.Tensor], gen: torch.Generator) -> list[torch.Tensor]:
    """A random direction scaled row by row to its weight's norms; zero for biases."""
    out = []
    for w in params:
        if w.dim() <= 1:
            out.append(torch.zeros_like(w))
            continue
        d = torch.randn(w.shape, generator=gen)
        d *= w.norm(dim=1, keepdim=True) / d.norm(dim=1, keepdim=True).clamp_min(1e-10)
        out.append(d)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=51)
    ap.add_argument("--widths", default="64,64")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    x, y = load_digits_train()
    model = mlp([int(w) for w in args.widths.split(",")]).eval()
    params = list(model.parameters())
    centre = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(args.seed)
    dx, dy = filter_normalised(centre, gen), filter_normalised(centre, gen)
    coords = torch.linspace(-1.0, 1.0, args.n).tolist()
    loss = np.empty((args.n, args.n))
    acc = np.empty((args.n, args.n))
    loss_fn = nn.CrossEntropyLoss()
    with torch.no_grad():
        for i, a in enumerate(coords):
            for j, b in enumerate(coords):
                for p, c, u, v in zip(params, centre, dx, dy, strict=True):
                    p.copy_(c + a * u + b * v)
                out = model(x)
                loss[i, j] = loss_fn(out, y).item()
                acc[i, j] = (out.argmax(1) == y).float().mean().item()
    print(f"plain surface: {args.n}x{args.n} points, loss min {loss.min():.4f} "
          f"max {loss.max():.4f}, {time.perf_counter() - T0:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
