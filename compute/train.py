"""Training one model: seeded data order, SGD or Adam, a step schedule, checkpoints, metrics.

The loop is a plain function of a :class:`TrainSpec`, so `tracker train` (foreground) and the
``train`` task kind (workers) run the same code. Checkpoints are flat state vectors (see
``compute.state``) handed to a callback; metrics of every epoch go to another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from compute import data as data_mod
from compute import models as models_mod
from compute.state import Layout, flatten_state, layout_of
from tracker import SpecError

EVAL_BATCH = 2048


@dataclass(frozen=True)
class TrainSpec:
    architecture: str
    arch_config: dict[str, Any]
    dataset: str
    dataset_config: dict[str, Any]
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    epochs: int
    seed: int
    label_corruption: float = 0.0
    lr_schedule: dict[str, Any] = field(default_factory=dict)
    checkpoint_epochs: tuple[int, ...] = ()

    @classmethod
    def from_row(cls, model: Any) -> TrainSpec:
        cfg = model.config or {}
        return cls(
            architecture=model.architecture,
            arch_config=dict(model.arch_config or {}),
            dataset=model.dataset,
            dataset_config=dict(model.dataset_config or {}),
            optimizer=model.optimizer,
            lr=model.lr,
            momentum=model.momentum,
            weight_decay=model.weight_decay,
            batch_size=model.batch_size,
            epochs=model.epochs,
            seed=model.seed,
            label_corruption=model.label_corruption,
            lr_schedule=dict(model.lr_schedule or {}),
            checkpoint_epochs=tuple(cfg.get("checkpoint_epochs", ())),
        )

    def load_data(self) -> data_mod.Dataset:
        return data_mod.load_configured(self.dataset, self.dataset_config, self.label_corruption)

    def build(self, ds: data_mod.Dataset) -> nn.Module:
        return models_mod.build_model(
            self.architecture,
            self.arch_config,
            input_shape=ds.input_shape,
            num_classes=ds.num_classes,
            seed=self.seed,
        )


def loss_fn(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if task == "regression":
        return lambda out, y: F.mse_loss(out, y)
    return lambda out, y: F.cross_entropy(out, y)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, device: torch.device
) -> tuple[float, float]:
    """Mean loss and accuracy (fraction; NaN for regression) of ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    total_loss, correct, n = 0.0, 0, int(x.shape[0])
    for start in range(0, n, EVAL_BATCH):
        xb = x[start : start + EVAL_BATCH].to(device)
        yb = y[start : start + EVAL_BATCH].to(device)
        out = model(xb)
        if task == "regression":
            total_loss += float(F.mse_loss(out, yb, reduction="sum")) / max(out.shape[-1], 1)
        else:
            total_loss += float(F.cross_entropy(out, yb, reduction="sum"))
            correct += int((out.argmax(1) == yb).sum())
    model.train(was_training)
    acc = float("nan") if task == "regression" else correct / max(n, 1)
    return total_loss / max(n, 1), acc


def make_optimizer(spec: TrainSpec, model: nn.Module) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
        )
    if spec.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    raise SpecError(f"unknown optimizer {spec.optimizer!r}: use sgd or adam")


def lr_at(spec: TrainSpec, epoch: int) -> float:
    """The learning rate of ``epoch`` (0-based) under the step schedule."""
    milestones = sorted(int(m) for m in spec.lr_schedule.get("milestones", []))
    gamma = float(spec.lr_schedule.get("gamma", 0.1))
    return spec.lr * gamma ** sum(1 for m in milestones if epoch >= m)


def epoch_metrics(model: nn.Module, ds: data_mod.Dataset, device: torch.device) -> dict[str, float]:
    out: dict[str, float] = {}
    for split in ("train", "val", "test"):
        if split == "val" and ds.val_x is None:
            continue
        x, y = ds.split(split)
        loss, acc = evaluate(model, x, y, ds.task, device)
        out[f"{split}_loss"], out[f"{split}_acc"] = loss, acc
    return out


def train(
    spec: TrainSpec,
    *,
    device: torch.device | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    on_checkpoint: Callable[[int, np.ndarray, Layout, dict[str, float]], None] | None = None,
    should_stop: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Train ``spec`` from its seed; return the final metrics.

    ``on_epoch(epoch, metrics)`` sees the metrics after every epoch (epoch 0 = before any
    step); ``on_checkpoint(epoch, flat_state, layout, metrics)`` the checkpoints listed in
    ``spec.checkpoint_epochs`` (the final epoch always is one). ``should_stop`` may raise to
    abandon the run (a lost lease).
    """
    device = device or torch.device("cpu")
    ds = spec.load_data()
    model = spec.build(ds).to(device)
    layout = layout_of(model)
    opt = make_optimizer(spec, model)
    criterion = loss_fn(ds.task)
    keep = set(spec.checkpoint_epochs) | {spec.epochs}
    order_gen = torch.Generator().manual_seed(spec.seed)
    aug_gen = torch.Generator().manual_seed(spec.seed + 1)
    x_train, y_train = ds.split("train")
    x_train, y_train = x_train.to(device), y_train.to(device)
    n = int(x_train.shape[0])
    if spec.batch_size < 1:
        raise SpecError(f"batch size must be at least 1, got {spec.batch_size}")

    def report(epoch: int) -> dict[str, float]:
        metrics = epoch_metrics(model, ds, device)
        if on_epoch is not None:
            on_epoch(epoch, {**metrics, "lr": lr_at(spec, max(epoch - 1, 0))})
        if epoch in keep and on_checkpoint is not None:
            on_checkpoint(epoch, flatten_state(model, layout).numpy(), layout, metrics)
        return metrics

    metrics = report(0)
    for epoch in range(1, spec.epochs + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at(spec, epoch - 1)
        model.train()
        perm = torch.randperm(n, generator=order_gen).to(device)
        for start in range(0, n, spec.batch_size):
            idx = perm[start : start + spec.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            if ds.augment:
                xb = ds.augment_batch(xb, aug_gen)
            opt.zero_grad(set_to_none=True)
            loss = criterion(model(xb), yb)
            loss.backward()
            opt.step()
        if should_stop is not None:
            should_stop()
        metrics = report(epoch)
    return metrics
