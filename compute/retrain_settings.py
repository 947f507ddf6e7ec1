"""Checks of jump-and-retrain settings, apart from ``compute.retrain`` so that checking a
request (`tracker enqueue retrain`, a study file) imports no torch and answers at once."""

from __future__ import annotations

import math

from tracker import SpecError


def check_retrain_settings(
    *, seed: int, step_size: float, epochs: int, lr: float, momentum: float,
    weight_decay: float, batch_size: int, saves_per_epoch: int, augment: bool = False,
) -> None:  # fmt: skip
    """Refuse retrain settings that cannot run, with the fix in the message."""
    del augment  # checked against the data set by the request
    if not (math.isfinite(step_size) and step_size > 0):
        raise SpecError(f"step size {step_size:g} is not positive: every step size must be > 0 (e.g. 0.25,0.5)")  # fmt: skip
    if not (math.isfinite(lr) and lr > 0):
        raise SpecError(f"lr must be positive, got {lr:g}")
    if not (momentum >= 0 and weight_decay >= 0):
        raise SpecError("momentum and weight decay must not be negative")
    if epochs < 1:
        raise SpecError(f"epochs must be at least 1, got {epochs}")
    if batch_size < 1:
        raise SpecError(f"batch size must be at least 1, got {batch_size}")
    if saves_per_epoch < 1:
        raise SpecError(f"saves per epoch must be at least 1, got {saves_per_epoch}")
    if seed < 0:
        raise SpecError(f"seeds must not be negative, got {seed}")
