"""Exact references for the curvature tests."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F


def exact_cross_entropy_hessian(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """The Hessian of the mean cross-entropy of ``net`` on (x, y) in its flat parameters, by
    vectorised autograd (in the network's dtype: float64 for a reference)."""
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for _, p in net.named_parameters()])

    def loss(theta: torch.Tensor) -> torch.Tensor:
        parts = theta.split([math.prod(s) for s in shapes])
        params = {n: t.view(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        return F.cross_entropy(functional_call(net, params, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat, vectorize=True).numpy()
