"""Jump and retrain (Horoi et al. 2022): leave a trained optimum along a random direction, then
retrain at a constant learning rate and record where the optimiser goes.

The jump is ``theta0 = theta* + s * d`` with ``d`` the seed's filter-normalised random
direction over the weights (biases and BatchNorm parameters zeroed, running statistics
unchanged; see ``compute.directions``). Retraining is SGD with momentum and weight decay at a
constant rate; the seed also orders the data (``torch.Generator(seed)``) and, with
augmentation, draws the crops and flips (``torch.Generator(seed + AUGMENT_STREAM)``).

Save points: save 0 is theta0 (epoch 0, just after the jump); with k saves per epoch, save
``(e - 1) * k + j`` follows batch ``round(j * B / k)`` of epoch e (B batches per epoch), at
epoch ``e - 1 + j / k``. At each save the full flat state and the train, validation (when the
data set has one) and test loss and accuracy, in eval mode on the full splits, go to a
callback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from compute import data as data_mod
from compute.retrain_settings import check_retrain_settings
from compute.state import Layout, flatten_state, load_flat
from compute.train import TrainSpec, epoch_metrics, loss_fn
from tracker import SpecError

AUGMENT_STREAM = 1_000_003

SaveFn = Callable[[int, float, np.ndarray, dict[str, float]], None]


@dataclass(frozen=True)
class RetrainSpec:
    seed: int
    step_size: float
    epochs: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 128
    saves_per_epoch: int = 1
    augment: bool = False

    @property
    def n_saves(self) -> int:
        return self.epochs * self.saves_per_epoch + 1


def check_retrain(spec: RetrainSpec) -> None:
    """Refuse settings that cannot run, with the fix in the message."""
    check_retrain_settings(**asdict(spec))


def save_points(n_batches: int, saves_per_epoch: int) -> list[int]:
    """The batch counts (1-based) after which an epoch's saves happen; the last is the end."""
    k = min(saves_per_epoch, n_batches)
    if k < saves_per_epoch:
        raise SpecError(f"{saves_per_epoch} saves per epoch but an epoch has only {n_batches} batches: save less often")  # fmt: skip
    return [round(j * n_batches / k) for j in range(1, k + 1)]


def load_data(base: TrainSpec, spec: RetrainSpec) -> data_mod.Dataset:
    config = dict(base.dataset_config)
    config["augment"] = bool(spec.augment)
    return data_mod.load_configured(base.dataset, config, base.label_corruption)


def jump_and_retrain(
    base: TrainSpec,
    spec: RetrainSpec,
    theta_star: torch.Tensor,
    direction: torch.Tensor,
    layout: Layout,
    *,
    on_save: SaveFn,
    device: torch.device | None = None,
    should_stop: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Jump from ``theta_star`` along ``direction`` by ``spec.step_size`` and retrain.

    ``on_save(save_index, epoch, flat_state, metrics)`` sees every save point; returns the
    last metrics. ``should_stop`` may raise to abandon the run (a lost lease).
    """
    check_retrain(spec)
    device = device or torch.device("cpu")
    ds = load_data(base, spec)
    model = base.build(ds).to(device)
    theta0 = theta_star.to(torch.float64) + spec.step_size * direction.to(torch.float64)
    load_flat(model, theta0.to(torch.float32), layout)
    opt = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum,
                          weight_decay=spec.weight_decay)  # fmt: skip
    criterion = loss_fn(ds.task)
    order_gen = torch.Generator().manual_seed(spec.seed)
    aug_gen = torch.Generator().manual_seed(spec.seed + AUGMENT_STREAM)
    x_train, y_train = ds.split("train")
    x_train, y_train = x_train.to(device), y_train.to(device)
    n = int(x_train.shape[0])
    n_batches = -(-n // spec.batch_size)
    marks = save_points(n_batches, spec.saves_per_epoch)

    def save(index: int, epoch: float) -> dict[str, float]:
        metrics = epoch_metrics(model, ds, device)
        on_save(index, epoch, flatten_state(model, layout).numpy(), metrics)
        return metrics

    metrics = save(0, 0.0)
    index = 1
    for epoch in range(1, spec.epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=order_gen).to(device)
        next_mark = 0
        for b, start in enumerate(range(0, n, spec.batch_size), start=1):
            idx = perm[start : start + spec.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            if ds.augment:
                xb = ds.augment_batch(xb, aug_gen)
            opt.zero_grad(set_to_none=True)
            criterion(model(xb), yb).backward()
            opt.step()
            if b == marks[next_mark]:
                if should_stop is not None:
                    should_stop()
                metrics = save(index, epoch - 1 + (next_mark + 1) / len(marks))
                model.train()
                index += 1
                next_mark += 1
    return metrics
