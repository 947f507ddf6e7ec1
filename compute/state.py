"""A model's state as one flat float32 vector, and the layout that maps it back to tensors.

Checkpoints, directions and the surface engine all use this one layout so that a point of a
surface is ``centre + a * d1 + b * d2`` on plain vectors. The layout lists every floating-point
entry of ``model.state_dict()`` in its order; each entry says whether it is a trainable
parameter or a buffer (BatchNorm running statistics). Integer buffers
(``num_batches_tracked``) are left out: they do not change what the network computes.

A layout is JSON (a list of dicts), so it is stored as is on checkpoint rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from tracker import SpecError

Layout = list[dict[str, Any]]


def layout_of(model: nn.Module) -> Layout:
    """The flat layout of ``model``: name, shape, kind ('param' or 'buffer'), offset, size."""
    params = {name for name, _ in model.named_parameters()}
    layout: Layout = []
    offset = 0
    for name, tensor in model.state_dict().items():
        if not torch.is_floating_point(tensor):
            continue
        size = int(tensor.numel())
        layout.append(
            {
                "name": name,
                "shape": list(tensor.shape),
                "kind": "param" if name in params else "buffer",
                "offset": offset,
                "size": size,
            }
        )
        offset += size
    return layout


def layout_size(layout: Layout) -> int:
    return sum(int(e["size"]) for e in layout)


def flatten_state(source: nn.Module | Mapping[str, torch.Tensor], layout: Layout) -> torch.Tensor:
    """The float32 CPU vector of ``source``'s entries in ``layout`` order."""
    state = source.state_dict() if isinstance(source, nn.Module) else source
    parts = []
    for entry in layout:
        tensor = state.get(entry["name"])
        if tensor is None:
            raise SpecError(f"state has no entry {entry['name']!r}: the layouts differ")
        parts.append(tensor.detach().reshape(-1).to("cpu", torch.float32))
    return torch.cat(parts) if parts else torch.zeros(0)


def unflatten(flat: torch.Tensor | np.ndarray, layout: Layout) -> dict[str, torch.Tensor]:
    """Views of ``flat`` shaped like the layout's tensors, by name."""
    vec = torch.as_tensor(flat)
    check_length(vec, layout)
    return {e["name"]: vec[e["offset"] : e["offset"] + e["size"]].view(e["shape"]) for e in layout}


def load_flat(model: nn.Module, flat: torch.Tensor | np.ndarray, layout: Layout) -> None:
    """Copy ``flat`` into the model's parameters and floating buffers, in place."""
    pieces = unflatten(flat, layout)
    state = model.state_dict()
    with torch.no_grad():
        for name, piece in pieces.items():
            target = state[name]
            target.copy_(piece.to(device=target.device, dtype=target.dtype))


def check_length(vec: torch.Tensor | np.ndarray, layout: Layout) -> None:
    expected = layout_size(layout)
    if int(vec.shape[-1]) != expected:
        raise SpecError(
            f"a state vector of length {int(vec.shape[-1])} does not fit a layout of "
            f"{expected} values: the checkpoint and direction come from different architectures"
        )


def same_layout(a: Layout, b: Layout) -> bool:
    """Whether two layouts describe the same tensors (names, shapes and kinds)."""
    key = [(e["name"], list(e["shape"]), e["kind"]) for e in a]
    return key == [(e["name"], list(e["shape"]), e["kind"]) for e in b]


def mask(layout: Layout, *, target: str = "weights", ignore: str = "none") -> torch.Tensor:
    """A 0/1 float32 vector selecting the entries a direction may move.

    ``target='weights'`` keeps parameters only (running statistics stay the centre's);
    ``'states'`` keeps buffers too. ``ignore='biasbn'`` drops tensors with at most one
    dimension (biases, BatchNorm weights and biases, and the running statistics).
    """
    out = torch.zeros(layout_size(layout))
    for e in layout:
        if e["kind"] == "buffer" and target != "states":
            continue
        if ignore == "biasbn" and len(e["shape"]) <= 1:
            continue
        out[e["offset"] : e["offset"] + e["size"]] = 1.0
    return out


def describe(layout: Layout) -> str:
    n_params = sum(e["size"] for e in layout if e["kind"] == "param")
    n_buffers = sum(e["size"] for e in layout if e["kind"] == "buffer")
    return f"{len(layout)} tensors, {n_params:,} parameters, {n_buffers:,} buffer values"


def numel(shape: list[int]) -> int:
    return int(math.prod(shape)) if shape else 1
