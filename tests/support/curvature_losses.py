"""Per-sample losses written as user code (``module:fn``), for the curvature tests."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def smooth_l1(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Huber-like loss of each sample's logits against one-hot targets (twice differentiable
    away from |d| = 1; the tests' values stay inside)."""
    d = out - F.one_hot(y, out.shape[1]).to(out.dtype)
    return (d.square() / 2).sum(1)


def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y, reduction="none")


def summed(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Wrong on purpose: one number for the batch, not one per sample."""
    return F.cross_entropy(out, y)
