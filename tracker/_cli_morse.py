"""Command-line parsers of DOODL3 ensembles and Morse graphs. No torch import at module top."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(
    *, sub: Any, enqueue: Any, plot: Any, export: Any, common: argparse.ArgumentParser
) -> None:
    """Add this method's commands to the `tracker` parser."""
    from tracker._cliutil import lazy_command

    def cmd(name: str) -> Any:
        return lazy_command("tracker._cmd_morse", name)

    p = enqueue.add_parser(
        "ensemble", parents=[common],
        help="DOODL3: train many small models (early and final weights kept per model)",
    )  # fmt: skip
    p.add_argument("--setup", required=True, metavar="SETUP",
                   help="doodl3-iris (9-parameter softmax layer) or doodl3-mnist (58-parameter "
                   "conv net on 0 vs 1)")  # fmt: skip
    p.add_argument("--models", type=int, default=100, help="ensemble size (default 100)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per model (default: iris 150; mnist 100, as many Adam steps as "
                   "DOODL3's 8 epochs on full MNIST)")  # fmt: skip
    p.add_argument("--early-epoch", type=int, default=2,
                   help="the early checkpoint: weights after this many epochs (default 2, "
                   "Keras's epoch index 1)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=None, help="default: iris 5, mnist 128")
    p.add_argument("--seed", type=int, default=0, help="initialisation and minibatch seed")
    p.add_argument("--data-seed", type=int, default=0, help="train/test split seed")
    p.add_argument("--chunk", type=int, default=50, help="models per training task (default 50)")
    p.add_argument("--study", default="doodl3")
    p.set_defaults(func=cmd("cmd_enqueue_ensemble"))

    p = enqueue.add_parser(
        "morse", parents=[common],
        help="the Morse graph of a finished ensemble's early -> final map (GP + CMGDB)",
    )  # fmt: skip
    p.add_argument("--ensemble", type=int, required=True, metavar="ID")
    p.add_argument("--pick", default="max-variance",
                   help="the two kernel weights whose final values vary most (max-variance, "
                   "default) or least (min-variance) across models")  # fmt: skip
    p.add_argument("--subdiv", type=int, default=15, help="2**SUBDIV boxes (default 15)")
    p.add_argument("--seed", type=int, default=0, help="the Gaussian process's random_state")
    p.add_argument("--no-conley", action="store_true", help="skip the Conley indices")
    p.add_argument("--force", action="store_true", help="allow a subdivision above 18")
    p.set_defaults(func=cmd("cmd_enqueue_morse"))

    p = plot.add_parser(
        "morse", parents=[common],
        help="Morse graph (Graphviz), Morse sets and order retraction with the ensemble, "
        "violins of accuracy and entropy per node",
    )  # fmt: skip
    p.add_argument("ids", nargs="+", type=int, metavar="MORSE_ID")
    p.add_argument("--out", metavar="DIR", help="folder for the files (default TRACKER_HOME/plots)")
    p.set_defaults(func=cmd("cmd_plot_morse"))

    show = _show_parser(sub)
    if show is not None:
        p = show.add_parser("morse", parents=[common], help="a Morse graph: nodes, edges, GP")
        p.add_argument("id", type=int, metavar="MORSE_ID")
        p.set_defaults(func=cmd("cmd_show_morse"))


def _show_parser(sub: Any) -> Any:
    """The `tracker show` sub-command group, if the parser has one."""
    show = sub.choices.get("show")
    if show is None:
        return None
    for action in show._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None
