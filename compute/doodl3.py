"""DOODL3's ensembles: many tiny networks trained from uniform [-2, 2] kernel initialisations.

Three setups (arXiv 2106.07683, DD/data_loaders.py and model-runs.ipynb):

- ``doodl3-iris``: a dense softmax layer on the two standardised petal features (9 parameters),
  Adam, batch 5. Iris is split 50/50 with a seeded permutation; the petal features are
  standardised with the train half's mean and standard deviation.
- ``doodl3-iris-layers-2`` (``iris_layers_2``): the same layer, then Dense(3, softmax): 21
  parameters, the second kernel Glorot-uniform as Keras's default.
- ``doodl3-mnist``: MNIST digits 0 and 1 (here the 1,000 of mnist5k, normalised as
  compute.data does, shuffled with a seed: 100 test, 900 train), conv
  2@3x3 + ReLU, max-pool 7, dropout 0.5, dense 2 softmax (58 parameters), Adam, batch 128.

Keras defaults are kept where the paper relies on them: kernels U(-2, 2), biases zero, Adam
lr 1e-3 and eps 1e-7, the last minibatch of an epoch smaller when the split does not divide.

The models of a chunk are trained together as one stacked tensor per parameter: the loss is the
sum of the models' losses, so each model's gradient and Adam state are its own (Adam is
elementwise). Model ``i``'s initialisation and minibatch order come from
``np.random.default_rng([seed, i, stream])``; dropout masks from a generator seeded by the
chunk, so the same spec (including its chunk size) gives the same numbers.

Parameters are flattened in Keras order (conv kernel [ky, kx, in, out], conv bias, dense kernel
[in, out], dense bias) with names like ``dense_kernel_0_3``; only kernels are candidates for
the Morse graph's two axes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from compute.doodl3_params import (  # noqa: F401  (re-exported: the setups' constants)
    DEFAULTS,
    EPS,
    INIT_LIMIT,
    LR,
    SETUPS,
    init_limit,
    kernel_columns,
    param_layout,
    param_names,
)
from compute.threads import one_thread
from tracker._exceptions import SpecError

DROPOUT = 0.5
MNIST_TEST = 100  # DOODL3 tests on 100 images; the other 0s and 1s of mnist5k train
_INIT, _ORDER = 0, 1


@dataclass(frozen=True)
class Split:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int


@dataclass
class ChunkResult:
    """Weights at the early and final epochs, the loss per epoch and test metrics, per model."""

    early: np.ndarray  # float32 [models, params]
    final: np.ndarray  # float32 [models, params]
    loss_history: np.ndarray  # float32 [models, epochs]: mean train loss of each epoch
    accuracy: np.ndarray  # float64 [models]
    balanced_accuracy: np.ndarray
    entropy: np.ndarray  # mean prediction entropy (nats) on the test split


# --- data -------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def load_split(setup: str, data_seed: int) -> Split:
    """The setup's train and test tensors (cached per process; treat as read-only)."""
    if setup in ("doodl3-iris", "doodl3-iris-layers-2"):
        from sklearn.datasets import load_iris

        bunch = load_iris()
        x = bunch.data[:, 2:4].astype(np.float64)  # petal length, petal width
        y = bunch.target.astype(np.int64)
        order = np.random.default_rng([data_seed, 0]).permutation(len(x))
        half = len(x) // 2
        tr, te = order[:half], order[half:]
        mean, std = x[tr].mean(axis=0), x[tr].std(axis=0)
        x = (x - mean) / std
        return Split(_f32(x[tr]), torch.from_numpy(y[tr]), _f32(x[te]), torch.from_numpy(y[te]), 3)
    if setup == "doodl3-mnist":
        from compute.data import load_dataset

        ds = load_dataset("mnist5k", seed=data_seed)
        x = torch.cat([ds.train_x, ds.test_x])
        y = torch.cat([ds.train_y, ds.test_y])
        keep = torch.nonzero(y <= 1).flatten().numpy()
        order = keep[np.random.default_rng([data_seed, 0]).permutation(len(keep))]
        te_idx = torch.from_numpy(order[:MNIST_TEST])
        tr_idx = torch.from_numpy(order[MNIST_TEST:])
        return Split(x[tr_idx].contiguous(), y[tr_idx].contiguous(), x[te_idx].contiguous(),
                     y[te_idx].contiguous(), num_classes=2)  # fmt: skip
    raise SpecError(f"unknown setup {setup!r}: use one of {', '.join(SETUPS)}")


def _f32(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


# --- parameters -------------------------------------------------------------------------------


def _init(setup: str, seed: int, index: int) -> list[np.ndarray]:
    rng = np.random.default_rng([seed, index, _INIT])
    out = []
    for name, shape, kernel in param_layout(setup):
        limit = init_limit(setup, name)
        out.append(rng.uniform(-limit, limit, size=shape) if kernel else np.zeros(shape))
    return out


def _flat(params: list[torch.Tensor]) -> np.ndarray:
    m = params[0].shape[0]
    return torch.cat([p.detach().reshape(m, -1) for p in params], dim=1).numpy().astype(np.float32)


# --- forward passes on stacked models ------------------------------------------------------------


def _logits(
    setup: str, params: list[torch.Tensor], x: torch.Tensor, dropout: torch.Generator | None
) -> torch.Tensor:
    """Logits [models, batch, classes]; ``x`` is [models, batch, ...] (each model its own batch)."""
    if setup == "doodl3-iris":
        w, b = params
        return torch.einsum("mbi,mio->mbo", x, w) + b[:, None, :]
    if setup == "doodl3-iris-layers-2":
        w, b, w1, b1 = params
        hidden = torch.softmax(torch.einsum("mbi,mio->mbo", x, w) + b[:, None, :], dim=-1)
        return torch.einsum("mbi,mio->mbo", hidden, w1) + b1[:, None, :]
    ck, cb, dk, db = params
    m, batch = x.shape[0], x.shape[1]
    # Models as conv groups: channel j of the input is model j's image. Max-pool 7 without
    # padding reads only the first 21x21 outputs, so the conv sees only the first 23x23 pixels.
    images = x.reshape(m, batch, 28, 28)[:, :, :23, :23].transpose(0, 1)  # [batch, models, ...]
    weight = ck[..., 0, :].permute(0, 3, 1, 2).reshape(m * 2, 1, 3, 3)  # [m*out, in, ky, kx]
    z = F.relu(F.conv2d(images, weight, cb.reshape(m * 2), groups=m))  # [batch, m*2, 21, 21]
    z = F.max_pool2d(z, 7).reshape(batch, m, 2, 3, 3).transpose(0, 1)  # [models, batch, 2, 3, 3]
    # Keras flattens channels last: (h, w, c).
    z = z.permute(0, 1, 3, 4, 2).reshape(m, batch, 18)
    if dropout is not None:
        keep = torch.rand(z.shape, generator=dropout) >= DROPOUT
        z = z * keep / (1.0 - DROPOUT)
    return torch.einsum("mbi,mio->mbo", z, dk) + db[:, None, :]


def _metrics(setup: str, params: list[torch.Tensor], split: Split) -> tuple[np.ndarray, ...]:
    m = params[0].shape[0]
    with torch.no_grad():
        x = split.test_x.unsqueeze(0).expand(m, *split.test_x.shape)
        probs = torch.softmax(_logits(setup, params, x, None).double(), dim=-1)
    pred = probs.argmax(dim=-1).numpy()
    y = split.test_y.numpy()
    acc = (pred == y[None, :]).mean(axis=1)
    recalls = [(pred[:, y == c] == c).mean(axis=1) for c in np.unique(y)]
    balanced = np.mean(recalls, axis=0)
    entropy = (-(probs * torch.log(probs.clamp_min(1e-300))).sum(dim=-1)).mean(dim=1).numpy()
    return acc, balanced, entropy


def train_chunk(
    setup: str,
    indices: list[int],
    *,
    seed: int,
    epochs: int,
    early_epoch: int,
    batch_size: int,
    data_seed: int = 0,
    should_stop: Any = None,
) -> ChunkResult:
    """Train models ``indices`` of the ensemble together; keep the early and final weights."""
    with one_thread():
        return _train(setup, indices, seed=seed, epochs=epochs, early_epoch=early_epoch,
                      batch_size=batch_size, data_seed=data_seed, should_stop=should_stop)  # fmt: skip


def _train(
    setup: str,
    indices: list[int],
    *,
    seed: int,
    epochs: int,
    early_epoch: int,
    batch_size: int,
    data_seed: int,
    should_stop: Any,
) -> ChunkResult:
    split = load_split(setup, data_seed)
    params = [
        torch.tensor(np.stack(group), dtype=torch.float32, requires_grad=True)
        for group in zip(*(_init(setup, seed, i) for i in indices), strict=True)
    ]
    opt = torch.optim.Adam(params, lr=LR, eps=EPS)
    orders = [np.random.default_rng([seed, i, _ORDER]) for i in indices]
    dropout = torch.Generator().manual_seed(
        int(np.random.default_rng([seed, indices[0], 2]).integers(2**62))
    )
    n = int(split.train_x.shape[0])
    history = np.zeros((len(indices), epochs), dtype=np.float32)
    early = _flat(params) if early_epoch == 0 else None
    for epoch in range(1, epochs + 1):
        perm = torch.from_numpy(np.stack([r.permutation(n) for r in orders]))  # [models, n]
        total = torch.zeros(len(indices), dtype=torch.float64)
        for start in range(0, n, batch_size):
            rows = perm[:, start : start + batch_size]
            x, y = split.train_x[rows], split.train_y[rows]
            logits = _logits(setup, params, x, dropout if setup == "doodl3-mnist" else None)
            losses = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(dim=1)
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            total += losses.detach().double() * rows.shape[1]
        history[:, epoch - 1] = (total / n).numpy()
        if epoch == early_epoch:
            early = _flat(params)
        if should_stop is not None:
            should_stop()
    assert early is not None
    acc, balanced, entropy = _metrics(setup, params, split)
    return ChunkResult(early=early, final=_flat(params), loss_history=history, accuracy=acc,
                       balanced_accuracy=balanced, entropy=entropy)  # fmt: skip
