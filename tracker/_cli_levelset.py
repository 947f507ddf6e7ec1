"""Command-line parsers of the level-set method (seed 002). No torch import at module top."""

from __future__ import annotations

import argparse
from typing import Any

from tracker._cliutil import lazy_command

SETUP_NAMES = ("MNIST_FF", "MNIST_CONV", "CIFAR10_CONV", "IRIS_FF", "MPG_FF")
_CMD = "tracker._cmd_levelset"


def _data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--setup", required=True, metavar="NAME",
                   help=f"one of {', '.join(SETUP_NAMES)}")  # fmt: skip
    p.add_argument("--study", default="levelset", help="study label (default: levelset)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the run seeds (run i gets the i-th of a seeded permutation of 0..999)")  # fmt: skip
    p.add_argument("--data-seed", type=int, default=0,
                   help="seed of the train/test split and of the 1000-example subsets")  # fmt: skip
    p.add_argument("--data-root", help="folder of user data (CIFAR-10: ROOT/cifar-10-batches-py)")


def add_parsers(
    *, sub: Any, enqueue: Any, plot: Any, export: Any, common: argparse.ArgumentParser
) -> None:
    """Add `enqueue levelset`, `enqueue l2-baseline` and `plot levelset`."""
    p = enqueue.add_parser("levelset", parents=[common],
                           help="level-set traversals (Tahir & Katz): phase 1 + predictor/corrector")  # fmt: skip
    _data_flags(p)
    p.add_argument("--runs", type=int, default=None, help="runs (default: 5, 10 for MPG_FF)")
    p.add_argument("--max-predictor-steps", type=int, default=None, metavar="N",
                   help="predictor step cap (default: the setup's, 5k-30k)")  # fmt: skip
    p.add_argument("--max-corrector-steps", type=int, default=20_000, metavar="N",
                   help="corrector steps allowed between two predictor steps (default 20000)")  # fmt: skip
    p.add_argument("--phase1-epochs", type=int, default=100,
                   help="Adam epochs before the walk (default 100)")  # fmt: skip
    p.set_defaults(func=lazy_command(_CMD, "cmd_enqueue_levelset"))

    p = enqueue.add_parser("l2-baseline", parents=[common],
                           help="the level-set setup trained with an L2 penalty on kernels")  # fmt: skip
    _data_flags(p)
    p.add_argument("--lambdas", default=None, metavar="L1,L2,...",
                   help="penalty strengths; A,...,B fills in the decades (default 0,1e-6,...,1e6)")  # fmt: skip
    p.add_argument("--runs", type=int, default=15, help="runs per lambda (default 15)")
    p.add_argument("--epochs", type=int, default=None,
                   help="Adam epochs (default: 200 MNIST/CIFAR, 500 IRIS/MPG)")  # fmt: skip
    p.set_defaults(func=lazy_command(_CMD, "cmd_enqueue_l2"))

    p = plot.add_parser("levelset", parents=[common],
                        help="Figure 2 curves, Table 1 (CSV + printed), Figure 7 PCA of snapshots")  # fmt: skip
    p.add_argument(
        "--setup", required=True, metavar="NAME", help=f"one of {', '.join(SETUP_NAMES)}"
    )
    p.add_argument("--study", default="levelset",
                   help="study of the runs (default: levelset; '' for every study)")  # fmt: skip
    p.add_argument("--out", metavar="DIR", help="folder for the files (default TRACKER_HOME/plots)")
    p.set_defaults(func=lazy_command(_CMD, "cmd_plot_levelset"))
