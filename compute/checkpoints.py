"""Checkpoint files written by other code, read into a network's flat state.

The shapes people have: a plain ``torch.save(model.state_dict())``; a dict holding it under
``state_dict``, ``model``, ``model_state_dict`` or ``net`` (Goldstein's VGG-9 and ResNet-56
``.t7``/``.pth`` files, training scripts that save the optimiser too); keys with the
``module.`` prefix of ``nn.DataParallel``; and ``.safetensors`` files (when the safetensors
package is installed). Files are read with ``weights_only=True``: a checkpoint is data, and a
pickled object in it would run code, so a file that needs that is refused with the fix.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compute.state import Layout, flatten_state, layout_of
from tracker import NotFound, SpecError

STATE_KEYS = ("state_dict", "model_state_dict", "model", "net")
SHOWN = 3  # keys listed in a mismatch message


def safetensors_available() -> bool:
    return importlib.util.find_spec("safetensors") is not None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of the checkpoint file at ``path``, unwrapped and without ``module.``."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"checkpoint {path} does not exist: give the path of a saved state_dict")
    if path.suffix == ".safetensors":
        if not safetensors_available():
            raise SpecError(f"{path} is a safetensors file and the safetensors package is not installed: pip install safetensors")  # fmt: skip
        from safetensors.torch import load_file

        try:
            raw: Any = load_file(str(path), device="cpu")
        except Exception as err:
            raise SpecError(f"{path} cannot be read as safetensors ({type(err).__name__}): save it with safetensors.torch.save_file") from None  # fmt: skip
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            if "Unsupported global" in str(err):
                raise SpecError(
                    f"{path} holds pickled Python objects besides tensors: save "
                    "model.state_dict() (torch.save(model.state_dict(), file)) and import that"
                ) from None
            raise SpecError(f"{path} is not a PyTorch checkpoint ({type(err).__name__}): give a torch.save or .safetensors file") from None  # fmt: skip
    return _strip_parallel(_unwrap(raw, path))


def _unwrap(raw: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(raw, Mapping) and raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        return {str(k): v for k, v in raw.items()}
    if isinstance(raw, Mapping):
        for key in STATE_KEYS:
            inner = raw.get(key)
            if isinstance(inner, Mapping):
                return _unwrap(inner, path)
        keys = ", ".join(sorted(str(k) for k in raw)[:6])
        raise SpecError(
            f"{path} is a dict without a state_dict (keys: {keys}): save model.state_dict(), "
            f"or a dict holding it under one of {', '.join(STATE_KEYS)}"
        )
    raise SpecError(f"{path} holds a {type(raw).__name__}, not a state_dict: save model.state_dict()")  # fmt: skip


def _strip_parallel(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys saved from ``nn.DataParallel`` / DDP lose their ``module.`` prefix."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def fit_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> tuple[torch.Tensor, Layout]:  # fmt: skip
    """Load ``state`` into ``model`` and return its flat state and layout; one SpecError line
    listing the first missing and unexpected keys, or the first shape that differs."""
    expected = model.state_dict()
    # Integer counters (BatchNorm's num_batches_tracked) change nothing computed: optional.
    required = {k for k, v in expected.items() if torch.is_floating_point(v)}
    missing = sorted(required - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_first(unexpected)}")
        raise SpecError(f"{source} does not fit the architecture: {'; '.join(parts)}: import it with the architecture and --arch-config it was saved from")  # fmt: skip
    for name in expected:
        if name in state and tuple(state[name].shape) != tuple(expected[name].shape):
            raise SpecError(
                f"{source} does not fit the architecture: {name} has shape "
                f"{list(state[name].shape)} in the file, {list(expected[name].shape)} in the "
                "model: import it with the --arch-config it was saved from"
            )
    loadable = {k: v for k, v in state.items() if k in expected}
    model.load_state_dict(loadable, strict=False)
    layout = layout_of(model)
    flat = flatten_state(model, layout)
    if not bool(torch.isfinite(flat).all()):
        raise SpecError(f"{source} contains NaN or infinite weights: import a finite checkpoint")
    return flat, layout


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN])
    return shown + (f" (+{len(keys) - SHOWN} more)" if len(keys) > SHOWN else "")
