"""The parameters of DOODL3's setups: names, shapes, which are kernels, their initialisation; no
torch import, so `tracker enqueue ensemble` validates and names parameters without loading torch.

``doodl3-iris-layers-2`` is the notebooks' ``iris_layers_2``: Dense(3, softmax) on the two petal
features, then Dense(3, softmax); Keras initialises the first kernel U(-2, 2) (as set) and the
second with its default Glorot uniform, U(-1, 1) for 3 -> 3.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tracker._exceptions import SpecError

SETUPS = ("doodl3-iris", "doodl3-iris-layers-2", "doodl3-mnist")
DEFAULTS: dict[str, dict[str, Any]] = {
    # Figure 3 of the paper is iris_epoch_450: 450 epochs (the notebooks' baseline had 150).
    "doodl3-iris": {"batch_size": 5, "epochs": 450},
    "doodl3-iris-layers-2": {"batch_size": 5, "epochs": 150},
    # DOODL3's 8 epochs of 12,665 images are ~790 Adam steps; mnist5k's 900 training images
    # need ~100 epochs for as many (with 8 epochs the models barely move: accuracy ~0.5).
    "doodl3-mnist": {"batch_size": 128, "epochs": 100},
}
INIT_LIMIT = 2.0  # kernels start in U(-2, 2), unless Keras's default initialiser was kept
LR, EPS = 1e-3, 1e-7  # Keras's Adam defaults


def param_layout(setup: str) -> list[tuple[str, tuple[int, ...], bool]]:
    """(name, shape, is_kernel) of each parameter tensor, in Keras order."""
    if setup == "doodl3-iris":
        return [("dense_kernel", (2, 3), True), ("dense_bias", (3,), False)]
    if setup == "doodl3-iris-layers-2":
        return [("dense_kernel", (2, 3), True), ("dense_bias", (3,), False),
                ("dense_1_kernel", (3, 3), True), ("dense_1_bias", (3,), False)]  # fmt: skip
    if setup == "doodl3-mnist":
        return [("conv_kernel", (3, 3, 1, 2), True), ("conv_bias", (2,), False),
                ("dense_kernel", (18, 2), True), ("dense_bias", (2,), False)]  # fmt: skip
    raise SpecError(f"unknown setup {setup!r}: use one of {', '.join(SETUPS)}")


def init_limit(setup: str, name: str) -> float:
    """The bound of a kernel's uniform initialisation: U(-2, 2) where DOODL3 set it, Keras's
    Glorot uniform sqrt(6 / (fan_in + fan_out)) where it kept the default."""
    if setup == "doodl3-iris-layers-2" and name == "dense_1_kernel":
        return float(np.sqrt(6.0 / (3 + 3)))
    return INIT_LIMIT


def param_names(setup: str) -> list[str]:
    """One name per scalar parameter, e.g. ``dense_kernel_0_3``."""
    names: list[str] = []
    for name, shape, _ in param_layout(setup):
        for idx in np.ndindex(*shape):
            names.append(name + "_" + "_".join(str(i) for i in idx))
    return names


def kernel_columns(setup: str) -> list[int]:
    """Flat indices of the kernel weights (the Morse graph's candidate axes)."""
    out: list[int] = []
    start = 0
    for _, shape, is_kernel in param_layout(setup):
        size = int(np.prod(shape))
        if is_kernel:
            out.extend(range(start, start + size))
        start += size
    return out
