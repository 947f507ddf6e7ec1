"""Flags of the loss-surface commands (kept apart so `tracker --help` stays light)."""

from __future__ import annotations

import argparse


def add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", default="default", help="study label (default: default)")
    p.add_argument("--name", help="a label for the model")
    p.add_argument("--arch", required=True, help="architecture (mlp, cnn, resnet20, ...)")
    p.add_argument("--arch-config", default="{}", metavar="JSON",
                   help='architecture options as JSON, e.g. \'{"widths": [64, 64]}\'')  # fmt: skip
    p.add_argument("--widths", help="MLP hidden widths, e.g. 64,64")
    p.add_argument("--activation", help="MLP activation: relu, tanh or sigmoid")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-root", help="folder of data sets that need files (mnist, cifar10)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the train/test split")
    p.add_argument("--augment", action="store_true", help="CIFAR augmentation (crop + flip)")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label-corruption", type=float, default=0.0, metavar="P")
    p.add_argument("--lr-milestones", default="", metavar="E1,E2",
                   help="epochs at which the learning rate is multiplied by --lr-gamma")  # fmt: skip
    p.add_argument("--lr-gamma", type=float, default=0.1)
    p.add_argument("--checkpoints", default="0", metavar="E1,E2,...",
                   help="epochs whose weights are kept (the last always is; default 0)")  # fmt: skip


def add_surface_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", help="study label (default: the model's study)")
    p.add_argument("--model", metavar="ID", help="centre model (id or name)")
    p.add_argument("--epoch", type=int, default=None,
                   help="centre checkpoint epoch (default: the last)")  # fmt: skip
    p.add_argument("--interpolate", nargs=2, metavar=("A", "B"),
                   help="the line theta_A + x (theta_B - theta_A) between two models")  # fmt: skip
    p.add_argument("--pca", action="store_true",
                   help="the plane of the first two PCA directions of the model's checkpoints")  # fmt: skip
    p.add_argument("--x", required=True, metavar="MIN:MAX:N", help="x grid, e.g. -1:1:51")
    p.add_argument("--y", metavar="MIN:MAX:N", help="y grid for a 2D surface")
    p.add_argument("--seed", type=int, default=0, help="seed of the x direction (default 0)")
    p.add_argument("--y-seed", type=int, default=None, help="seed of the y direction (default seed+1)")  # fmt: skip
    p.add_argument("--norm", default="filter", choices=["filter", "layer", "model", "none"])
    p.add_argument("--ignore", default="biasbn", choices=["biasbn", "none"])
    p.add_argument("--target", default=None, choices=["weights", "states"],
                   help="what directions move: weights, or states (BN statistics too; default "
                   "weights, states for --interpolate)")  # fmt: skip
    p.add_argument("--split", default="train", choices=["train", "test", "val"])
    p.add_argument("--subset", type=int, default=None, metavar="N",
                   help="evaluate on a fixed seeded subset of N samples")  # fmt: skip
    p.add_argument("--minibatches", type=int, default=None, metavar="K",
                   help="one grid per minibatch: the first K minibatches of the split")  # fmt: skip
    p.add_argument("--minibatch-size", type=int, default=None, metavar="B")
    p.add_argument("--bn", default="eval", choices=["eval", "train"],
                   help="BatchNorm: stored running statistics (eval) or batch statistics (train)")  # fmt: skip
    p.add_argument("--metrics", default="loss,acc", help="loss and/or acc (default loss,acc)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"],
                   help="reduced precision on GPU workers (opt-in; CPU workers use fp32)")  # fmt: skip
    p.add_argument("--tile", metavar="NXxNY", help="points per tile task (default 16x16; 32 in 1D)")
