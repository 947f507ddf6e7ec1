"""Evaluate a model's loss and accuracy at many points ``centre + a * d1 + b * d2``.

``SurfaceEvaluator`` keeps one working copy of the model on the device, whose parameters and
floating buffers are views into a single flat vector, and the evaluation groups as ready tensors
on the device. Two strategies compute the same numbers:

- ``loop``: per point, the flat vector is overwritten in place and the model runs once per group
  (in eval-BN mode a large group runs in sample batches; the loss is still the group's mean).
- ``vmap``: K points at once, ``torch.func.vmap`` over ``functional_call`` with the moved tensors
  stacked along a leading axis. Every call gets exactly K points (the last chunk is padded), so a
  point's numbers do not depend on how the points were split into calls or tiles.

``auto`` follows the rule next to ``VMAP_ROWS`` below: K is the power of two at or below
``VMAP_ROWS / samples`` (capped); vmap is taken when K reaches ``VMAP_MIN_POINTS``, and on CPU
only for models without convolutions. vmap pays off when one forward is too small to keep the
device busy; for larger groups the loop is faster.

First-affine lever: when the model implements the protocol (``first_affine``,
``prepare_input``, ``forward_after_first``) the first layer is linear in its weights, so
``f(x; W0 + a D1 + b D2, b0 + a e1 + b e2) = f(x; W0, b0) + a f(x; D1, e1) + b f(x; D2, e2)``.
Those 1 + ndim outputs are computed once per group; each point then costs an axpy plus
``forward_after_first``. It is used when the cached outputs fit in half the memory budget.
Any other network gets the protocol found for it: ``torch.fx`` traces its forward, and when
the input goes (through flatten/view/reshape only) into one ``nn.Linear`` or ``nn.Conv2d``
and nowhere else, the graph is cut there into ``prepare_input`` and ``forward_after_first``
(``plan['first_affine_source']`` says which: 'protocol', 'traced', or why neither). On
CPU, a 4-D first-layer output is cached channels-last (NHWC), so the rest of a convolutional
network runs in that format: max pooling and convolution are several times faster there. Not
with ``bn_mode='train'``: CPU BatchNorm's batch statistics on NHWC are ~1e-4 less precise, and
a surface was off by 5e-5 relative against float64; contiguous, it agrees to 1e-6.

BatchNorm: ``bn_mode='eval'`` uses the stored running statistics; ``'train'`` normalises with
the group's batch statistics (the whole group as one batch). In the working copy the BatchNorm
layers are put in training mode with ``track_running_stats=False``, so no running statistic is
ever written; every other layer (dropout included) stays in eval mode. ``'recompute'``
re-estimates the running statistics at every point from the given training batches (a
cumulative average over them, PyTorch's ``momentum=None``, as mode-connectivity work's
``bn_update`` does) and then evaluates in eval mode; it runs the loop strategy, one point at a
time, and the statistics are written into the point's own state, never into the centre.

K (points per vmap call), the sample batch and the first-affine choice are deterministic
functions of the sizes (model, groups, directions) and the memory budget, never of timing.

Threads on CPU: every point is computed with ONE intra-op thread (and so is the first-affine
cache). Reductions in ATen split their work by the thread count (a float32 sum of 100,000 values
differs in its last bits between 1 and 2 threads), so this makes the numbers independent of the
machine's thread count: a 1-thread tracker worker and a multi-threaded process give the same
bytes. The process's threads are used across points instead: with ``torch.get_num_threads()``
= T > 1 at construction, ``evaluate`` cuts the points into contiguous chunks (whole K-point
calls for vmap, ``CHUNKS_PER_THREAD`` per thread) that T Python threads take in turn, each on
its own working copy (model and flat vector; the groups and the first-affine cache are shared,
read-only). ATen releases the GIL inside kernels. Measured on 2 shared cores (best of 3-5,
interleaved), MLP 64-100-100-10 on 1,797 samples (loop): 2 point threads 1,220-1,700 points/s,
2 intra-op threads (the former way) 1,240-1,340, one thread 830-980; MLP 784-100-100-10 on
4,000 samples: 475-496 against 539 for 2 intra-op threads (each thread now walks all rows, which
no longer fit a core's L2): the price of numbers that do not depend on the thread count.
T (``plan['point_threads']``) is capped so that T copies of the per-thread buffers fit the
memory budget; it never changes a number.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compute import user
from compute.state import Layout, check_length, layout_of, same_layout
from compute.threads import exact_float32, tensor_float32
from tracker import SpecError, UserCodeError

# softmax_mse: classification scored as Goldstein's --loss_name mse does, the mean squared error
# between the softmax output and the one-hot label (accuracy as usual).
LOSSES = ("cross_entropy", "mse", "softmax_mse")
_CLASSIFY = ("cross_entropy", "softmax_mse")
BN_MODES = ("eval", "train", "recompute")
STRATEGIES = ("auto", "loop", "vmap")
PRECISIONS = ("fp32", "tf32", "bf16")
# torch.compile modes of the loop strategy's forward ("none": eager).
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")

# The vmap rule, per device kind: K is the power of two at or below ROWS / samples, capped by
# MAX_POINTS and by the memory budget; 'auto' takes vmap when K >= MIN_POINTS (and, on CPU, the
# model has no convolution: vmapped convolutions with per-point weights become grouped
# convolutions, which are slower there than the loop). Measured on 2 CPU cores: vmap wins at
# 128 samples per group, the loop from 256 on.
VMAP_ROWS = {"cpu": 2048, "cuda": 16384}
VMAP_MAX_POINTS = {"cpu": 32, "cuda": 64}
VMAP_MIN_POINTS = {"cpu": 16, "cuda": 4}
# Models that batch K weight settings themselves (MLPs: one bmm per layer, no vmap) gain up to
# K*N = 8192 rows on CPU (digits MLP, 128 samples, CPU time per point: K=16 5.7k/s, K=64 8.4k/s,
# the per-point loop 4.3k/s).
OWN_BATCH_ROWS = {"cpu": 8192, "cuda": 65536}
OWN_BATCH_MAX_POINTS = {"cpu": 64, "cuda": 256}
# Point threads (CPU, see the module docstring) share the points in this many chunks each.
CHUNKS_PER_THREAD = 4
DEFAULT_BUDGET_CPU = 1 << 30  # bytes; on CUDA the default is a quarter of the device memory
# Memory per sample of a forward: the sum of every leaf module's output, times this factor. The
# sum already over-counts what inference keeps alive at once (a few layers' outputs); the factor
# covers the copies vmap makes (per-point convolutions become one grouped convolution).
_ACTIVATION_FACTOR = 2

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


@contextlib.contextmanager
def _precision(mode: str, device: torch.device) -> Iterator[None]:
    """fp32 (exact float32 matmuls and convolutions: cuDNN's TF32 default off), tf32
    (TensorFloat-32 matmuls and convolutions) or bf16 (autocast to bfloat16; losses still
    reduced in float32)."""
    if device.type != "cuda":
        yield
        return
    if mode == "fp32":
        with exact_float32(device):
            yield
        return
    if mode == "bf16":
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
        return
    with tensor_float32(device, True):
        yield


@contextlib.contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """One intra-op thread on CPU for the duration (see the module docstring), restored after."""
    old = torch.get_num_threads()
    if device.type != "cpu" or old == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass
class _Replica:
    """A working state for one thread: the model copy, the flat vector its state views, and the
    module ``functional_call`` runs (the whole model or the part after the first layer)."""

    model: nn.Module
    flat: torch.Tensor
    runner: nn.Module
    # Layer outputs an allocation-free forward reuses from point to point (see infer_after_first).
    scratch: dict[Any, Any] = field(default_factory=dict)
    # The loop's forward compiled with torch.compile (compile_mode), made on first use.
    compiled: Any = None


class _Whole(nn.Module):
    """The model's plain forward, under one name prefix for ``functional_call``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _AfterFirst(nn.Module):
    """The network after its first affine layer, as a module ``functional_call`` can run."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # The protocol's method (see _has_protocol), which nn.Module's typing does not know.
        out: torch.Tensor = cast(Any, self.model).forward_after_first(z)
        return out


_PREPARE_METHODS = frozenset({"flatten", "view", "reshape", "float", "contiguous"})


def _has_protocol(model: nn.Module) -> bool:
    return isinstance(getattr(model, "first_affine", None), str) and all(
        callable(getattr(model, m, None)) for m in ("prepare_input", "forward_after_first")
    )


def trace_first_affine(model: nn.Module) -> str:
    """Give ``model`` the first-affine protocol, found by tracing its forward with torch.fx;
    return '' when done, else why not. The two halves are GraphModules that call ``model``'s
    own submodules, kept as plain attributes (not submodules: the state keys stay the same),
    so a deep copy of ``model`` copies them along with the modules they share."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as err:  # data-dependent control flow and friends
        return f"torch.fx cannot trace its forward ({type(err).__name__})"
    graph = gm.graph
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        return "its forward takes more than one input"
    if any(n.op == "get_attr" for n in graph.nodes):
        return "its forward reads parameters directly (not through submodules)"
    node, prepare = inputs[0], []
    while True:
        users = list(node.users)
        if len(users) != 1:
            return "its input feeds more than one operation"
        step = users[0]
        rest = [a for a in (*step.args[1:], *step.kwargs.values()) if isinstance(a, torch.fx.Node)]
        if not step.args or step.args[0] is not node or rest:
            return "its input goes into an operation with other inputs"
        if step.op == "call_module":
            sub = model.get_submodule(str(step.target))
            if isinstance(sub, nn.Linear | nn.Conv2d):
                first = step
                break
            if not isinstance(sub, nn.Flatten):
                return f"its first operation on the input is {type(sub).__name__}, not Linear or Conv2d"  # fmt: skip
        elif not (
            (step.op == "call_method" and step.target in _PREPARE_METHODS)
            or (step.op == "call_function" and step.target in (torch.flatten, torch.reshape))
        ):
            return f"its first operation on the input is {step.target}, not Linear or Conv2d"
        prepare.append(step)
        node = step

    head, env = torch.fx.Graph(), {}
    env[inputs[0]] = head.placeholder("x")
    for n in prepare:
        env[n] = head.node_copy(n, lambda a: env[a])
    head.output(env[prepare[-1]] if prepare else env[inputs[0]])
    tail, env2 = torch.fx.Graph(), {}
    env2[first] = tail.placeholder("z")
    skip = {inputs[0], first, *prepare}
    for n in graph.nodes:
        if n not in skip:
            env2[n] = tail.node_copy(n, lambda a: env2[a])
    object.__setattr__(model, "first_affine", str(first.target))
    object.__setattr__(model, "prepare_input", torch.fx.GraphModule(model, head))
    object.__setattr__(model, "forward_after_first", torch.fx.GraphModule(model, tail))
    return ""


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SpecError(f"{name}={value!r} is not one of {', '.join(allowed)}: pick one of those")
    return value


class SurfaceEvaluator:
    """Loss and accuracy of ``model`` at points of the plane (or line) through ``centre``.

    Args:
        model: the network; it is copied, never modified.
        layout: the flat layout of the model's state (``compute.state.layout_of``).
        centre: the flat state at coordinates 0.
        directions: one or two flat direction vectors of the layout's length.
        groups: evaluation groups ``(x, y)``; every group gets its own value per point.
        loss: ``'cross_entropy'`` (integer labels), ``'mse'`` (float targets),
            ``'softmax_mse'`` (integer labels: softmax against the one-hot label), or a
            ``module:fn(outputs, targets)`` returning per-sample losses.
        bn_mode: ``'eval'`` (running statistics), ``'train'`` (the group's batch statistics) or
            ``'recompute'`` (running statistics re-estimated per point from ``bn_batches``).
        device: where to evaluate.
        strategy: ``'auto'``, ``'loop'`` or ``'vmap'`` (see the module docstring).
        first_affine: use the first-affine lever when the model supports it.
        points_per_call: K for vmap; by default derived from the memory budget.
        max_memory_bytes: the memory budget; default 1 GiB on CPU, a quarter of a GPU's memory.
        precision: 'fp32', 'tf32' or 'bf16' (autocast; losses reduced in float32); GPU only.
        compile_mode: torch.compile mode of the loop strategy's forward ('none': eager). The
            forward is compiled once per working copy, at construction for the first one, and
            the compile time is reported apart in ``plan['compile_seconds']``.
        bn_batches: the training input batches of ``bn_mode='recompute'``.
    """

    def __init__(
        self,
        model: nn.Module,
        layout: Layout,
        centre: torch.Tensor,
        directions: list[torch.Tensor],
        groups: list[tuple[torch.Tensor, torch.Tensor]],
        *,
        loss: str,
        bn_mode: str,
        device: torch.device | str,
        strategy: str = "auto",
        first_affine: bool = True,
        points_per_call: int | None = None,
        max_memory_bytes: int | None = None,
        precision: str = "fp32",
        compile_mode: str = "none",
        bn_batches: list[torch.Tensor] | None = None,
    ) -> None:
        # A module:fn loss gives per-sample losses; accuracy is counted for integer labels.
        self._loss_fn = user.resolve(loss, user.LOSSES, "loss") if user.is_reference(loss) else None
        self._loss = loss if self._loss_fn is not None else _choice("loss", loss, LOSSES)
        self._compile_mode = _choice("compile_mode", compile_mode, COMPILE_MODES)
        self._precision = _choice("precision", precision, PRECISIONS)
        self._bn_mode = _choice("bn_mode", bn_mode, BN_MODES)
        self._bn_batch = self._bn_mode == "train"  # BatchNorm normalises with batch statistics
        if (self._bn_mode == "recompute") != bool(bn_batches):
            raise SpecError(
                "bn_mode='recompute' needs training batches (bn_batches), and only it takes them"
            )
        _choice("strategy", strategy, STRATEGIES)
        self._device = torch.device(device)
        if not 1 <= len(directions) <= 2:
            raise SpecError(f"a surface needs 1 or 2 directions, got {len(directions)}")
        if points_per_call is not None and int(points_per_call) < 1:
            raise SpecError(f"points_per_call must be at least 1, got {points_per_call}")
        if not groups:
            raise SpecError("no evaluation groups: pass at least one (x, y) pair")
        self._ndim = len(directions)
        self._layout = layout

        centre_vec = self._vector(centre, "the centre")
        dirs = [self._vector(d, f"direction {i + 1}") for i, d in enumerate(directions)]
        self._centre = centre_vec.to(self._device)
        self._dirs = [d.to(self._device) for d in dirs]

        work = copy.deepcopy(model).float()
        if not same_layout(layout_of(work), layout):
            raise SpecError(
                "the model's state does not match the layout: build the model with the "
                "architecture and config the checkpoint was saved from"
            )
        work.to(self._device)
        work.eval()
        self._first_source = "protocol" if _has_protocol(work) else ""
        if first_affine and not self._first_source:
            why = trace_first_affine(work)
            self._first_source = "traced" if not why else f"not found: {why}"
        self._model = work
        self._flat = self._centre.clone()
        self._bind(work, self._flat)

        self._groups = [self._group(i, x, y) for i, (x, y) in enumerate(groups)]
        self._bn_inputs = [
            (b.float() if torch.is_floating_point(b) else b).to(self._device)
            for b in (bn_batches or [])
        ]
        # Entries that some direction moves, tensor by tensor.
        self._moved = [
            e
            for e in layout
            if any(bool(d[e["offset"] : e["offset"] + e["size"]].any()) for d in dirs)
        ]

        with torch.no_grad():
            activations, first_out, first_dims = self._probe()
        if self._bn_mode == "train":
            for module in work.modules():
                if isinstance(module, _BATCHNORMS):
                    module.train()
                    module.track_running_stats = False

        self._plan = self._decide(
            strategy,
            first_affine,
            points_per_call,
            max_memory_bytes,
            activations,
            first_out,
            first_dims,
        )
        # Reduced precision is opt-in and only on a GPU; a CPU worker computes in float32.
        used = self._precision if self._device.type == "cuda" else "fp32"
        self._plan["precision"] = used
        if used != self._precision:
            self._plan["precision_note"] = f"{self._precision} needs a GPU: computed in fp32"
        runner = _AfterFirst(work) if self._plan["first_affine"] else _Whole(work)
        # The working copy of the calling thread; further ones are made on first use.
        self._replicas = [_Replica(work, self._flat, runner)]
        self._cache: list[list[torch.Tensor]] = []
        if self._plan["first_affine"]:
            with torch.no_grad(), _one_thread(self._device):
                self._cache = [self._first_outputs(x) for x, _ in self._groups]
        elif self._plan["channels_last"]:
            self._groups = [
                (x.contiguous(memory_format=torch.channels_last), y) for x, y in self._groups
            ]
        self._plan["compile"] = self._compile_mode
        if self._compile_mode != "none":
            if self._plan["strategy"] == "loop":
                self._warm_compiled()
            else:
                self._plan["compile_note"] = "compile applies to the loop strategy: vmap is eager"

    def _warm_compiled(self) -> None:
        """Compile the first working copy's forward now, on one sample batch, and time it."""
        import time

        started = time.perf_counter()
        rep = self._replicas[0]
        step = self._plan["sample_batch"]
        inputs = self._cache[0][0][:step] if self._plan["first_affine"] else self._groups[0][0][:step]
        with torch.inference_mode(), _precision(self._plan["precision"], self._device):
            self._forward(rep)(inputs)
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        self._plan["compile_seconds"] = round(time.perf_counter() - started, 3)

    def _forward(self, rep: _Replica) -> Any:
        """The loop's forward of one working copy: compiled once when compile_mode asks."""
        if self._compile_mode == "none":
            return rep.runner
        if rep.compiled is None:
            rep.compiled = torch.compile(rep.runner, mode=self._compile_mode, dynamic=False)
        return rep.compiled

    def shrink(self) -> bool:
        """Halve the work per call after an out-of-memory error: K for vmap, else the sample
        batch (not in BN-train mode, where the batch is the group). False when nothing is left
        to halve. The plan records each step, so a retried tile says what it ran with."""
        plan = self._plan
        if plan["strategy"] == "vmap" and plan["points_per_call"] > 1:
            plan["points_per_call"] //= 2
        elif plan["strategy"] == "loop" and plan["sample_batch"] > 1 and self._bn_mode != "train":
            plan["sample_batch"] = max(1, plan["sample_batch"] // 2)
        else:
            return False
        for rep in self._replicas:
            rep.scratch.clear()
        plan["oom_retries"] = plan.get("oom_retries", 0) + 1
        return True

    # ------------------------------------------------------------------ setup

    def _vector(self, vec: torch.Tensor, what: str) -> torch.Tensor:
        vec = torch.as_tensor(vec)
        if vec.dim() != 1:
            raise SpecError(f"{what} must be a flat state vector, got shape {tuple(vec.shape)}")
        check_length(vec, self._layout)
        vec = vec.detach().to("cpu", torch.float32)
        if not bool(torch.isfinite(vec).all()):
            raise SpecError(f"{what} contains NaN or infinite values: check the checkpoint")
        return vec

    def _bind(self, model: nn.Module, flat: torch.Tensor) -> None:
        """Make every floating state entry of ``model`` a view into ``flat``."""
        for entry in self._layout:
            module_name, _, attr = entry["name"].rpartition(".")
            try:
                module = model.get_submodule(module_name)
            except AttributeError as err:
                raise SpecError(
                    f"state entry {entry['name']!r} names no submodule of the model: "
                    "use a model whose state_dict keys follow its modules"
                ) from err
            view = flat[entry["offset"] : entry["offset"] + entry["size"]].view(entry["shape"])
            param = module._parameters.get(attr)
            if param is not None:
                param.data = view
            elif attr in module._buffers:
                module._buffers[attr] = view
            else:
                raise SpecError(
                    f"state entry {entry['name']!r} is neither a parameter nor a buffer: "
                    "use a model whose state_dict keys follow its modules"
                )

    def _group(
        self, index: int, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(x)
        y = torch.as_tensor(y)
        if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise SpecError(
                f"group {index}: inputs {tuple(x.shape)} and targets {tuple(y.shape)} must have "
                "the same, non-zero number of samples"
            )
        if self._loss_fn is not None:
            y = y if torch.is_floating_point(y) else y.long()
        elif self._loss in _CLASSIFY:
            if torch.is_floating_point(y):
                raise SpecError(
                    f"group {index}: {self._loss} needs integer class labels, got {y.dtype}: "
                    "use loss='mse' for regression targets"
                )
            y = y.reshape(-1).long()
        else:
            y = y.reshape(y.shape[0], -1).float()
        x = x.float() if torch.is_floating_point(x) else x
        return x.to(self._device), y.to(self._device)

    def _protocol_layer(self) -> tuple[nn.Module | None, str]:
        model = self._model
        name = getattr(model, "first_affine", None)
        if not (
            isinstance(name, str)
            and callable(getattr(model, "prepare_input", None))
            and callable(getattr(model, "forward_after_first", None))
        ):
            return None, "the model does not implement the first-affine protocol"
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            return None, f"first_affine names no submodule ({name!r})"
        if not isinstance(layer, _AFFINE):
            return None, f"the first layer {name!r} is not nn.Linear or nn.Conv"
        own = {f"{name}.{p}" for p, _ in layer.named_parameters(recurse=False)}
        entries = {e["name"] for e in self._layout if e["name"].startswith(name + ".")}
        if not entries <= own:
            return None, f"the first layer {name!r} has state besides its weight and bias"
        return layer, ""

    def _probe(self) -> tuple[int, int, int]:
        """Floats per sample output by leaf modules and by the first affine layer, and the
        number of dimensions of the latter's output (0 without the protocol)."""
        layer, _ = self._protocol_layer()
        sizes: dict[int, int] = {}
        dims: dict[int, int] = {}

        def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                sizes[id(module)] = sizes.get(id(module), 0) + output[0].numel()
                dims[id(module)] = output.dim()

        leaves = [m for m in self._model.modules() if not any(True for _ in m.children())]
        handles = [m.register_forward_hook(hook) for m in leaves]
        try:
            self._model(self._groups[0][0][:1])
        except Exception as err:
            raise SpecError(
                f"the model cannot run on the evaluation inputs {tuple(self._groups[0][0].shape)}: "
                f"{type(err).__name__}: {err}".splitlines()[0]
            ) from err
        finally:
            for handle in handles:
                handle.remove()
        first = sizes.get(id(layer), 0) if layer is not None else 0
        return max(1, sum(sizes.values())), first, dims.get(id(layer), 0)

    def _decide(
        self,
        strategy: str,
        first_affine: bool,
        points_per_call: int | None,
        max_memory_bytes: int | None,
        activations: int,
        first_out: int,
        first_dims: int,
    ) -> dict[str, Any]:
        budget = (
            int(max_memory_bytes) if max_memory_bytes is not None else default_budget(self._device)
        )
        sizes = [int(x.shape[0]) for x, _ in self._groups]
        largest = max(sizes)
        moved = sum(int(e["size"]) for e in self._moved)
        values = sum(int(e["size"]) for e in self._layout)

        layer, why_not = self._protocol_layer()
        use_first = False
        if not first_affine:
            why_not = "first_affine=False"
        elif layer is not None:
            # z0 and one output per direction, plus the loop's two reusable buffers
            cache = 4 * (3 + self._ndim) * first_out * sum(sizes)
            use_first = cache <= budget // 2
            if not use_first:
                why_not = f"its cached outputs ({cache:,} bytes) exceed half the budget"

        per_point = 4 * (values + _ACTIVATION_FACTOR * largest * activations)
        fit = max(1, budget // per_point)
        kind = "cpu" if self._device.type == "cpu" else "cuda"
        # K: a power of two near VMAP_ROWS / samples, capped per device and by the budget.
        own = use_first and hasattr(self._model, "infer_batched_after_first")
        rows = (OWN_BATCH_ROWS if own else VMAP_ROWS)[kind]
        cap = (OWN_BATCH_MAX_POINTS if own else VMAP_MAX_POINTS)[kind]
        by_rows = 1 << max(0, (rows // largest).bit_length() - 1)
        k_auto = max(1, min(by_rows, cap, fit))
        if self._bn_mode == "recompute":
            strategy = "loop"
            reason = "bn_mode=recompute: the statistics are re-estimated point by point (loop)"
        elif strategy == "auto":
            convs = kind == "cpu" and any(isinstance(m, _CONVS) for m in self._model.modules())
            strategy = "vmap" if k_auto >= VMAP_MIN_POINTS[kind] and not convs else "loop"
            reason = (
                f"auto: {largest} samples per group -> K={k_auto} -> {strategy} (vmap when "
                f"K = min({rows}/samples, {cap}, memory) >= "
                f"{VMAP_MIN_POINTS[kind]}"
                + (", and no convolution on CPU)" if kind == "cpu" else ")")
            )
        else:
            reason = f"strategy={strategy} requested"
        if strategy == "vmap":
            k = int(points_per_call) if points_per_call is not None else k_auto
            sample_batch = largest
        else:
            k = 1
            if self._bn_mode == "train":
                sample_batch = largest  # batch statistics need the whole group at once
            else:
                per_sample = 4 * _ACTIVATION_FACTOR * activations
                sample_batch = int(min(largest, max(1, budget // per_sample)))
        # NHWC activations: CPU max-pooling and convolution run several times faster. Not with
        # batch statistics: CPU BatchNorm in training mode reduces an NHWC tensor ~1e-4 less
        # precisely (5e-5 relative on a surface), so BN-train keeps the contiguous layout. On a
        # GPU, cuDNN's NHWC kernels (tensor cores) take 4-D inputs as they come.
        channels_last = (use_first and kind == "cpu" and first_dims == 4 and not self._bn_batch) or (
            kind == "cuda" and (first_dims == 4 if use_first else self._groups[0][0].dim() == 4)
        )
        # Point threads (CPU): each has its own flat vector and per-point buffers; the cached
        # first-layer outputs are shared. T is capped by the budget and changes no number (K,
        # the sample batch and the first-affine choice above do not depend on it).
        wanted = torch.get_num_threads() if kind == "cpu" else 1
        first_bytes = 4 * first_out * sum(sizes) if use_first else 0
        shared = (1 + self._ndim) * first_bytes
        if strategy == "vmap":
            per_thread = 4 * values + k * per_point
        else:  # flat and row vectors, the two first-layer buffers, one batch's activations
            activation_bytes = 4 * _ACTIVATION_FACTOR * activations * sample_batch
            per_thread = 8 * values + 2 * first_bytes + activation_bytes
        threads = max(1, min(wanted, (budget - shared) // per_thread))
        return {
            "strategy": strategy,
            "points_per_call": k,
            "point_threads": int(threads),
            "sample_batch": sample_batch,
            "first_affine": use_first,
            "first_affine_note": "used" if use_first else f"not used: {why_not}",
            "first_affine_source": self._first_source or "first_affine=False",
            "channels_last": channels_last,
            "batched_by": "the model (one bmm per layer)" if own else "torch.func.vmap",
            "bn_mode": self._bn_mode,
            "loss": self._loss,
            "device": str(self._device),
            "memory_budget_bytes": budget,
            "moved_values": moved,
            "groups": len(sizes),
            "reason": reason,
        }

    def _first_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The first layer's output at the centre and along each direction (bias-free if none)."""
        layer, _ = self._protocol_layer()
        assert layer is not None
        name = self._model.first_affine
        step = self._plan["sample_batch"]
        outputs: list[list[torch.Tensor]] = [[] for _ in range(1 + self._ndim)]
        prepare: Callable[[torch.Tensor], torch.Tensor] = cast(Any, self._model).prepare_input
        for start in range(0, x.shape[0], step):
            u = prepare(x[start : start + step])
            outputs[0].append(layer(u))
            for k, d in enumerate(self._dirs):
                params = {
                    p: self._slice(d, f"{name}.{p}")
                    for p, _ in layer.named_parameters(recurse=False)
                }
                outputs[k + 1].append(torch.func.functional_call(layer, params, (u,)))
        merged = [torch.cat(parts) for parts in outputs]
        if self._plan["channels_last"]:
            merged = [z.contiguous(memory_format=torch.channels_last) for z in merged]
        return merged

    def _slice(self, vec: torch.Tensor, name: str) -> torch.Tensor:
        for e in self._layout:
            if e["name"] == name:
                return vec[e["offset"] : e["offset"] + e["size"]].view(e["shape"])
        raise SpecError(f"the layout has no entry {name!r}")

    # ------------------------------------------------------------------ evaluation

    @property
    def plan(self) -> dict[str, Any]:
        """What the evaluator chose: strategy, points per call (K), first-affine use, budget."""
        return dict(self._plan)

    @property
    def model(self) -> nn.Module:
        """The working copy (its state is the centre between ``evaluate`` calls)."""
        return self._model

    def evaluate(self, coords: np.ndarray) -> dict[str, np.ndarray]:
        """Loss and accuracy at ``coords`` [P, ndim]: ``{'loss': [G, P], 'acc': [G, P]}``.

        The loss is the mean over a group's samples; accuracy is the fraction correct (NaN for
        mse). Both are float64.
        """
        c = np.asarray(coords, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] != self._ndim:
            raise SpecError(
                f"coordinates must have shape [points, {self._ndim}] for {self._ndim} "
                f"direction(s), got {c.shape}"
            )
        if not np.isfinite(c).all():
            raise SpecError("coordinates contain NaN or infinite values")
        n_points = c.shape[0]
        n_groups = len(self._groups)
        if not n_points:
            return {"loss": np.zeros((n_groups, 0)), "acc": np.zeros((n_groups, 0))}
        # Coordinates are used in float32, as the parameters are.
        points = torch.as_tensor(c, dtype=torch.float32)
        if self._plan["strategy"] == "vmap":
            points = points.to(self._device)
        # Contiguous chunks of whole calls (K points for vmap), CHUNKS_PER_THREAD per point
        # thread, taken in turn by whichever thread is free: on a shared machine a thread that
        # is descheduled does not leave the other idle at the end.
        unit = self._plan["points_per_call"]
        calls = -(-n_points // unit)
        threads = min(self._plan["point_threads"], calls)
        with _one_thread(self._device):
            if threads == 1:
                sums, hits = self._evaluate_chunk(self._replicas[0], points)
            else:
                while len(self._replicas) < threads:
                    self._replicas.append(self._replica())
                step = unit * -(-calls // (threads * CHUNKS_PER_THREAD))
                chunks = list(range(0, n_points, step))
                todo = iter(range(len(chunks)))
                lock = threading.Lock()
                parts: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

                def work(rep: _Replica) -> None:
                    # A new thread takes the process's thread count, which another worker
                    # loop of this process may have just restored: set this one's own.
                    torch.set_num_threads(1)
                    while True:
                        with lock:
                            i = next(todo, None)
                        if i is None:
                            return
                        parts[i] = self._evaluate_chunk(rep, points[chunks[i] : chunks[i] + step])

                with ThreadPoolExecutor(max_workers=threads) as pool:
                    for future in [pool.submit(work, r) for r in self._replicas[:threads]]:
                        future.result()
                sums = torch.cat([parts[i][0] for i in range(len(chunks))], dim=1)
                hits = torch.cat([parts[i][1] for i in range(len(chunks))], dim=1)
        sizes = np.array([float(x.shape[0]) for x, _ in self._groups]).reshape(-1, 1)
        loss = sums.cpu().double().numpy() / sizes
        if self._counts_hits():
            acc = hits.cpu().double().numpy() / sizes
        else:
            acc = np.full(loss.shape, np.nan)
        return {"loss": loss, "acc": acc}

    def centre_gradient(self) -> np.ndarray:
        """The gradient of each group's loss at the centre projected on each direction,
        ``g . d_k / |d_k|``, [G, ndim] float64 (seed 001's arrow; its SGD step is minus this).

        Same loss and BatchNorm policy as the surface values (batch statistics over the whole
        group in 'train' mode; the centre's own running statistics otherwise), one intra-op
        thread, sample batches summed as ``evaluate`` does.
        """
        trained = {n for n, _ in self._model.named_parameters()}
        out = np.zeros((len(self._groups), self._ndim))
        with _one_thread(self._device), torch.enable_grad():
            for g, (x, y) in enumerate(self._groups):
                flat = self._centre.clone().requires_grad_(True)
                params = {  # buffers (running statistics) are constants of the loss
                    e["name"]: (flat if e["name"] in trained else flat.detach())[
                        e["offset"] : e["offset"] + e["size"]
                    ].view(e["shape"])
                    for e in self._layout
                }
                step = x.shape[0] if self._bn_batch else self._plan["sample_batch"]
                total = torch.zeros((), dtype=torch.float64, device=self._device)
                for start in range(0, x.shape[0], step):
                    logits = torch.func.functional_call(
                        self._model, params, (x[start : start + step],)
                    )
                    total = total + self._score(logits, y[start : start + step])[0].double()
                (grad,) = torch.autograd.grad(total / x.shape[0], flat)
                for k, d in enumerate(self._dirs):
                    norm = float(torch.linalg.vector_norm(d.double()))
                    dot = float(torch.dot(grad.double(), d.double()))
                    out[g, k] = dot / norm if norm > 0 else 0.0
        return out

    def _replica(self) -> _Replica:
        """Another working state: a model copy whose state views its own flat vector."""
        model = copy.deepcopy(self._model)
        flat = self._centre.clone()
        self._bind(model, flat)
        runner = _AfterFirst(model) if self._plan["first_affine"] else _Whole(model)
        return _Replica(model, flat, runner)

    def _evaluate_chunk(
        self, rep: _Replica, points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sums and hits [G, len(points)] on one working state (grad mode is per thread)."""
        with torch.inference_mode(), _precision(self._plan["precision"], self._device):
            if self._plan["strategy"] == "vmap":
                return self._evaluate_vmap(rep, points)
            try:
                return self._evaluate_loop(rep, points)
            finally:
                rep.flat.copy_(self._centre)

    def _evaluate_loop(
        self, rep: _Replica, points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per point: parameters overwritten in place, one forward per sample batch."""
        step = self._plan["sample_batch"]
        use_first = self._plan["first_affine"]
        # Per group, its sample batches: (inputs or cached first-layer outputs, targets, buffer).
        # The buffer receives the mixed first-layer output: no allocation per point.
        batches: list[list[tuple[Any, torch.Tensor, torch.Tensor | None]]] = []
        for g, (x, y) in enumerate(self._groups):
            parts: list[tuple[Any, torch.Tensor, torch.Tensor | None]] = []
            for start in range(0, x.shape[0], step):
                stop = min(start + step, x.shape[0])
                if use_first:
                    cache = [z[start:stop] for z in self._cache[g]]
                    parts.append((cache, y[start:stop], torch.empty_like(cache[0])))
                else:
                    parts.append((x[start:stop], y[start:stop], None))
            batches.append(parts)

        # A point is (centre + b d2) + a d1, and likewise for the first layer's output. The part
        # in b is kept while b stays the same, as along a row of a grid: one add per point.
        rows = self._ndim == 2
        row_flat = torch.empty_like(self._centre) if rows else self._centre
        row_z = [
            [torch.empty_like(inputs[0]) if rows else inputs[0] for inputs, _, _buffer in parts]
            for parts in batches
        ] if use_first else []  # fmt: skip
        row_key: float | None = None
        sums: list[list[torch.Tensor]] = [[] for _ in batches]
        hits: list[list[torch.Tensor]] = [[] for _ in batches]
        # The buffer is rebuilt for every point, so a forward may overwrite it in place.
        infer = getattr(rep.model, "infer_after_first", None)
        forward = rep.model
        if self._compile_mode != "none":  # the compiled runner, without the in-place variant
            forward = compiled = self._forward(rep)
            infer = lambda z, _scratch: compiled(z)  # noqa: E731
        elif infer is None:
            model: Any = rep.model  # the protocol's method, looked up only when called
            infer = lambda z, _scratch: model.forward_after_first(z)  # noqa: E731
        for point in points.tolist():
            if rows and point[1] != row_key:
                row_key = point[1]
                torch.add(self._centre, self._dirs[1], alpha=row_key, out=row_flat)
                for g, parts in enumerate(batches if use_first else []):
                    for (inputs, _, _), row in zip(parts, row_z[g], strict=True):
                        torch.add(inputs[0], inputs[2], alpha=row_key, out=row)
            torch.add(row_flat, self._dirs[0], alpha=point[0], out=rep.flat)
            if self._bn_inputs:
                self._recompute_statistics(rep.model)
            for g, parts in enumerate(batches):
                scores = []
                for b, (inputs, y, buffer) in enumerate(parts):
                    if buffer is not None:
                        torch.add(row_z[g][b], inputs[1], alpha=point[0], out=buffer)
                        out = infer(buffer, rep.scratch)
                    else:
                        out = forward(inputs)
                    scores.append(self._score(out, y))
                if len(scores) == 1:
                    sums[g].append(scores[0][0])
                    hits[g].append(scores[0][1])
                else:
                    sums[g].append(torch.stack([s[0] for s in scores]).double().sum())
                    hits[g].append(torch.stack([s[1] for s in scores]).sum())
        return (
            torch.stack([torch.stack(v) for v in sums]),
            torch.stack([torch.stack(v) for v in hits]),
        )

    def _recompute_statistics(self, model: nn.Module) -> None:
        """Running statistics of the point now in the model's state, from the training batches:
        reset, one training-mode forward per batch (cumulative average), back to eval mode."""
        norms = [m for m in model.modules() if isinstance(m, _BATCHNORMS)]
        saved = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        try:
            for x in self._bn_inputs:
                model(x)
        finally:
            for m, momentum in zip(norms, saved, strict=True):
                m.momentum = momentum
                m.eval()

    def _evaluate_vmap(
        self, rep: _Replica, points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """K points per call; the last chunk is padded to K so every call has the same shape."""
        k = self._plan["points_per_call"]
        use_first = self._plan["first_affine"]
        skip = f"{self._model.first_affine}." if use_first else None
        moved = [e for e in self._moved if skip is None or not e["name"].startswith(skip)]
        # A model that runs K weight settings itself (an MLP: batched products) skips vmap.
        own = getattr(self._model, "infer_batched_after_first", None) if use_first else None
        x_first = [cache[0] for cache in self._cache] if use_first else []
        prefix = "" if own is not None else "model."
        sums: list[list[torch.Tensor]] = [[] for _ in self._groups]
        hits: list[list[torch.Tensor]] = [[] for _ in self._groups]
        for start in range(0, points.shape[0], k):
            chunk = points[start : start + k]
            real = chunk.shape[0]
            if real < k:
                chunk = torch.cat([chunk, chunk[-1:].expand(k - real, -1)])
            stacked = self._combine(
                [self._centre, *self._dirs], chunk, _buffer(rep.scratch, "stacked", k, self._centre)
            )
            params = {
                f"{prefix}{e['name']}": stacked[:, e["offset"] : e["offset"] + e["size"]].view(
                    k, *e["shape"]
                )
                for e in moved
            }
            for g, (x, y) in enumerate(self._groups):
                inputs = (
                    self._combine(self._cache[g], chunk, _buffer(rep.scratch, g, k, x_first[g]))
                    if use_first
                    else x
                )
                if own is not None:
                    out = own(inputs, params, rep.scratch)
                    loss_sum, right = self._score_points(out, y)
                else:
                    loss_sum, right = self._batched(rep.runner, params, inputs, y, use_first)
                sums[g].append(loss_sum[:real])
                hits[g].append(right[:real])
        return (
            torch.stack([torch.cat(v) for v in sums]),
            torch.stack([torch.cat(v) for v in hits]),
        )

    def _combine(
        self, base: list[torch.Tensor], chunk: torch.Tensor, into: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``base[0] + a base[1] (+ b base[2])`` for each of the K points: [K, *base[0].shape]
        (written into ``into`` when given: a buffer reused from call to call)."""
        shape = (chunk.shape[0],) + (1,) * base[0].dim()
        coef = chunk[:, 0].reshape(shape)
        if into is None:
            out = torch.addcmul(base[0].unsqueeze(0), coef, base[1].unsqueeze(0))
        else:
            out = torch.addcmul(base[0].unsqueeze(0), coef, base[1].unsqueeze(0), out=into)
        for j in range(1, self._ndim):
            out.addcmul_(chunk[:, j].reshape(shape), base[j + 1].unsqueeze(0))
        return out

    def _counts_hits(self) -> bool:
        """Accuracy is defined for class labels: cross-entropy, or a user loss on integers."""
        if self._loss_fn is not None:
            return not torch.is_floating_point(self._groups[0][1])
        return self._loss in _CLASSIFY

    def _user_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        per = self._loss_fn(out, y)  # type: ignore[misc]
        if not isinstance(per, torch.Tensor) or per.shape != (y.shape[0],):
            shape = tuple(per.shape) if isinstance(per, torch.Tensor) else type(per).__name__
            raise UserCodeError(
                f"loss {self._loss!r} returned {shape} for {y.shape[0]} samples: return one "
                "loss per sample (reduction='none')"
            )
        return per

    def _score(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed loss and number correct over a batch of outputs."""
        if _classes_major(out, 2):
            if self._loss == "cross_entropy" and self._loss_fn is None:
                # The same sums over the [classes, N] storage: softmax and max over classes
                # run along its rows (4x faster than F.cross_entropy on the [N, classes] view).
                t = out.t()
                loss_sum = -t.log_softmax(0).gather(0, y.unsqueeze(0)).sum()
                return loss_sum, (t.max(dim=0).indices == y).sum()
            out = out.contiguous()
        if self._loss_fn is not None:
            loss_sum = self._user_loss(out, y).sum()
            if torch.is_floating_point(y):
                return loss_sum, torch.zeros((), device=out.device)
            return loss_sum, (out.argmax(dim=-1) == y).sum()
        if self._loss == "cross_entropy":
            loss_sum = F.cross_entropy(out, y, reduction="sum")
            hits = (out.argmax(dim=-1) == y).sum()
            return loss_sum, hits
        if self._loss == "softmax_mse":
            diff = out.softmax(dim=-1) - F.one_hot(y, out.shape[-1]).to(out.dtype)
            return (diff * diff).mean(dim=-1).sum(), (out.argmax(dim=-1) == y).sum()
        diff = out.reshape(y.shape) - y
        return (diff * diff).mean(dim=1).sum(), torch.zeros((), device=out.device)

    def _score_points(
        self, out: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``_score`` for each of K points' outputs [K, N, C] at once: two [K] tensors."""
        k, n = out.shape[0], out.shape[1]
        if _classes_major(out, 3):
            if self._loss == "cross_entropy" and self._loss_fn is None:
                t = out.transpose(1, 2)  # [K, classes, N], contiguous
                picked = t.log_softmax(1).gather(1, y.view(1, 1, n).expand(k, 1, n))
                return -picked.sum(dim=(1, 2)), (t.max(dim=1).indices == y).sum(dim=1)
            out = out.contiguous()
        if self._loss_fn is not None:
            scored = [self._score(out[i], y) for i in range(k)]
            return torch.stack([a for a, _ in scored]), torch.stack([b for _, b in scored])
        if self._loss == "cross_entropy":
            flat = out.reshape(k * n, -1)
            losses = F.cross_entropy(flat, y.repeat(k), reduction="none").view(k, n)
            return losses.sum(dim=1), (out.argmax(dim=-1) == y).sum(dim=1)
        if self._loss == "softmax_mse":
            diff = out.softmax(dim=-1) - F.one_hot(y, out.shape[-1]).to(out.dtype)
            return (diff * diff).mean(dim=-1).sum(dim=1), (out.argmax(dim=-1) == y).sum(dim=1)
        diff = out.reshape(k, *y.shape) - y
        per_sample = (diff * diff).reshape(k, n, -1).mean(dim=2)
        return per_sample.sum(dim=1), torch.zeros(k, device=out.device)

    def _batched(
        self,
        runner: nn.Module,
        params: dict[str, torch.Tensor],
        inputs: torch.Tensor,
        y: torch.Tensor,
        inputs_batched: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not params and not inputs_batched:  # nothing moves: vmap still needs a batched input
            k = self._plan["points_per_call"]
            inputs = inputs.unsqueeze(0).expand(k, *inputs.shape)
            inputs_batched = True

        def one(p: dict[str, torch.Tensor], inp: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = torch.func.functional_call(runner, p, (inp,))
            return self._score(out, y)

        in_dims = (0, 0 if inputs_batched else None)
        loss, correct = torch.vmap(one, in_dims=in_dims)(params, inputs)
        return loss, correct


def _classes_major(out: torch.Tensor, rank: int) -> bool:
    """Whether ``out`` ([..., N, classes] of ``rank`` dimensions) is a view of [..., classes, N]
    storage, as the MLP's feature-major fast paths return their logits."""
    return out.dim() == rank and not out.is_contiguous() and out.transpose(-1, -2).is_contiguous()


def _buffer(
    scratch: dict[Any, Any], name: Any, k: int, like: torch.Tensor
) -> torch.Tensor:
    """A [k, *like.shape] buffer kept in ``scratch`` across calls (fresh ~MB tensors per call
    cost page faults with glibc's default allocator)."""
    key = ("combine", name, k)
    buf = scratch.get(key)
    if buf is None:
        buf = scratch[key] = like.new_empty((k, *like.shape))
    return buf


def default_budget(device: torch.device | str) -> int:
    """The memory budget used when none is given: 1 GiB on CPU, a quarter of a GPU's memory."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 4
    return DEFAULT_BUDGET_CPU
