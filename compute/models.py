"""The networks a study can name, each built with a seeded initialisation.

Architectures and their config keys (defaults in brackets):

- ``mlp``: ``widths`` ([100, 100]) hidden layer widths, ``activation`` (relu | tanh | sigmoid).
  Image inputs are flattened; ``widths: []`` is a linear (softmax or least-squares) model.
- ``cnn``: ``channels`` ([32, 64]) one conv block per entry (conv k x k 'same' -> optional
  BatchNorm -> activation -> 2x2 max pool), ``kernel_size`` (3, odd), ``hidden`` ([128])
  widths of the dense layers after flattening, ``batchnorm`` (false), ``activation`` (relu).
- ``resnet20``, ``resnet56``, ``resnet110``: the CIFAR ResNets of He et al. (2016), three
  stages of 16/32/64 channels with (depth - 2) / 6 basic blocks each. ``shortcut`` ('A'):
  option A, the paper's CIFAR choice, subsamples and zero-pads channels (no parameters);
  'B' uses a 1x1 convolution + BatchNorm where the shape changes.
- ``resnet-lb``: the small ResNet of l-berg/landscapes: torchvision's ResNet layout with one
  BasicBlock per stage ([1, 1, 1, 1]): 7x7/2 conv, 3x3/2 max pool, stages of width, 2, 4 and 8
  x ``width`` (64) channels, projection shortcuts, global average pool, linear head.
  ``activation`` (relu | sigmoid | tanh) replaces every ReLU, as its training script does.
- ``vgg9``: VGG-9 of Li et al. (2018): conv 64, 64, M, 128, 128, M, 256, 256, 256, M (each conv
  followed by BatchNorm and ReLU), then a 256-wide dense layer with BatchNorm1d and the head.
- ``vgg11``: CIFAR VGG-11 with BatchNorm: conv 64, M, 128, M, 256, 256, M, 512, 512, M, 512,
  512, M, then one linear head. Both VGGs take ``width`` (64), the first stage's channels
  (later stages scale with it), and pool with ``ceil_mode`` so 28x28 and 8x8 inputs work.
- ``wrn``: WideResNet-depth-k of Zagoruyko & Komodakis (the WRN-28-2 of seed 000),
  pre-activation blocks, ``depth`` (28; depth - 4 divisible by 6), ``k`` (2), no dropout.

User architectures: ``module:callable`` (or the name of an entry point in the group
``tracker.architectures``) names a factory called with the architecture config as keyword
arguments and returning an ``nn.Module``; the tracker passes it nothing else (give the class
count, input size and so on in the config). See ``compute.user``.

Every built-in model implements the first-affine protocol of the surface engine:
``model.first_affine`` names the first nn.Linear / nn.Conv2d (the one that sees the raw input),
``model.prepare_input(x)`` is what it receives, ``model.forward_after_first(z)`` is the rest of
the network, and ``forward(x) == forward_after_first(first(prepare_input(x)))``.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import threading
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from compute import user
from tracker import SpecError, UserCodeError

# Held while a model is initialised from the (process-wide) seeded global generator.
_SEEDED = threading.RLock()
_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
_IN_PLACE: dict[type[nn.Module], Callable[[torch.Tensor], torch.Tensor]] = {
    nn.ReLU: torch.relu_,
    nn.Tanh: torch.tanh_,
    nn.Sigmoid: torch.sigmoid_,
}


class FirstAffineNet(nn.Module):
    """A network whose first affine layer is an attribute named by ``first_affine``."""

    first_affine: str = "conv1"

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_after_first(self, z: torch.Tensor) -> torch.Tensor:
        """The network after its first affine layer; every architecture here defines it."""
        raise NotImplementedError(f"{type(self).__name__} must define forward_after_first")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = getattr(self, self.first_affine)
        return self.forward_after_first(first(self.prepare_input(x)))


# ---------------------------------------------------------------------------- MLP and CNN


class MLP(FirstAffineNet):
    first_affine = "fc1"

    def __init__(self, in_features: int, widths: list[int], num_classes: int, activation: str):
        super().__init__()
        dims = [*widths, num_classes]
        self.fc1 = nn.Linear(in_features, dims[0])
        rest: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            rest += [_ACTIVATIONS[activation](), nn.Linear(a, b)]
        self.body = nn.Sequential(*rest)

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def forward_after_first(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)

    def infer_after_first(self, z: torch.Tensor, scratch: dict[Any, Any]) -> torch.Tensor:
        """``forward_after_first`` for inference without allocating: the same layers, activations
        in place on ``z`` (overwritten) and each layer's output in a buffer kept in ``scratch``
        for the next call. A surface evaluates the same shapes thousands of times; fresh ~1 MB
        activations per point cost as much as the matrix products.

        Products run feature-major, ``out.T = W h.T + b`` into [features, N] buffers: MKL's
        sgemm is much slower for a tall, narrow [N, 10] output than for [10, N] (one thread,
        1,797 samples: 183 against 72 us, more than a third of a point's work after the
        first layer). The logits come back as an [N, classes] view of the [classes, N] buffer
        (``SurfaceEvaluator`` scores that layout without a copy)."""
        key = ("infer", z.data_ptr(), z.shape[0])
        steps = scratch.get(key)
        if steps is None or any(p.data_ptr() != ptr for p, ptr in steps[2]):
            steps = scratch[key] = self._infer_steps(z, scratch)
        for step in steps[0]:
            step()
        return steps[1]

    def _infer_steps(
        self, z: torch.Tensor, scratch: dict[Any, Any]
    ) -> tuple[list[Callable[[], Any]], torch.Tensor, list[tuple[nn.Parameter, int]]]:
        """``infer_after_first``'s operations on ``z`` with every argument bound, the logits'
        view, and the parameters' storage they were bound to (rebinding a parameter makes new
        steps). Bound once per input buffer: the Python between the kernels (module attribute
        look-ups, views, buffer keys) cost ~40 us per point, 5 % of a digits point."""
        steps: list[Callable[[], Any]] = []
        h, n = z, z.shape[0]  # h: [N, width], always sample-major as seen from here
        for index, layer in enumerate(self.body):
            if isinstance(layer, nn.Linear):
                key = (index, n, z.dtype, z.device)
                out = scratch.get(key)
                if out is None:
                    out = scratch[key] = z.new_empty(layer.out_features, n)
                if layer.bias is None:
                    steps.append(functools.partial(torch.mm, layer.weight, h.t(), out=out))
                else:
                    bias = layer.bias.unsqueeze(1)
                    steps.append(functools.partial(torch.addmm, bias, layer.weight, h.t(), out=out))
                h = out.t()
            else:
                steps.append(functools.partial(_IN_PLACE[type(layer)], h))
        params = [(p, p.data_ptr()) for p in self.body.parameters()]
        return steps, h, params

    def infer_batched_after_first(
        self,
        z: torch.Tensor,
        params: dict[str, torch.Tensor],
        scratch: dict[Any, Any],
    ) -> torch.Tensor:
        """The layers after the first for K weight settings at once: ``z`` is [K, N, width]
        (overwritten), ``params`` maps the name of each body parameter that moves to its K
        values [K, *shape] (the others keep their values); returns [K, N, classes], a view of
        a [K, classes, N] buffer (feature-major, as ``infer_after_first``). One batched product
        per layer, activations in place, outputs in reused buffers: what
        ``vmap(functional_call)`` computes, without its per-call dispatch and fresh
        intermediates (2.6x less CPU time for an MLP on 128 samples)."""
        h = z  # [K, N, width] as seen from here
        for index, layer in enumerate(self.body):
            if isinstance(layer, nn.Linear):
                k, n = h.shape[0], h.shape[1]
                key = ("batched", index, k, n, h.dtype, h.device)
                out = scratch.get(key)
                if out is None:
                    out = scratch[key] = h.new_empty(k, layer.out_features, n)
                # A parameter the directions do not move is absent: it keeps its own value.
                weight = params.get(f"body.{index}.weight")
                weight = layer.weight.expand(k, -1, -1) if weight is None else weight
                bias = params.get(f"body.{index}.bias", layer.bias)
                if bias is None:
                    torch.bmm(weight, h.transpose(1, 2), out=out)
                else:
                    torch.baddbmm(bias.unsqueeze(-1), weight, h.transpose(1, 2), out=out)
                h = out.transpose(1, 2)
            else:
                _IN_PLACE[type(layer)](h)
        return h


class SmallCNN(FirstAffineNet):
    def __init__(self, input_shape: tuple[int, ...], cfg: dict[str, Any], num_classes: int):
        super().__init__()
        act = _ACTIVATIONS[cfg["activation"]]
        k, bn = cfg["kernel_size"], cfg["batchnorm"]
        c_in, h, w = input_shape
        channels = cfg["channels"]
        self.conv1 = nn.Conv2d(c_in, channels[0], k, padding=k // 2)
        layers: list[nn.Module] = []
        for i, c in enumerate(channels):
            if i > 0:
                layers.append(nn.Conv2d(channels[i - 1], c, k, padding=k // 2))
            if bn:
                layers.append(nn.BatchNorm2d(c))
            layers += [act(), nn.MaxPool2d(2, ceil_mode=True)]
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        layers.append(nn.Flatten())
        dims = [channels[-1] * h * w, *cfg["hidden"]]
        for a, b in itertools.pairwise(dims):
            layers += [nn.Linear(a, b), act()]
        layers.append(nn.Linear(dims[-1], num_classes))
        self.body = nn.Sequential(*layers)

    def forward_after_first(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


# ---------------------------------------------------------------------------- CIFAR ResNets


class CifarBlock(nn.Module):
    """Basic block (two 3x3 convs) of He et al.'s CIFAR ResNets."""

    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, c_out - c_in
        self.project: nn.Module | None = None
        if shortcut == "B" and (stride != 1 or c_in != c_out):
            self.project = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.project is not None:
            return self.project(x)
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(FirstAffineNet):
    def __init__(self, depth: int, in_channels: int, num_classes: int, shortcut: str):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks: list[nn.Module] = []
        c_in = 16
        for c_out, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                blocks.append(CifarBlock(c_in, c_out, stride if i == 0 else 1, shortcut))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)
        _he_init(self, mode="fan_in")

    def forward_after_first(self, z: torch.Tensor) -> torch.Tensor:
        out = self.blocks(F.relu(self.bn1(z)))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


# ---------------------------------------------------------------------------- l-berg ResNet


class LBBlock(nn.Module):
    """torchvision's BasicBlock, with a choice of activation."""

    def __init__(self, c_in: int, c_out: int, stride: int, act: type[nn.Module]):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.act1 = act()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act2 = act()
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        identity = x if self.downsample is None else self.downsample(x)
        return self.act2(out + identity)


class LBResNet(FirstAffineNet):
    def __init__(self, in_channels: int, num_classes: int, width: int, activation: str):
        super().__init__()
        act = _ACTIVATIONS[activation]
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act = act()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = [width, 2 * width, 4 * width, 8 * width]
        stages, c_in = [], width
        for i, c_out in enumerate(widths):
            stages.append(LBBlock(c_in, c_out, 1 if i == 0 else 2, act))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(widths[-1], num_classes)
        _he_init(self, mode="fan_out")

    def forward_after_first(self, z: torch.Tensor) -> torch.Tensor:
        out = self.stages(self.maxpool(self.act(self.bn1(z))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


# ---------------------------------------------------------------------------- VGG

_VGG_LAYERS: dict[str, list[int | str]] = {
    "vgg9": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M"],
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
}


class VGG(FirstAffineNet):
    def __init__(self, name: str, input_shape: tuple[int, ...], num_classes: int, width: int):
        super().__init__()
        c_in, h, w = input_shape
        plan = [v if v == "M" else max(1, int(v) * width // 64) for v in _VGG_LAYERS[name]]
        convs = [v for v in plan if v != "M"]
        self.conv1 = nn.Conv2d(c_in, int(convs[0]), 3, padding=1)
        layers: list[nn.Module] = [nn.BatchNorm2d(int(convs[0])), nn.ReLU()]
        c = int(convs[0])
        for v in plan[1:]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                h, w = math.ceil(h / 2), math.ceil(w / 2)
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU()]
                c = int(v)
        self.features = nn.Sequential(*layers)
        if name == "vgg9":  # Li et al.: one BatchNorm'd dense layer before the head
            self.classifier = nn.Sequential(
                nn.Flatten(),
                nn.Linear(c * h * w, c),
                nn.BatchNorm1d(c),
                nn.ReLU(),
                nn.Linear(c, num_classes),
            )
        else:
            self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))
        _he_init(self, mode="fan_out")

    def forward_after_first(self, z: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(z))


# ---------------------------------------------------------------------------- WideResNet


class WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv twice; a 1x1 conv shortcut where the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.project: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.project = nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        # The projection sees the activated input, as in the reference WRN code.
        return out + (x if self.project is None else self.project(pre))


class WideResNet(FirstAffineNet):
    def __init__(self, depth: int, k: int, in_channels: int, num_classes: int):
        super().__init__()
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        c_in = 16
        for c_out, stride in ((16 * k, 1), (32 * k, 2), (64 * k, 2)):
            for i in range(n):
                blocks.append(WideBlock(c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.fc = nn.Linear(c_in, num_classes)
        _he_init(self, mode="fan_out")
        if not self.fc.weight.is_meta:
            nn.init.xavier_normal_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

    def forward_after_first(self, z: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.blocks(z)))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _he_init(model: nn.Module, *, mode: Literal["fan_in", "fan_out"]) -> None:
    """He-normal convolutions, BatchNorm at identity; linear layers keep PyTorch's default."""
    if any(p.is_meta for p in model.parameters()):
        return  # sized only (parameter_count): normal_ on meta tensors takes seconds
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------- specs

# Each key: (default, checker returning an error text or None).
Checker = Callable[[Any], "str | None"]


def _int_at_least(lo: int) -> Checker:
    def check(v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= lo
        return None if ok else f"an integer >= {lo}"

    return check


def _int_list(*, allow_empty: bool) -> Checker:
    def check(v: Any) -> str | None:
        ok = isinstance(v, list | tuple) and (allow_empty or len(v) > 0)
        ok = ok and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)
        return (
            None if ok else "a list of positive integers" + ("" if allow_empty else " (non-empty)")
        )

    return check


def _one_of(*choices: Any) -> Checker:
    def check(v: Any) -> str | None:
        return None if v in choices and not isinstance(v, bool) else f"one of {list(choices)}"

    return check


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def _odd(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= 1 and v % 2 == 1
    return None if ok else "an odd positive integer"


_ACT = _one_of(*_ACTIVATIONS)
_SPECS: dict[str, dict[str, tuple[Any, Checker]]] = {
    "mlp": {"widths": ([100, 100], _int_list(allow_empty=True)), "activation": ("relu", _ACT)},
    "cnn": {
        "channels": ([32, 64], _int_list(allow_empty=False)),
        "kernel_size": (3, _odd),
        "hidden": ([128], _int_list(allow_empty=True)),
        "batchnorm": (False, _bool),
        "activation": ("relu", _ACT),
    },
    "resnet20": {"shortcut": ("A", _one_of("A", "B"))},
    "resnet56": {"shortcut": ("A", _one_of("A", "B"))},
    "resnet110": {"shortcut": ("A", _one_of("A", "B"))},
    "resnet-lb": {"activation": ("relu", _ACT), "width": (64, _int_at_least(1))},
    "vgg9": {"width": (64, _int_at_least(1))},
    "vgg11": {"width": (64, _int_at_least(1))},
    "wrn": {"depth": (28, _int_at_least(10)), "k": (2, _int_at_least(1))},
}
_RESNET_DEPTH = {"resnet20": 20, "resnet56": 56, "resnet110": 110}


def architecture_names() -> list[str]:
    """The names ``build_model`` accepts besides ``module:callable``: the built-ins and the
    installed entry points."""
    return [*_SPECS, *(n for n in user.entry_point_names(user.ARCHITECTURES) if n not in _SPECS)]


def is_user_architecture(architecture: str) -> bool:
    """Whether ``architecture`` is the user's code (a reference or an entry point)."""
    return architecture not in _SPECS


def check_architecture(architecture: str, config: dict[str, Any] | None) -> dict[str, Any]:
    """The validated config with defaults filled in; SpecError naming the bad key otherwise.

    A user architecture's factory is imported (UserCodeError when it cannot be) and its
    config is kept as given: the factory's own signature checks it when it is built.
    """
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise SpecError(f"{architecture} config must be a table of keys, got {config!r}")
    spec = _SPECS.get(architecture)
    if spec is None:
        if not user.is_reference(architecture) and architecture not in user.entry_point_names(
            user.ARCHITECTURES
        ):
            raise SpecError(
                f"unknown architecture {architecture!r}: use one of {', '.join(architecture_names())} "
                "or your own factory as module:callable (e.g. my_pkg.nets:make_net)"
            )
        if len(architecture) > 64:
            raise SpecError(f"architecture reference {architecture!r} is longer than 64 characters: use a shorter module path or an entry point")  # fmt: skip
        user.resolve(architecture, user.ARCHITECTURES, "architecture")
        return copy.deepcopy(config)
    unknown = sorted(set(config) - set(spec))
    if unknown:
        allowed = ", ".join(spec) or "none"
        raise SpecError(f"{architecture} has no config key {unknown[0]!r}: allowed keys: {allowed}")
    out: dict[str, Any] = {}
    for key, (default, check) in spec.items():
        value = copy.deepcopy(config.get(key, default))
        problem = check(value)
        if problem is not None:
            raise SpecError(f"{architecture} config {key} = {value!r} is invalid: use {problem}")
        out[key] = list(value) if isinstance(value, tuple) else value
    if architecture == "wrn" and (out["depth"] - 4) % 6:
        raise SpecError(f"wrn depth {out['depth']} is invalid: use 6n + 4 (10, 16, 22, 28, 40)")
    return out


def build_model(
    architecture: str,
    config: dict[str, Any] | None,
    *,
    input_shape: tuple[int, ...] | list[int],
    num_classes: int,
    seed: int,
) -> nn.Module:
    """A freshly initialised network; the same arguments give bitwise the same weights.

    The initialisation draws from torch's global generator inside ``fork_rng`` seeded with
    ``seed``, so the caller's random state is left as it was. The generator is the process's:
    a lock keeps two threads (worker loops of one `tracker work`) from reseeding it under
    each other's draws.
    """
    cfg = check_architecture(architecture, config)
    shape = tuple(int(s) for s in input_shape)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SpecError(f"model seed must be an integer, got {seed!r}")
    if is_user_architecture(architecture):
        with _SEEDED, torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_user_model(architecture, cfg)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise SpecError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not shape or any(s < 1 for s in shape):
        raise SpecError(f"input shape {shape} is invalid: use a sample's shape, e.g. (3, 32, 32)")
    if architecture != "mlp" and len(shape) != 3:
        raise SpecError(
            f"{architecture} needs image inputs (channels, height, width), but the data has "
            f"shape {shape}: use the mlp architecture for this dataset"
        )
    with _SEEDED, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _construct(architecture, cfg, shape, num_classes)


def build_user_model(architecture: str, config: dict[str, Any]) -> nn.Module:
    """The user's factory called with ``config`` as keyword arguments; it must return a module."""
    factory = user.resolve(architecture, user.ARCHITECTURES, "architecture")
    model = user.call(factory, architecture, "architecture", **config)
    if not isinstance(model, nn.Module):
        raise UserCodeError(
            f"architecture {architecture!r} returned a {type(model).__name__}, not a "
            "torch.nn.Module: return the network from the factory"
        )
    return model


def _construct(arch: str, cfg: dict[str, Any], shape: tuple[int, ...], classes: int) -> nn.Module:
    if arch == "mlp":
        return MLP(math.prod(shape), cfg["widths"], classes, cfg["activation"])
    if arch == "cnn":
        return SmallCNN(shape, cfg, classes)
    if arch in _RESNET_DEPTH:
        return CifarResNet(_RESNET_DEPTH[arch], shape[0], classes, cfg["shortcut"])
    if arch == "resnet-lb":
        return LBResNet(shape[0], classes, cfg["width"], cfg["activation"])
    if arch in _VGG_LAYERS:
        return VGG(arch, shape, classes, cfg["width"])
    return WideResNet(cfg["depth"], cfg["k"], shape[0], classes)


def parameter_count(architecture: str, config: dict[str, Any] | None, dataset: str) -> int:
    """The number of parameters of ``architecture`` on ``dataset``, built on the meta device
    (no memory, no initialisation cost): a size for planning work, e.g. tiles."""
    from compute.data import dataset_shape

    cfg = check_architecture(architecture, config)
    if is_user_architecture(architecture):
        return sum(p.numel() for p in build_user_model(architecture, cfg).parameters())
    input_shape, num_classes = dataset_shape(dataset)
    with torch.device("meta"):
        model = _construct(architecture, cfg, tuple(input_shape), num_classes)
    return sum(p.numel() for p in model.parameters())


def check_fits(model: nn.Module, architecture: str, x: torch.Tensor, num_classes: int) -> None:
    """Run ``model`` on two samples ``x``: UserCodeError on one line when the network cannot take
    the data set's inputs or gives the wrong number of outputs."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x[:2])
    except Exception as err:
        text = f"{type(err).__name__}: {err}".splitlines()[0]
        raise UserCodeError(
            f"architecture {architecture!r} cannot run on the dataset's inputs of shape "
            f"{tuple(x.shape[1:])} ({text}): build it for that input shape"
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != num_classes:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserCodeError(
            f"architecture {architecture!r} outputs {shape} for 2 samples, the dataset needs "
            f"(2, {num_classes}): give the network {num_classes} outputs (e.g. num_classes in "
            "--arch-config)"
        )
