"""Command-line parsers of jump-and-retrain topology. No torch import at module top."""

from __future__ import annotations

import argparse
from typing import Any

_CMD = "tracker._cmd_retrain"


def add_parsers(
    *, sub: Any, enqueue: Any, plot: Any, export: Any, common: argparse.ArgumentParser
) -> None:
    """Add `enqueue retrain`, `enqueue topology`, `plot embedding` and `plot persistence`."""
    from tracker._cliutil import lazy_command

    p = enqueue.add_parser(
        "retrain", parents=[common],
        help="jump from a trained model along seeded filter-normalised directions and retrain "
        "(one task per seed x step size)",
    )  # fmt: skip
    p.add_argument("--model", required=True, help="model id or name")
    p.add_argument("--seeds", default="0-3", help="direction seeds: 0-3 or 0,1,5 (default 0-3)")
    p.add_argument("--steps", default="0.25,0.5,0.75,1.0", help="step sizes s > 0 (default 0.25,0.5,0.75,1.0)")  # fmt: skip
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=0.001, help="constant learning rate")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--saves-per-epoch", type=int, default=1)
    p.add_argument("--augment", action="store_true", help="crop + flip (cifar10)")
    p.add_argument("--epoch", type=int, default=None, help="base checkpoint (default: final)")
    p.add_argument("--study", help="study of the new rows (default: the model's)")
    p.set_defaults(func=lazy_command(_CMD, "cmd_enqueue_retrain"))

    p = enqueue.add_parser(
        "topology", parents=[common],
        help="PHATE embedding of a model's finished retrains and the persistence of a loss over it",
    )  # fmt: skip
    p.add_argument("--model", required=True, help="model id or name")
    p.add_argument("--loss", default="test", help="per-sample loss of the filtration: test, train or val")  # fmt: skip
    p.add_argument("--knn", type=int, default=20, help="neighbours per sample (default 20)")
    p.add_argument("--phate-seed", type=int, default=0)
    p.add_argument("--n-pca", type=int, default=100, help="PCA components fed to PHATE")
    p.add_argument("--legacy", action="store_true",
                   help="link each sample to its k farthest samples, as the published code did")  # fmt: skip
    p.add_argument("--study", help="study of the new rows (default: the model's)")
    p.set_defaults(func=lazy_command(_CMD, "cmd_enqueue_topology"))

    p = plot.add_parser("embedding", parents=[common],
                        help="PHATE scatter coloured by loss, step size and seed")  # fmt: skip
    p.add_argument("id", type=int, metavar="EMBEDDING_ID")
    p.add_argument("--loss", default="test", help="loss for the colours (default test)")
    p.add_argument("--out", metavar="DIR", help="folder for the files (default TRACKER_HOME/plots)")
    p.set_defaults(func=lazy_command(_CMD, "cmd_plot_embedding"))

    p = plot.add_parser("persistence", parents=[common], help="persistence diagram and barcode")
    p.add_argument("id", type=int, metavar="DIAGRAM_ID")
    p.add_argument("--out", metavar="DIR", help="folder for the files (default TRACKER_HOME/plots)")
    p.set_defaults(func=lazy_command(_CMD, "cmd_plot_persistence"))
