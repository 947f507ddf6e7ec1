"""Level-set traversal (Tahir & Katz, arXiv 2011.04189) and its L2 baseline.

Phase 1 trains a tanh network with Adam and fixes L0, its full-batch training loss. Phase 2
walks along the level set {L = L0} towards smaller weight norm R = ||theta||^2 (biases
included): a *predictor* step moves along the weight-norm gradient with its component along
the loss gradient removed (a tangent step), a *corrector* step pulls the loss back to L0 by
normalised descent on c = (L - L0)^2, orthogonal to the last predictor direction. The walk
stops at the KKT point of min R subject to L = L0, where the two gradients are antiparallel
(angle 180 degrees), or after a step cap.

The baseline trains the same network with an L2 penalty lambda * sum(w^2) on the kernels
(weights, not biases), as Keras' ``l2(lambda)`` does; the data loss is reported apart from the
penalty.

This module knows nothing about SQL or the queue: it takes a config, returns arrays, and calls
back for progress, so a task kind, a test or a benchmark can drive it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from compute.threads import one_thread
from tracker._exceptions import SpecError

# --- setups -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """One of the paper's five experiments: data, architecture and step-size constants."""

    name: str
    dataset: str
    kind: str  # "ff" (dense) or "conv"
    hidden: tuple[int, ...]  # dense hidden widths
    channels: tuple[int, ...] = ()  # conv channels (3x3 valid conv + tanh + 2x2 max pool each)
    train_size: int | None = None  # a seeded subset of the training split; None: all of it
    eta_min: float = 1e-4
    eta_c: float = 1e-4
    max_predictor_steps: int = 10_000
    runs: int = 5
    l2_epochs: int = 200


SETUPS: dict[str, Setup] = {
    s.name: s
    for s in (
        Setup("MNIST_FF", "mnist5k", "ff", (100, 100, 100), train_size=1000),
        Setup("MNIST_CONV", "mnist5k", "conv", (100,), (20, 20), train_size=1000,
              max_predictor_steps=5_000),
        Setup("CIFAR10_CONV", "cifar10", "conv", (300,), (60, 60), train_size=1000,
              max_predictor_steps=20_000),
        Setup("IRIS_FF", "iris", "ff", (100, 100, 100, 100), eta_min=1e-5, eta_c=1e-6,
              max_predictor_steps=20_000, l2_epochs=500),
        Setup("MPG_FF", "autompg", "ff", (100, 100, 100, 100), eta_min=1e-5, eta_c=1e-6,
              max_predictor_steps=30_000, runs=10, l2_epochs=500),
    )
}  # fmt: skip

# The baseline's penalty strengths: 0 and every decade from 1e-6 to 1e6 (14 values).
DEFAULT_LAMBDAS: tuple[float, ...] = (0.0, *(10.0**e for e in range(-6, 7)))


# A traversal from a given trained network (a tracker model's checkpoint): no phase 1, and
# these step sizes and cap unless the config names its own (MNIST's step sizes, a short walk).
CHECKPOINT = "checkpoint"
CHECKPOINT_DEFAULTS = Setup(CHECKPOINT, dataset="", kind="ff", hidden=(), eta_min=1e-4,
                            eta_c=1e-4, max_predictor_steps=1000, runs=1)  # fmt: skip


def _defaults(name: str) -> Setup:
    return CHECKPOINT_DEFAULTS if name == CHECKPOINT else get_setup(name)


def get_setup(name: str) -> Setup:
    """The named setup, or a one-line SpecError listing the known names."""
    try:
        return SETUPS[name]
    except KeyError:
        raise SpecError(
            f"unknown level-set setup {name!r}: choose one of {', '.join(SETUPS)}"
        ) from None


def run_seeds(base_seed: int, runs: int) -> list[int]:
    """Seeds in [0, 999] of runs 0..runs-1: a prefix of one seeded permutation, so asking for
    more runs later keeps the seeds (and the rows) of the earlier ones."""
    if isinstance(base_seed, bool) or not isinstance(base_seed, int) or base_seed < 0:
        raise SpecError(f"--seed must be a non-negative integer, got {base_seed!r}")
    if runs > 1000:
        raise SpecError(f"at most 1000 runs have distinct seeds in [0, 999], asked for {runs}")
    return [int(s) for s in np.random.default_rng(base_seed).permutation(1000)[:runs]]


# --- models -----------------------------------------------------------------------------------


def glorot_normal_(weight: torch.Tensor, generator: torch.Generator) -> None:
    """Keras' GlorotNormal: a normal truncated at 2 sd, std sqrt(2 / (fan_in + fan_out)).

    Keras divides the std by 0.8796 (the sd of a standard normal truncated at +-2) so that the
    truncated draw has the intended spread; so does this.
    """
    receptive = weight[0][0].numel() if weight.dim() > 2 else 1
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    std = math.sqrt(2.0 / (fan_in + fan_out)) / 0.87962566103423978
    with torch.no_grad():
        weight.normal_(0.0, 1.0, generator=generator)
        # Redraw the tails until every value lies within 2 sd (what truncation means).
        while True:
            bad = weight.abs() > 2.0
            if not bool(bad.any()):
                break
            weight[bad] = torch.randn(int(bad.sum()), generator=generator)
        weight.mul_(std)


class LevelSetNet(nn.Module):
    """The paper's tanh networks: optional conv blocks, then dense layers, then the output."""

    def __init__(self, setup: Setup, input_shape: tuple[int, ...], outputs: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        shape = tuple(input_shape)
        if setup.kind == "conv":
            c, h, w = shape
            for out_c in setup.channels:
                layers += [nn.Conv2d(c, out_c, 3), nn.Tanh(), nn.MaxPool2d(2)]
                c, h, w = out_c, (h - 2) // 2, (w - 2) // 2
            width = c * h * w
        else:
            width = int(np.prod(shape))
        layers.append(nn.Flatten())
        for hidden in setup.hidden:
            layers += [nn.Linear(width, hidden), nn.Tanh()]
            width = hidden
        layers.append(nn.Linear(width, outputs))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def build_model(setup: Setup, input_shape: tuple[int, ...], outputs: int, seed: int) -> LevelSetNet:
    """The setup's network with Glorot-normal kernels and zero biases, drawn from ``seed``."""
    model = LevelSetNet(setup, input_shape, outputs)
    gen = torch.Generator().manual_seed(int(seed))
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            glorot_normal_(module.weight, gen)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def count_parameters(setup: Setup, data: SetupData) -> int:
    """The number of entries of theta (weights and biases) of the setup's network."""
    model = LevelSetNet(setup, data.input_shape, data.outputs)
    return sum(p.numel() for p in model.parameters())


# --- data -------------------------------------------------------------------------------------


@dataclass
class SetupData:
    """Ready tensors of one setup: the training set the level set is defined on, the test set."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    task: str  # classification | regression
    input_shape: tuple[int, ...]
    outputs: int


def load_setup_data(setup: Setup, data_seed: int = 0, root: str | None = None) -> SetupData:
    """The setup's data: the whole training split, or a seeded subset of ``train_size`` rows
    (MNIST, CIFAR: 1000), and the whole test split."""
    from compute import data as data_mod

    ds = data_mod.load_dataset(setup.dataset, root=root, seed=int(data_seed))
    tx, ty = ds.train_x, ds.train_y
    if setup.train_size is not None and setup.train_size < tx.shape[0]:
        tx, ty = data_mod.fixed_subset(tx, ty, setup.train_size, int(data_seed))
    return SetupData(tx, ty, ds.test_x, ds.test_y, ds.task, tuple(ds.input_shape),
                     int(ds.num_classes))  # fmt: skip


def dataset_data(ds: Any, train_subset: int | None = None, seed: int = 0) -> SetupData:
    """A tracker data set (``compute.data.Dataset``) as a level set's data: its training split
    (or a seeded subset of ``train_subset`` rows) and its whole test split."""
    from compute import data as data_mod

    if data_mod.loss_kind(ds) not in ("cross_entropy", "mse"):
        raise SpecError(
            f"data set {ds.name!r} uses the loss {data_mod.loss_kind(ds)!r}: a level-set "
            "traversal supports cross-entropy and MSE models only"
        )
    tx, ty = ds.train_x, ds.train_y
    if train_subset is not None:
        tx, ty = data_mod.fixed_subset(tx, ty, min(int(train_subset), int(tx.shape[0])), seed)
    return SetupData(tx, ty, ds.test_x, ds.test_y, ds.task, tuple(ds.input_shape),
                     int(ds.num_classes))  # fmt: skip


def _loss(task: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out, y) if task == "regression" else F.cross_entropy(out, y)


def _accuracy(task: str, out: torch.Tensor, y: torch.Tensor) -> float:
    if task == "regression":
        return float("nan")
    return float((out.argmax(1) == y).float().mean())


# --- phase 1 ----------------------------------------------------------------------------------


def adam_phase(
    model: nn.Module,
    data: SetupData,
    *,
    epochs: int,
    seed: int,
    lr: float = 1e-3,
    batch_size: int = 32,
    l2: float = 0.0,
    on_epoch: Callable[[int], None] | None = None,
) -> None:
    """Adam on shuffled minibatches (the order drawn from ``seed``), optionally with the
    penalty ``l2 * sum(kernel^2)`` on every kernel (no biases), as Keras' ``l2`` regulariser."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(int(seed) + 1)
    kernels = [m.weight for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    n = int(data.train_x.shape[0])
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        order = order.to(data.train_x.device)  # drawn on CPU: the same order on any device
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            loss = _loss(data.task, model(data.train_x[idx]), data.train_y[idx])
            if l2:
                loss = loss + l2 * sum(k.square().sum() for k in kernels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if on_epoch is not None:
            on_epoch(epoch)


# --- phase 2 ----------------------------------------------------------------------------------

TRACE_FIELDS: tuple[str, ...] = (
    "predictor_step",  # 0-based index of the predictor step
    "angle_deg",  # angle between grad R and grad L, in [0, 180]
    "weight_norm_sq",  # R = ||theta||^2, biases included
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "eta_p",  # the predictor step size used at this step
    "correctors",  # corrector steps taken since the previous predictor step
    "level_gap",  # L - L0 at this step (|.| <= sqrt(level_tol))
)


@dataclass(frozen=True)
class LevelSetConfig:
    """Everything that decides a traversal's numbers (the identity of a level-set run)."""

    setup: str
    seed: int
    max_predictor_steps: int | None = None  # None: the setup's cap
    max_corrector_steps: int = 20_000  # per gap between predictor steps [inf]: uncapped upstream
    phase1_epochs: int = 100
    phase1_lr: float = 1e-3
    batch_size: int = 32
    eta_min: float | None = None  # None: the setup's
    eta_c: float | None = None  # None: the setup's
    eta_p_max: float = 0.1
    turn_deg: float = 0.1  # predictor directions turning by this much shrink eta_p
    level_tol: float = 1e-10  # on c = (L - L0)^2
    kkt_tol_deg: float = 0.1  # stop once the angle is within this of 180 degrees
    grad_rms_floor: float = 1e-6
    snapshot_every: int = 50
    data_seed: int = 0
    data_root: str | None = None
    # From a checkpoint: the level set of the loss on this many training rows (a subset drawn
    # from data_seed; None: the whole training split), the full gradient at every step.
    train_subset: int | None = None

    def resolved(self) -> LevelSetConfig:
        """A copy with the setup's defaults filled in, checked for sense."""
        s = _defaults(self.setup)
        cfg = LevelSetConfig(**{
            **asdict(self),
            "max_predictor_steps": (
                s.max_predictor_steps
                if self.max_predictor_steps is None
                else self.max_predictor_steps
            ),
            "eta_min": s.eta_min if self.eta_min is None else self.eta_min,
            "eta_c": s.eta_c if self.eta_c is None else self.eta_c,
        })  # fmt: skip
        for name in ("max_predictor_steps", "max_corrector_steps", "batch_size", "snapshot_every"):
            if int(getattr(cfg, name)) < 1:
                raise SpecError(f"{name} must be at least 1, got {getattr(cfg, name)}")
        if cfg.phase1_epochs < 0:
            raise SpecError(f"phase1_epochs must not be negative, got {cfg.phase1_epochs}")
        for name in ("phase1_lr", "eta_min", "eta_c", "eta_p_max", "level_tol"):
            value = float(getattr(cfg, name))
            if not (math.isfinite(value) and value > 0):
                raise SpecError(f"{name} must be a positive number, got {value}")
        if cfg.seed < 0 or cfg.data_seed < 0:
            raise SpecError("seeds must be non-negative integers")
        if cfg.train_subset is not None and cfg.train_subset < 1:
            raise SpecError(f"train_subset must be at least 1, got {cfg.train_subset}")
        if cfg.setup == CHECKPOINT and cfg.phase1_epochs:
            raise SpecError("a traversal from a checkpoint has no phase 1: phase1_epochs must be 0")
        return cfg


@dataclass
class LevelSetResult:
    """What one traversal produced."""

    l0: float
    trace: np.ndarray  # [predictor steps, len(TRACE_FIELDS)] float64
    snapshot_steps: list[int]
    stop_reason: str  # kkt | step_cap | corrector_cap
    n_correctors: int
    theta: np.ndarray  # the final parameters (float32)
    phase1: dict[str, float] = field(default_factory=dict)
    distance: float = math.nan  # ||theta_end - theta_start||: how far the walk went

    def final(self) -> dict[str, float]:
        row = self.trace[-1]
        return {name: float(row[i]) for i, name in enumerate(TRACE_FIELDS)}


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    """The angle between two vectors in degrees, in [0, 180] (0 if either is zero)."""
    na, nb = float(a.norm()), float(b.norm())
    if na == 0.0 or nb == 0.0:
        return 0.0
    cos = float(torch.dot(a, b)) / (na * nb)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


class FlatModel:
    """The model's parameters as views into one flat vector ``theta``.

    A step on ``theta`` moves the model in place, and the loss and gradient come from the
    model's own forward: no per-call re-binding of parameters (torch.func.functional_call
    costs a visible share of an IRIS_FF step, where the forward itself is tiny).
    """

    def __init__(self, model: nn.Module, data: SetupData) -> None:
        self.model, self.data = model, data
        self.params = list(model.parameters())
        self.theta = torch.cat([p.detach().reshape(-1) for p in self.params])
        offset = 0
        for p in self.params:
            p.data = self.theta[offset : offset + p.numel()].view_as(p)
            offset += p.numel()

    def loss_grad(self) -> tuple[float, torch.Tensor, float]:
        """Full-batch training loss at theta, its gradient, and the training accuracy."""
        out = self.model(self.data.train_x)
        loss = _loss(self.data.task, out, self.data.train_y)
        grads = torch.autograd.grad(loss, self.params)
        grad = torch.cat([g.reshape(-1) for g in grads])
        return (
            float(loss.detach()),
            grad,
            _accuracy(self.data.task, out.detach(), self.data.train_y),
        )

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        out = self.model(x)
        return float(_loss(self.data.task, out, y)), _accuracy(self.data.task, out, y)


def traverse(
    cfg: LevelSetConfig,
    *,
    data: SetupData | None = None,
    on_step: Callable[[int, np.ndarray], None] | None = None,
    on_snapshot: Callable[[int, int, np.ndarray], None] | None = None,
    should_stop: Callable[[], None] | None = None,
    device: torch.device | str = "cpu",
) -> LevelSetResult:
    """Run phase 1 and the predictor/corrector walk of ``cfg`` (on ``device``: the weights are
    drawn on CPU from the seed, then the model and data move there).

    ``on_step(k, row)`` sees each trace row, ``on_snapshot(i, k, theta)`` each snapshot
    (theta before predictor step k: k = 0 is theta after phase 1, then every
    ``snapshot_every`` steps, and the final theta last); ``should_stop`` may raise to abort.
    """
    cfg = cfg.resolved()
    setup = get_setup(cfg.setup)
    data = on_device(data or load_setup_data(setup, cfg.data_seed, cfg.data_root), device)
    with one_thread():
        return _traverse(cfg, setup, data, on_step, on_snapshot, should_stop)


def traverse_from(
    model: nn.Module,
    cfg: LevelSetConfig,
    data: SetupData,
    *,
    on_step: Callable[[int, np.ndarray], None] | None = None,
    on_snapshot: Callable[[int, int, np.ndarray], None] | None = None,
    should_stop: Callable[[], None] | None = None,
    device: torch.device | str = "cpu",
) -> LevelSetResult:
    """The predictor/corrector walk from ``model`` as it is (a trained network: no phase 1),
    on the level set of its loss on ``data``'s training rows. The model is evaluated in eval
    mode (BatchNorm's stored statistics, no dropout); its parameters are moved in place."""
    cfg = cfg.resolved()
    if cfg.setup != CHECKPOINT:
        raise SpecError(f"traverse_from walks from a given network: its config's setup must be {CHECKPOINT!r}")  # fmt: skip
    data = on_device(data, device)
    model = model.to(data.train_x.device).eval()
    with one_thread():
        return _walk_from(cfg, model, data, on_step, on_snapshot, should_stop)


def count_model_parameters(model: nn.Module) -> int:
    """The entries of theta (every parameter) of a given network."""
    return sum(p.numel() for p in model.parameters())


def on_device(data: SetupData, device: torch.device | str) -> SetupData:
    """The setup's tensors on ``device`` (the same object when they are there already)."""
    device = torch.device(device)
    if data.train_x.device == device:
        return data
    return replace(data, train_x=data.train_x.to(device), train_y=data.train_y.to(device),
                   test_x=data.test_x.to(device), test_y=data.test_y.to(device))  # fmt: skip


def _traverse(
    cfg: LevelSetConfig,
    setup: Setup,
    data: SetupData,
    on_step: Callable[[int, np.ndarray], None] | None,
    on_snapshot: Callable[[int, int, np.ndarray], None] | None,
    should_stop: Callable[[], None] | None,
) -> LevelSetResult:
    model = build_model(setup, data.input_shape, data.outputs, cfg.seed).to(data.train_x.device)
    adam_phase(model, data, epochs=cfg.phase1_epochs, seed=cfg.seed, lr=cfg.phase1_lr,
               batch_size=cfg.batch_size)  # fmt: skip
    return _walk_from(cfg, model, data, on_step, on_snapshot, should_stop)


def _walk_from(
    cfg: LevelSetConfig,
    model: nn.Module,
    data: SetupData,
    on_step: Callable[[int, np.ndarray], None] | None,
    on_snapshot: Callable[[int, int, np.ndarray], None] | None,
    should_stop: Callable[[], None] | None,
) -> LevelSetResult:
    fm = FlatModel(model, data)
    l0, _, acc0 = fm.loss_grad()
    if not math.isfinite(l0):
        raise SpecError(f"the training loss at the start is {l0}: a diverged network has no level set to walk")  # fmt: skip
    start = fm.theta.detach().clone()
    walk = _Walk(cfg, fm, fm.theta, l0, on_step, on_snapshot, should_stop)
    stop_reason = walk.run()
    return LevelSetResult(
        distance=float((walk.theta - start).norm()),
        l0=l0, trace=np.asarray(walk.rows, dtype=np.float64).reshape(-1, len(TRACE_FIELDS)),
        snapshot_steps=walk.snapshot_steps, stop_reason=stop_reason,
        n_correctors=walk.total_correctors, theta=walk.theta.cpu().numpy().astype(np.float32),
        phase1={"train_loss": l0, "train_acc": acc0},
    )  # fmt: skip


class _Walk:
    """The phase-2 state machine (one object so the step rules read as in the paper)."""

    def __init__(
        self,
        cfg: LevelSetConfig,
        fm: FlatModel,
        theta: torch.Tensor,
        l0: float,
        on_step: Callable[[int, np.ndarray], None] | None,
        on_snapshot: Callable[[int, int, np.ndarray], None] | None,
        should_stop: Callable[[], None] | None,
    ) -> None:
        self.cfg, self.fm, self.theta, self.l0 = cfg, fm, theta, l0
        self.on_step, self.on_snapshot, self.should_stop = on_step, on_snapshot, should_stop
        self.rows: list[list[float]] = []
        self.snapshot_steps: list[int] = []
        self.total_correctors = 0
        self.eta_p = float(cfg.eta_min)  # type: ignore[arg-type]
        self.r_prev: torch.Tensor | None = None
        self.after_corrector = False

    def _snapshot(self, k: int) -> None:
        if self.on_snapshot is not None:
            self.on_snapshot(len(self.snapshot_steps), k, self.theta.cpu().numpy().copy())
        self.snapshot_steps.append(k)

    def run(self) -> str:
        cfg, fm = self.cfg, self.fm
        k = 0
        since = 0  # correctors since the last predictor
        reason = "step_cap"
        while k < int(cfg.max_predictor_steps):  # type: ignore[arg-type]
            if self.should_stop is not None and (k + since) % 64 == 0:
                self.should_stop()
            loss, g_l, acc = fm.loss_grad()
            gap = loss - self.l0
            if gap * gap > cfg.level_tol:
                if since >= cfg.max_corrector_steps:
                    reason = "corrector_cap"
                    break
                self._correct(gap, g_l)
                since += 1
                continue
            g_r = 2.0 * self.theta
            angle = angle_deg(g_r, g_l)
            if k % cfg.snapshot_every == 0:
                self._snapshot(k)
            r_hat = self._predictor_direction(g_r, g_l)
            self._adapt_eta(r_hat)
            test_loss, test_acc = fm.evaluate(fm.data.test_x, fm.data.test_y)
            row = [k, angle, float(self.theta.dot(self.theta)), loss, acc, test_loss, test_acc,
                   self.eta_p, since, gap]  # fmt: skip
            self.rows.append(row)
            if self.on_step is not None:
                self.on_step(k, np.asarray(row))
            if angle >= 180.0 - cfg.kkt_tol_deg:
                reason = "kkt"
                break
            self.theta.sub_(self.eta_p * r_hat)
            self.r_prev, self.after_corrector = r_hat, False
            k += 1
            since = 0
        # The final theta is the last recorded point on the level set only if the walk stopped
        # there; after a cap it is where the walk was cut off (also recorded, for the PCA).
        if not self.snapshot_steps or self.snapshot_steps[-1] != k:
            self._snapshot(k)
        return reason

    def _predictor_direction(self, g_r: torch.Tensor, g_l: torch.Tensor) -> torch.Tensor:
        """The weight-norm gradient with its component along the loss gradient removed."""
        rms = float(g_l.norm()) / math.sqrt(g_l.numel())
        if rms < self.cfg.grad_rms_floor:
            r = g_r
        else:
            u = g_l / g_l.norm()
            r = g_r - g_r.dot(u) * u
        return r / r.norm()

    def _adapt_eta(self, r_hat: torch.Tensor) -> None:
        cfg = self.cfg
        if self.after_corrector or self.r_prev is None:
            self.eta_p = float(cfg.eta_min)  # type: ignore[arg-type]
        elif angle_deg(r_hat, self.r_prev) >= cfg.turn_deg:
            self.eta_p = max(0.1 * self.eta_p, float(cfg.eta_min))  # type: ignore[arg-type]
        else:
            self.eta_p = min(1.1 * self.eta_p, cfg.eta_p_max)

    def _correct(self, gap: float, g_l: torch.Tensor) -> None:
        """Normalised descent on (L - L0)^2, orthogonal to the last predictor direction."""
        q = 2.0 * gap * g_l
        if self.r_prev is not None:
            q = q - q.dot(self.r_prev) * self.r_prev
        norm = float(q.norm())
        if norm > 0.0:
            self.theta.sub_(float(self.cfg.eta_c) * q / norm)  # type: ignore[arg-type]
        self.after_corrector = True
        self.total_correctors += 1


# --- L2 baseline ------------------------------------------------------------------------------


@dataclass(frozen=True)
class L2Config:
    """One baseline run: the setup's network trained with ``l2 * sum(kernel^2)`` added."""

    setup: str
    seed: int
    l2: float
    epochs: int | None = None  # None: the setup's (200 MNIST/CIFAR, 500 IRIS/MPG)
    lr: float = 1e-3
    batch_size: int = 32
    data_seed: int = 0
    data_root: str | None = None

    def resolved(self) -> L2Config:
        s = get_setup(self.setup)
        cfg = L2Config(**{**asdict(self), "epochs": s.l2_epochs if self.epochs is None else self.epochs})  # fmt: skip
        if not (math.isfinite(cfg.l2) and cfg.l2 >= 0):
            raise SpecError(f"lambda must be a finite non-negative number, got {cfg.l2}")
        if int(cfg.epochs) < 1 or cfg.batch_size < 1:  # type: ignore[arg-type]
            raise SpecError("epochs and batch size must be at least 1")
        return cfg


def kernel_penalty(model: nn.Module) -> float:
    """sum(kernel^2) over dense and conv kernels (biases excluded)."""
    with torch.no_grad():
        return float(sum(m.weight.square().sum() for m in model.modules()
                         if isinstance(m, nn.Linear | nn.Conv2d)))  # fmt: skip


def train_l2(
    cfg: L2Config,
    *,
    data: SetupData | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    should_stop: Callable[[], None] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, float], np.ndarray]:
    """Train one baseline run; return its final metrics (data losses apart from the penalty)
    and its final flat parameters."""
    cfg = cfg.resolved()
    setup = get_setup(cfg.setup)
    data = on_device(data or load_setup_data(setup, cfg.data_seed, cfg.data_root), device)
    model = build_model(setup, data.input_shape, data.outputs, cfg.seed).to(data.train_x.device)
    fm = FlatModel(model, data)  # Adam updates the views, so fm.theta follows it

    def metrics() -> dict[str, float]:
        theta = fm.theta
        tl, ta = fm.evaluate(data.train_x, data.train_y)
        vl, va = fm.evaluate(data.test_x, data.test_y)
        pen = kernel_penalty(model)
        return {"train_loss": tl, "train_acc": ta, "test_loss": vl, "test_acc": va,
                "kernel_sq_norm": pen, "penalty": cfg.l2 * pen,
                "weight_norm_sq": float(theta.dot(theta))}  # fmt: skip

    def epoch_done(epoch: int) -> None:
        if should_stop is not None:
            should_stop()
        if on_epoch is not None:
            on_epoch(epoch, metrics())

    with one_thread():
        adam_phase(model, data, epochs=int(cfg.epochs), seed=cfg.seed, lr=cfg.lr,  # type: ignore[arg-type]
                   batch_size=cfg.batch_size, l2=cfg.l2, on_epoch=epoch_done)  # fmt: skip
        return metrics(), fm.theta.cpu().numpy().astype(np.float32)


def parse_lambdas(text: str) -> list[float]:
    """``0,1e-6,...,1e6``: a comma list of non-negative numbers; ``A,...,B`` fills in every
    decade between A and B (both powers of ten)."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    hint = "write a comma list like 0,1e-3,1 (or 0,1e-6,...,1e6 for every decade)"
    if not items:
        raise SpecError(f"--lambdas {text!r} is empty: {hint}")
    out: list[float] = []
    for i, item in enumerate(items):
        if item == "...":
            if i == 0 or i == len(items) - 1 or items[i + 1] == "...":
                raise SpecError(f"--lambdas {text!r}: '...' needs a value on each side: {hint}")
            continue
        try:
            value = float(item)
        except ValueError:
            raise SpecError(f"--lambdas {text!r}: {item!r} is not a number: {hint}") from None
        if not (math.isfinite(value) and value >= 0):
            raise SpecError(f"--lambdas {text!r}: {item!r} is not a finite non-negative number")
        if i > 0 and items[i - 1] == "...":
            out.extend(_decades(out[-1], value, text))
        out.append(value)
    return sorted(set(out))


def _decades(lo: float, hi: float, text: str) -> list[float]:
    """The decades strictly between two powers of ten."""
    if lo <= 0 or hi <= lo:
        raise SpecError(f"--lambdas {text!r}: '...' must run from a positive power of ten up to a larger one")  # fmt: skip
    a, b = math.log10(lo), math.log10(hi)
    if abs(a - round(a)) > 1e-9 or abs(b - round(b)) > 1e-9:
        raise SpecError(f"--lambdas {text!r}: the values around '...' must be powers of ten")
    return [10.0**e for e in range(round(a) + 1, round(b))]
