"""Curvature of a loss at one set of weights: Hessian spectra as PyHessian measures them.

Three measures of the Hessian H of the mean loss over a data set (Yao et al. 2020, PyHessian):

- the top-k eigenvalues and eigenvectors, by Lanczos with full reorthogonalisation (it needs
  far fewer Hessian-vector products than PyHessian's power iteration with deflation), stopped
  when every wanted Ritz pair's residual ||H y - theta y|| = beta_j |s_j| is below
  ``tol * |theta|``;
- the trace, by Hutchinson's estimator E[v^T H v] with Rademacher probes v, with its standard
  error and, optionally, per-layer traces from the same probes restricted to each layer's block;
  or by Hutch++ (``hutchpp_trace``), which takes the trace of a sketched dominant subspace
  exactly and probes only the rest. Where the network is piecewise linear in each parameter
  tensor (ReLU networks with BatchNorm in eval mode: compute.piecewise), the residual term of
  H = J^T H_L J + sum_k dL/df_k d2 f_k has zero diagonal blocks, so tr(H) and every layer's
  trace equal those of the Gauss-Newton matrix G = J^T H_L J. Hutchinson's estimator then
  probes G in output space: with B B^T = H_L and Rademacher u over samples x outputs,
  E ||J^T B u||^2 = tr(G), one backward pass through the kept forward graph per probe (about
  a third of a Hessian-vector product's work), and per layer ||(J^T B u)_layer||^2;
- the eigenvalue density, by stochastic Lanczos quadrature (SLQ): m Lanczos steps from random
  unit starts give Gauss quadrature nodes (Ritz values) and weights (squared first components
  of the Ritz vectors); the density is their mixture of Gaussians of variance
  ``sigma_squared * max(1, lambda_max - lambda_min)`` on an evenly spaced grid, averaged over
  runs and normalised to mass 1 (PyHessian's ``density_generate``).

Hessian-vector products are, by default, reverse-over-reverse (PyHessian's): each sample
batch's gradient is built once with its graph (``create_graph``) and kept for every product of
every measure on the operator while the graphs fit in a memory budget, so a product is one
backward through it; ``hvp='forward'`` gives forward-over-reverse (``torch.func.jvp`` of
``torch.func.grad`` of a ``functional_call`` loss of one flat parameter vector), several probe
vectors at once under ``vmap``, keeping nothing between products. The data goes in sample
batches weighted by batch size.
Dropout is always off; BatchNorm uses its running statistics (``bn='eval'``, the default and
PyHessian's choice) or the statistics of each sample batch (``bn='train'``, running statistics
not updated); what was used is in every result's ``config``.

This module knows nothing about SQL or the queue: it takes a model and ready tensors, returns
arrays, and calls back for progress, so a task kind, a test or a benchmark can drive it. Every
random draw comes from a ``torch.Generator`` seeded with the recorded ``seed``; the work runs
on one intra-op thread by default (``one_thread=True``, compute.threads.one_thread), so a rerun
gives the same bits on any CPU worker; ``one_thread=False`` uses the caller's thread count
(faster on an idle many-core machine, bitwise only at the same count).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap
from torch.nn import functional as F

from compute import user
from compute.piecewise import nonlinearity
from compute.threads import exact_float32
from compute.threads import one_thread as _one_thread
from tracker import SpecError, UserCodeError

Progress = Callable[[str, int, int], None]  # (stage, done, total)

LOSSES = ("cross_entropy", "mse")
BN_MODES = ("eval", "train")
HVP_MODES = ("auto", "forward", "reverse")
WHICH = ("largest", "smallest", "magnitude")
# Hutchinson's probes: of H ('hessian'), of the Gauss-Newton matrix in output space
# ('gauss-newton': its trace is H's for a piecewise-linear network), or the latter where the
# network allows it ('auto').
TRACE_ESTIMATORS = ("auto", "hessian", "gauss-newton")
STOPS = ("residual", "change")
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes for the probe vectors batched under one vmap
# Bytes the kept gradient graphs of 'reverse' may take: ResNet-20 on 512 CIFAR images needs
# ~2.3 GiB (measured 3.3 MB a sample for the graph plus ~1.2 MB during a product); a ResNet-56
# on as many (~7 GiB) is over it and rebuilds its graphs per product in budget-sized batches,
# so its peak stays near one batch's graph whatever the number of samples.
DEFAULT_GRAPH_BUDGET = 3 << 30
# A kept graph plus a product in flight, in copies of the leaf modules' outputs: measured 3.0
# (ResNet-20) and 3.3 (ResNet-56); 4 leaves room.
GRAPH_COPIES = 4
MAX_PROBE_CHUNK = 64
# Reverse products on a CPU go through each sample batch's kept graph one layer at a time, and
# a layer's double backward reads and writes a few tensors of its batch's activations: while
# the largest of them stays within a few MiB, they stay in the last-level cache between those
# operations. Measured on one thread (Zen 4, 1 MiB L2, 32 MiB L3), ResNet-20 on 512 CIFAR
# images: a product in batches of 64 (4 MiB for its largest activation) took 4.69 s against
# 5.25 s in batches of 177 (what the probe memory budget allows), 5.1 s in 96s, 8.5 s in one
# batch of 512 and 5.4 s in 32s (past this, each batch's fixed costs take over); Gauss-Newton
# probes were indifferent (1.39 against 1.42 s). An MLP's largest activation is a few hundred
# bytes a sample, so the cap never splits its data. Where no batch of ``CPU_BATCH_MIN``
# samples fits (large images), nothing stays in cache anyway and smaller batches would only
# add their fixed costs: the cap stops there.
CPU_BATCH_ACTIVATION_BYTES = 4 << 20
CPU_BATCH_MIN = 32
# PyHessian's density_generate defaults: the published smoothing.
DENSITY_BINS = 10_000
DENSITY_SIGMA_SQUARED = 1e-5
DENSITY_OVERHEAD = 0.01
UNDERFLOW = math.sqrt(2 * 746.0)  # exp(-746) is 0 in float64: Gaussians vanish past this many sigma


# Probes per reverse product (``is_grads_batched``) by the work of one product, samples in a
# sample batch x parameters. Measured on one CPU thread (CPU time per probe, blocks 1-32): a
# 267-parameter MLP on 64 samples (17k) ran 10x faster in blocks of 32; the digits MLP
# [100, 100] (17,610 parameters) 1.5x faster in blocks of 8 on 128 samples (2.3M), 1.1x on
# 384 (6.8M), and 1.2-1.5x slower in any block on its 1,438 (25M), where one product is
# already a few large matrix products and batching them only adds copies.
SMALL_PRODUCT = 200_000  # blocks of 32 up to this
MEDIUM_PRODUCT = 10_000_000  # blocks of 8 up to this; one probe at a time above


def default_probe_block(batch_size: int, parameters: int) -> int:
    """The probes one reverse product takes at once when none is given (``SMALL_PRODUCT``)."""
    work = int(batch_size) * int(parameters)
    return 32 if work <= SMALL_PRODUCT else 8 if work <= MEDIUM_PRODUCT else 1


def _threads(one: bool) -> AbstractContextManager[None]:
    return _one_thread() if one else nullcontext()


# ---------------------------------------------------------------------------- the operator


def _load_functorch_lazies() -> None:
    """Import what torch.func loads on its first call, once per process, at construction:
    ``torch._dynamo`` (~1.5-2 s on a loaded 2-core box, imported by ``grad``'s first call) and
    forward AD's decompositions, without the latter's warning (they are scripted with the
    deprecated torch.jit.script in torch 2.14; a FutureWarning from inside torch is nothing a
    caller can act on). A worker pays this once; the first product is then as fast as the rest.
    """
    import torch._dynamo  # noqa: F401

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        from torch._decomp import decompositions_for_jvp  # noqa: F401


@dataclass
class _Graph:
    """A sample batch's forward pass with its graph, one leaf per parameter tensor (a flat
    leaf split into views costs a split and a cat in every backward): Gauss-Newton probes are
    backwards through ``output``; the gradient with its own graph, for Hessian-vector
    products, is built from it on first use."""

    leaves: list[torch.Tensor]
    output: torch.Tensor
    loss_tensor: torch.Tensor
    loss: float
    gradient: tuple[torch.Tensor, ...] | None = None


class HessianOperator:
    """The Hessian of the mean loss of ``model`` on (x, y) as a linear operator on flat vectors.

    Args:
        model: the network at the weights to measure; it is copied, never changed.
        x, y: the data as ready tensors on the model's device (labels int64 for
            cross-entropy, targets for MSE).
        loss: 'cross_entropy' or 'mse' (both the mean over samples, as nn's defaults).
        bn: 'eval' (running statistics) or 'train' (batch statistics of each sample batch).
        batch_size: samples per forward; None: the most with which one probe fits in
            ``memory_budget`` and, for reverse products on a CPU, whose largest activation
            fits in ``CPU_BATCH_ACTIVATION_BYTES`` (but at least ``CPU_BATCH_MIN``); all of
            them with ``bn='train'``, where the batch defines the statistics. The loss is
            the mean over all samples, so each batch's HVP counts with weight
            len(batch) / len(x).
        memory_budget: bytes that the probe vectors of one vmap call may take; the number of
            probes per call is derived from the model's and the data's sizes, never timing.
        hvp: 'auto' (the default: 'reverse'), 'forward' (forward-over-reverse, jvp of grad,
            probes batched under vmap; keeps nothing between products) or 'reverse'
            (reverse-over-reverse, PyHessian's product: each sample batch's forward graph
            is built at construction and kept while all of them fit in ``graph_budget``, its
            gradient graph on the first product, and each product is one backward through
            it; past the budget each product rebuilds them one batch at a time). The kept
            forward graphs also serve the Gauss-Newton trace's output probes. The rule is
            fixed, not timed: measured on CPU, one thread, a kept-graph product cost 0.4-0.75x a forward one on the digits MLP and the CIFAR
            ResNet-20 alike (jvp of grad redoes the forward and the first backward per
            product; under vmap the batched convolutions and matmuls were no faster per
            probe); batching probes in the reverse product (``is_grads_batched``) pays only
            where one product is small (``probe_block``).
        graph_budget: bytes the kept graphs of 'reverse' may take (estimated as
            ``GRAPH_COPIES`` copies of every batch's activations).
        probe_block: probes per 'reverse' product or Gauss-Newton backward (one backward
            batched over them with ``is_grads_batched``), at most ``probe_chunk``; None:
            ``default_probe_block`` of the sample batch and parameter count. Results are bitwise equal between CPU
            reruns at the same block (it is in ``config``), not across blocks.

    Raises:
        SpecError: empty data, mismatched x/y, an unknown loss or BN mode, a non-finite loss.
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        loss: str = "cross_entropy",
        bn: str = "eval",
        batch_size: int | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        hvp: str = "auto",
        graph_budget: int = DEFAULT_GRAPH_BUDGET,
        probe_block: int | None = None,
    ) -> None:
        # A module:fn loss (an imported model's data set may name one, compute.userdata)
        # gives per-sample losses; H is the Hessian of their mean, as for the built-in ones.
        self._loss_fn = user.resolve(loss, user.LOSSES, "loss") if user.is_reference(loss) else None
        if loss not in LOSSES and self._loss_fn is None:
            raise SpecError(f"unknown loss {loss!r}: use one of {', '.join(LOSSES)} or module:fn")
        if hvp not in HVP_MODES:
            raise SpecError(
                f"unknown Hessian-vector product {hvp!r}: use 'auto', 'forward' or 'reverse'"
            )
        if bn not in BN_MODES:
            raise SpecError(f"unknown BatchNorm mode {bn!r}: use 'eval' or 'train'")
        n_samples = int(x.shape[0]) if x.dim() else 0
        if n_samples == 0:
            raise SpecError("the curvature data is empty: choose a split or subset with samples")
        if int(y.shape[0]) != n_samples:
            raise SpecError(
                f"x has {n_samples} rows but y has {int(y.shape[0])}: pass matching tensors"
            )
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
            raise SpecError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        hvp = "reverse" if hvp == "auto" else hvp
        if hvp == "forward":
            _load_functorch_lazies()
        self.model = _prepared(model, bn)
        named = [(k, p) for k, p in self.model.named_parameters() if p.requires_grad]
        if not named:
            raise SpecError("the model has no trainable parameters: nothing has curvature")
        self.names = [k for k, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.theta = torch.cat([p.detach().reshape(-1) for _, p in named])
        self.buffers = {k: b.detach() for k, b in self.model.named_buffers()}
        self.n = int(self.theta.numel())
        self.dtype, self.device = self.theta.dtype, self.theta.device
        self.loss_name = loss
        self.hvp_mode = hvp
        if loss == "mse":
            y = y.to(self.dtype)
        with exact_float32(self.device):
            per_sample = self._activations_per_sample(x[:1], y[:1])
        if batch_size is not None:
            size = min(int(batch_size), n_samples)
        elif bn == "train":
            size = n_samples  # batch statistics: the batch is part of the function measured
        else:
            # The largest sample batch with which one probe fits in the budget (a ResNet-56
            # on 512 CIFAR images would otherwise need ~5 GiB for a single product).
            room = int(memory_budget) // (4 * self.theta.element_size()) - self.n
            size = max(1, min(n_samples, room // max(per_sample, 1)))
            if hvp == "reverse" and self.device.type == "cpu":
                largest = self._largest_per_sample * self.theta.element_size()
                fits = CPU_BATCH_ACTIVATION_BYTES // max(largest, 1)
                size = max(1, min(size, max(CPU_BATCH_MIN, fits)))
        self.batches = [
            (x[i : i + size], y[i : i + size], (min(i + size, n_samples) - i) / n_samples)
            for i in range(0, n_samples, size)
        ]
        self._x1 = x[:1]  # the sample the piecewise-linearity check runs on
        self._gauss_newton: tuple[str | None] | None = None  # (why not,) once checked
        self.batch_size = size
        self.n_samples = n_samples
        self.hvp_count = 0  # Hessian-vector products done (one per probe vector)
        self.hvp_seconds = 0.0  # wall time inside them, for reports only
        self.gn_count = 0  # Gauss-Newton output probes done (one backward each)
        self.gn_seconds = 0.0
        graph_bytes = GRAPH_COPIES * self.theta.element_size() * per_sample * n_samples
        self.keep_graphs = hvp == "reverse" and graph_bytes <= int(graph_budget)
        self._kept: list[_Graph] = []
        with exact_float32(self.device):
            if self.keep_graphs:  # built once here: their losses are the loss check's
                self._kept = [self._forward_graph(xb, yb) for xb, yb, _ in self.batches]
                weights = [w for _, _, w in self.batches]
                self.loss = float(sum(w * g.loss for g, w in zip(self._kept, weights, strict=True)))
            else:
                self.loss = self._loss_value()
        if not math.isfinite(self.loss):
            raise SpecError(
                f"the loss at this checkpoint is {self.loss}: curvature needs a finite loss; "
                "pick another checkpoint or check the data"
            )
        per_probe = self.theta.element_size() * 4 * (self.n + per_sample * size)
        self.probe_chunk = max(1, min(MAX_PROBE_CHUNK, int(memory_budget) // per_probe))
        if probe_block is None:
            probe_block = default_probe_block(size, self.n)
        if isinstance(probe_block, bool) or int(probe_block) < 1:
            raise SpecError(f"probe_block must be a positive integer or None, got {probe_block!r}")
        self.probe_block = min(int(probe_block), self.probe_chunk)
        self.config: dict[str, Any] = {
            "loss": loss,
            "bn": bn,
            "dropout": "off",
            "batch_size": size,
            "samples": n_samples,
            "parameters": self.n,
            "dtype": str(self.dtype).removeprefix("torch."),
            "probe_chunk": self.probe_chunk,
            "memory_budget": int(memory_budget),
            "hvp": hvp,
            "graphs_kept": self.keep_graphs,
            "probe_block": self.probe_block,
        }

    # -- pieces

    def _params(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = theta.split(self.sizes)
        return {k: t.view(s) for k, t, s in zip(self.names, parts, self.shapes, strict=True)}

    def _loss_at(self, theta: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return self._loss_of(self._params(theta), xb, yb)

    def _loss_of(
        self, params: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor
    ) -> torch.Tensor:
        out = functional_call(self.model, (params, self.buffers), (xb,))
        return self._loss_from(out, yb)

    def _loss_from(self, out: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if self._loss_fn is not None:
            per = self._loss_fn(out, yb)
            if not isinstance(per, torch.Tensor) or per.shape != (yb.shape[0],):
                shape = tuple(per.shape) if isinstance(per, torch.Tensor) else type(per).__name__
                raise UserCodeError(
                    f"loss {self.loss_name!r} returned {shape} for {yb.shape[0]} samples: "
                    "return one loss per sample (reduction='none')"
                )
            return per.mean()
        if self.loss_name == "cross_entropy":
            return F.cross_entropy(out, yb)
        # Written out: F.mse_loss's backward fails under forward AD in torch 2.14 ("ZeroTensors
        # are immutable") for a single unbatched probe.
        return (out - yb.reshape(out.shape)).square().mean()

    def _loss_value(self) -> float:
        with torch.no_grad():
            total = sum(w * float(self._loss_at(self.theta, xb, yb)) for xb, yb, w in self.batches)
        return float(total)

    def _activations_per_sample(self, x1: torch.Tensor, y1: torch.Tensor) -> int:
        """Elements the leaf modules output for one sample. A probe costs about four copies
        of the parameters and four of its batch's activations (primal and tangent, forward
        and backward): the sizes behind the sample batch and the probes per vmap call. The
        largest single output goes to ``_largest_per_sample`` (``CPU_BATCH_ACTIVATION_BYTES``)."""
        counts: list[int] = []

        def count(_m: nn.Module, _i: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                counts.append(out.numel())

        hooks = [
            m.register_forward_hook(count) for m in self.model.modules() if not list(m.children())
        ]
        try:
            with torch.no_grad():
                out = functional_call(self.model, (self._params(self.theta), self.buffers), (x1,))
        finally:
            for h in hooks:
                h.remove()
        self.output_shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None
        self._largest_per_sample = max(counts, default=0)
        return sum(counts)

    def gauss_newton_refusal(self) -> str | None:
        """None where Hutchinson's Gauss-Newton probes give H's trace (and each layer's): a
        network piecewise linear in each parameter tensor (compute.piecewise, checked once on
        one sample) with cross-entropy on [samples, classes] logits or MSE; else why not."""
        if self._gauss_newton is None:
            why: str | None
            if self._loss_fn is not None:
                why = f"the loss {self.loss_name} is user code (its output Hessian is unknown)"
            elif self.output_shape is None:
                why = "the model's output is not one tensor"
            elif self.loss_name == "cross_entropy" and len(self.output_shape) != 1:
                why = f"cross-entropy on outputs of shape {list(self.output_shape)} per sample"
            else:
                why = nonlinearity(self.model, self._params(self.theta), self.buffers, self._x1)
            self._gauss_newton = (why,)
        return self._gauss_newton[0]

    # -- products

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        """H V for probe vectors V [k, n] (rows), as [k, n]; ``probe_chunk`` rows per vmap."""
        start = time.perf_counter()
        with exact_float32(self.device):
            if self.hvp_mode == "reverse":
                out = self._reverse_matmat(vectors)
            else:
                out = self._forward_matmat(vectors)
        self._sync()
        self.hvp_count += int(vectors.shape[0])
        self.hvp_seconds += time.perf_counter() - start
        return out

    def _forward_matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(vectors)
        for lo in range(0, vectors.shape[0], self.probe_chunk):
            chunk = vectors[lo : lo + self.probe_chunk]
            for xb, yb, weight in self.batches:
                gradient = grad(lambda t, xb=xb, yb=yb: self._loss_at(t, xb, yb))

                def hvp(v: torch.Tensor, gradient: Callable = gradient) -> torch.Tensor:
                    return jvp(gradient, (self.theta,), (v,))[1]

                part = hvp(chunk[0])[None] if chunk.shape[0] == 1 else vmap(hvp)(chunk)
                out[lo : lo + chunk.shape[0]].add_(part, alpha=weight)
        return out

    def _forward_graph(self, xb: torch.Tensor, yb: torch.Tensor) -> _Graph:
        """One sample batch's output and loss with their graph."""
        leaves = [t.view(s).detach().requires_grad_() for t, s in
                  zip(self.theta.split(self.sizes), self.shapes, strict=True)]  # fmt: skip
        with torch.enable_grad():
            params = dict(zip(self.names, leaves, strict=True))
            out = functional_call(self.model, (params, self.buffers), (xb,))
            loss = self._loss_from(out, yb)
        return _Graph(leaves, out, loss, float(loss.detach()))

    def _with_gradient(self, graph: _Graph) -> _Graph:
        """``graph`` with its gradient built for a second backward (once)."""
        if graph.gradient is None:
            with torch.enable_grad():
                graph.gradient = torch.autograd.grad(graph.loss_tensor, graph.leaves,
                                                     create_graph=True)  # fmt: skip
        return graph

    def build_gradients(self) -> None:
        """Build every kept sample batch's gradient graph now instead of in the first
        product (the same work either way; a Gauss-Newton trace never needs them). For
        reports that split set-up from measures as PyHessian's constructor does."""
        if self.keep_graphs:
            with exact_float32(self.device):
                for graph in self._kept:
                    self._with_gradient(graph)

    def _reverse_matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        """H V by backwards through each batch's gradient graph: ``probe_block`` probes per
        backward (``is_grads_batched``, vmap over the graph's backward), one at a time when
        the block is 1 or a single probe is left."""
        out = torch.zeros_like(vectors)
        block = self.probe_block
        for b, (xb, yb, weight) in enumerate(self.batches):
            graph = self._with_gradient(self._kept[b] if self.keep_graphs
                                        else self._forward_graph(xb, yb))  # fmt: skip
            assert graph.gradient is not None
            with torch.enable_grad():
                for lo in range(0, vectors.shape[0], block):
                    v = vectors[lo : lo + block]
                    k = int(v.shape[0])
                    if k == 1:
                        parts = [t.view(s) for t, s in zip(v[0].split(self.sizes), self.shapes,
                                                           strict=True)]  # fmt: skip
                    else:
                        parts = [t.reshape(k, *s) for t, s in zip(v.split(self.sizes, dim=1),
                                                                  self.shapes, strict=True)]  # fmt: skip
                    hv = torch.autograd.grad(graph.gradient, graph.leaves, parts,
                                             retain_graph=True, is_grads_batched=k > 1)  # fmt: skip
                    flat = torch.cat([h.reshape(k, -1) for h in hv], dim=1)
                    out[lo : lo + k].add_(flat, alpha=weight)
        return out

    def gauss_newton_squares(self, probes: torch.Tensor) -> torch.Tensor:
        """(J^T B u)^2 elementwise, [k, n], for output-space probes u [k, samples, *outputs]:
        B B^T is the Hessian of the mean loss in the outputs (cross-entropy:
        (diag p - p p^T) / N per sample, B = (diag sqrt p - p sqrt(p)^T) / sqrt N; MSE:
        2 / (N outputs) I), so for Rademacher u the rows' sums average to tr(J^T H_L J). One
        backward through each sample batch's forward graph per ``probe_block`` probes."""
        start = time.perf_counter()
        k = int(probes.shape[0])
        total = torch.zeros(k, self.n, dtype=self.dtype, device=self.device)
        with exact_float32(self.device):
            self._gauss_newton_into(total, probes)
        out = total.square_()
        self._sync()
        self.gn_count += k
        self.gn_seconds += time.perf_counter() - start
        return out

    def _gauss_newton_into(self, total: torch.Tensor, probes: torch.Tensor) -> None:
        """Add J^T B u of every probe (rows of ``total``), batch by batch."""
        k = int(probes.shape[0])
        lo = 0
        for b, (xb, yb, _) in enumerate(self.batches):
            graph = self._kept[b] if self.keep_graphs else self._forward_graph(xb, yb)
            rows = int(xb.shape[0])
            factor = self._loss_factor(graph.output.detach(), probes[:, lo : lo + rows])
            lo += rows
            with torch.enable_grad():
                for s in range(0, k, self.probe_block):
                    part = factor[s : s + self.probe_block]
                    kk = int(part.shape[0])
                    grads = torch.autograd.grad(graph.output, graph.leaves,
                                                part if kk > 1 else part[0], retain_graph=True,
                                                is_grads_batched=kk > 1)  # fmt: skip
                    total[s : s + kk] += torch.cat([g.reshape(kk, -1) for g in grads], dim=1)

    def _sync(self) -> None:
        """On a GPU, wait for the queued products so the reported seconds cover them (the
        callers read the results back at once anyway)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _loss_factor(self, out: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """B u for probes u [k, rows, *outputs] of a batch with outputs ``out``."""
        if self.loss_name == "cross_entropy":
            p = out.softmax(dim=1)
            root = p.sqrt()
            su = root * u
            return (su - p * su.sum(dim=-1, keepdim=True)) / math.sqrt(self.n_samples)
        per_sample = math.prod(self.output_shape or ())
        return u * math.sqrt(2.0 / (self.n_samples * per_sample))

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """H v for one flat vector v [n]."""
        return self.matmat(vector[None])[0]

    def as_tensors(self, flat: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        """A flat vector (an eigenvector) as one tensor per parameter name, in the model's
        shapes: the per-tensor form a direction is stored in."""
        flat = torch.as_tensor(flat)
        return {k: t.reshape(s).clone() for k, t, s in
                zip(self.names, flat.split(self.sizes), self.shapes, strict=True)}  # fmt: skip

    def layers(self) -> dict[str, slice]:
        """Each layer's block of the flat vector: parameters grouped by their module's name
        ('blocks.0.conv1', 'fc'), in parameter order."""
        out: dict[str, slice] = {}
        offset = 0
        for name, size in zip(self.names, self.sizes, strict=True):
            layer = name.rpartition(".")[0] or name
            lo = out[layer].start if layer in out else offset
            out[layer] = slice(lo, offset + size)
            offset += size
        return out


def _prepared(model: nn.Module, bn: str) -> nn.Module:
    """A copy of ``model`` with dropout off and BatchNorm as asked: in 'train' mode it uses
    batch statistics without running statistics (nothing is updated in place, which vmap
    forbids, and the checkpoint's buffers are left alone)."""
    prepared = copy.deepcopy(model).eval()
    if bn == "train":
        for m in prepared.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
                m.running_mean = None
                m.running_var = None
                m.num_batches_tracked = None
                m.track_running_stats = False
    return prepared


# ---------------------------------------------------------------------------- Lanczos


def _draw(
    shape: tuple[int, ...], kind: str, gen: torch.Generator, dtype: torch.dtype
) -> torch.Tensor:
    """Rows drawn one at a time, so the stream does not depend on how many are drawn at once."""
    rows = []
    for _ in range(shape[0]):
        if kind == "rademacher":
            r = torch.randint(0, 2, shape[1:], generator=gen, device=gen.device).to(dtype) * 2 - 1
        else:
            r = torch.randn(shape[1:], generator=gen, device=gen.device, dtype=dtype)
        rows.append(r)
    return torch.stack(rows)


# A second Gram-Schmidt pass only where the first removed much of w: Daniel, Gragg, Kaufman
# and Stewart's criterion ("twice is enough", and once is enough when nothing cancelled).
REORTH_RATIO = 1 / math.sqrt(2)


def _project_out(w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """w [R, n] minus its projections on the orthonormal rows basis [j, R, n] (one classical
    Gram-Schmidt pass; a matrix-vector pair per run, the basis read twice)."""
    if w.shape[0] == 1:
        rows = basis[:, 0]
        return torch.addmv(w[0], rows.t(), rows @ w[0], alpha=-1)[None]
    coef = torch.einsum("jrn,rn->jr", basis, w)
    return w - torch.einsum("jr,jrn->rn", coef, basis)


def _orthogonalise(w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """w [R, n] made orthogonal to the orthonormal rows basis [j, R, n]: one classical
    Gram-Schmidt pass, and a second when the first shrank any run's w below
    ``REORTH_RATIO`` of its norm (cancellation, where float32 loses orthogonality). Lanczos
    with full reorthogonalisation rarely needs the second: its w is nearly orthogonal already,
    and the basis pass is the measure's only cost besides the products (memory-bound: the
    basis is read twice per pass)."""
    before = w.norm(dim=1)
    w = _project_out(w, basis)
    if bool((w.norm(dim=1) < REORTH_RATIO * before).any()):
        w = _project_out(w, basis)
    return w


def _lanczos(
    op: HessianOperator,
    starts: torch.Tensor,
    steps: int,
    *,
    restart: torch.Generator | None,
    stop: Callable[[np.ndarray, np.ndarray, int], bool] | None = None,
    progress: Progress | None = None,
    stage: str = "lanczos",
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """Lanczos with full reorthogonalisation from R starts [R, n] at once (one matmat each step).

    At a breakdown (an invariant subspace found) a run restarts from a fresh random vector
    orthogonal to its basis when ``restart`` is given (T stays the exact projection of H, with
    a zero off-diagonal), or ends (its quadrature is exact). ``stop(alphas, betas, j)`` after
    step j ends all runs. Returns the basis [m, R, n], alphas and betas [R, m] (betas[:, j]
    couples steps j and j + 1) and the steps each run took [R].
    """
    runs, n = starts.shape
    steps = min(steps, n)
    basis = torch.zeros(steps, runs, n, dtype=op.dtype, device=op.device)
    alphas = np.zeros((runs, steps))
    betas = np.zeros((runs, steps))
    lengths = np.full(runs, steps)
    live = torch.ones(runs, dtype=op.dtype, device=op.device)
    q = starts / starts.norm(dim=1, keepdim=True)
    q_prev = torch.zeros_like(q)
    beta_prev = torch.zeros(runs, dtype=op.dtype, device=op.device)
    scale = 0.0
    eps = torch.finfo(op.dtype).eps
    done = 0
    for j in range(steps):
        basis[j] = q
        w = op.matmat(q)
        alpha = (w * q).sum(1)
        w = w - alpha[:, None] * q - beta_prev[:, None] * q_prev
        w = _orthogonalise(w, basis[: j + 1]) * live[:, None]
        beta = w.norm(dim=1)
        alphas[:, j] = alpha.double().cpu().numpy() * live.cpu().numpy()
        betas[:, j] = beta.double().cpu().numpy()
        scale = max(scale, float(np.abs(alphas[:, j]).max()), float(betas[:, j].max()))
        done = j + 1
        if progress is not None:
            progress(stage, done, steps)
        if stop is not None and stop(alphas[:, :done], betas[:, :done], j):
            break
        if j + 1 == steps:
            break
        nxt = torch.zeros_like(w)
        for r in range(runs):
            if live[r] == 0:
                continue
            if betas[r, j] > 1e3 * eps * scale:
                nxt[r] = w[r] / beta[r]
            elif restart is not None:
                fresh = _draw((1, n), "gaussian", restart, op.dtype).to(op.device)
                fresh = _orthogonalise(fresh, basis[: j + 1, r : r + 1])[0]
                nxt[r] = fresh / fresh.norm()
                betas[r, j] = 0.0
                beta[r] = 0.0
            else:
                live[r] = 0
                lengths[r] = j + 1
                betas[r, j] = 0.0
        q_prev, q, beta_prev = q, nxt, beta * live
    lengths = np.minimum(lengths, done)
    return basis[:done], alphas[:, :done], betas[:, :done], lengths


def _tridiagonal(alphas: np.ndarray, betas: np.ndarray) -> np.ndarray:
    m = len(alphas)
    t = np.diag(alphas)
    if m > 1:
        t += np.diag(betas[: m - 1], 1) + np.diag(betas[: m - 1], -1)
    return t


def _order(values: np.ndarray, which: str) -> np.ndarray:
    if which == "largest":
        return np.argsort(-values, kind="stable")
    if which == "smallest":
        return np.argsort(values, kind="stable")
    return np.argsort(-np.abs(values), kind="stable")


# ---------------------------------------------------------------------------- top-k eigenvalues


@dataclass(frozen=True)
class Eigenpairs:
    """Top-k eigenvalues of H and their eigenvectors.

    Attributes:
        eigenvalues: [k] float64, in the order ``which`` asked for.
        eigenvectors: [k, n] float32, unit rows (flat parameter order, ``HessianOperator.names``).
        residuals: [k] ||H y - theta y|| of each pair at the end.
        iterations: Lanczos steps (= Hessian-vector products).
        converged: the stop was met (every residual within ``tol * |theta|``, or with
            ``stop='change'`` every Ritz value's change), or Lanczos spanned the whole space.
        history: [iterations, k] the Ritz values after each step (NaN before step k).
        config: the operator's config plus k, which, tol, max_iter, seed.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    residuals: np.ndarray
    iterations: int
    converged: bool
    history: np.ndarray
    config: dict[str, Any] = field(default_factory=dict)


def top_eigenvalues(
    op: HessianOperator,
    k: int = 1,
    *,
    which: str = "largest",
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    one_thread: bool = True,
    progress: Progress | None = None,
    stop: str = "residual",
) -> Eigenpairs:
    """The k largest ('largest'), smallest or largest-magnitude eigenpairs of H by Lanczos.

    Lanczos runs from a seeded Gaussian start for at most ``max(max_iter, k)`` steps (never
    more than n) and stops once every wanted Ritz pair has a residual within ``tol`` relative
    (``stop='residual'``, the default), or once every wanted Ritz value changed by less than
    ``tol`` relative since the step before (``stop='change'``: the criterion of PyHessian's
    power iteration, looser than the residual's, for comparisons on its terms).
    PyHessian's ``eigenvalues`` finds the largest-magnitude ones (``which='magnitude'``).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SpecError(f"top-k must be a positive integer, got {k!r}")
    if k > op.n:
        raise SpecError(f"top-k {k} exceeds the model's {op.n} parameters: ask for at most {op.n}")
    if which not in WHICH:
        raise SpecError(f"unknown eigenvalue order {which!r}: use one of {', '.join(WHICH)}")
    if stop not in STOPS:
        raise SpecError(f"unknown eigenvalue stop {stop!r}: use one of {', '.join(STOPS)}")
    _check_seed(seed)
    steps = min(max(int(max_iter), k), op.n)
    history: list[np.ndarray] = []
    state: dict[str, Any] = {}

    def met(values: np.ndarray, residuals: np.ndarray) -> bool:
        scale = np.maximum(np.abs(values), np.finfo(float).tiny)
        if stop == "residual":
            return bool(np.all(residuals <= tol * scale))
        before = history[-2] if len(history) > 1 else np.full(k, np.nan)
        return bool(np.all(np.abs(values - before) < tol * scale))

    def done(alphas: np.ndarray, betas: np.ndarray, j: int) -> bool:
        values, vectors = np.linalg.eigh(_tridiagonal(alphas[0], betas[0]))
        pick = _order(values, which)[:k]
        row = np.full(k, np.nan)
        row[: len(pick)] = values[pick]
        history.append(row)
        residuals = np.abs(betas[0, j] * vectors[-1, pick])
        state.update(values=values[pick], vectors=vectors[:, pick], residuals=residuals)
        state["met"] = len(pick) == k and met(values[pick], residuals)
        return bool(state["met"])

    with _threads(one_thread), torch.no_grad():
        gen = torch.Generator(device=op.device).manual_seed(seed)
        start = _draw((1, op.n), "gaussian", gen, op.dtype).to(op.device)
        basis, _, _, _ = _lanczos(op, start, steps, restart=gen, stop=done,
                                           progress=progress, stage="eigenvalues")  # fmt: skip
        ritz = torch.from_numpy(state["vectors"]).to(op.dtype).to(op.device)  # [m, k]
        vectors = torch.einsum("mk,mn->kn", ritz, basis[:, 0])
        vectors = vectors / vectors.norm(dim=1, keepdim=True)
    residuals = state["residuals"]
    values = state["values"]
    converged = bool(state["met"]) or basis.shape[0] == op.n
    return Eigenpairs(
        eigenvalues=np.asarray(values, dtype=np.float64),
        eigenvectors=vectors.float().cpu().numpy(),
        residuals=np.asarray(residuals),
        iterations=int(basis.shape[0]),
        converged=converged,
        history=np.stack(history),
        config={**op.config, "k": k, "which": which, "tol": tol, "max_iter": max_iter,
                "seed": seed, "stop": stop, "method": "lanczos (full reorthogonalisation)"},
    )  # fmt: skip


@dataclass(frozen=True)
class Extremes:
    """The algebraically largest and smallest eigenvalues of H from one Lanczos run.

    Attributes:
        largest, smallest: the Ritz values, each taken at the step its own stop was met (or at
            the last step), so each equals ``top_eigenvalues(op, 1, which=...)`` with the same
            seed, tolerance and step limit, bit for bit.
        residuals: (largest's, smallest's) ||H y - theta y|| when taken.
        steps: (largest's, smallest's) Lanczos steps when taken.
        iterations: Lanczos steps run (= Hessian-vector products): the larger of the two.
        converged: (largest's, smallest's) stop met, or Lanczos spanned the whole space.
    """

    largest: float
    smallest: float
    residuals: tuple[float, float]
    steps: tuple[int, int]
    iterations: int
    converged: tuple[bool, bool]


def extreme_eigenvalues(
    op: HessianOperator,
    *,
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    one_thread: bool = True,
    progress: Progress | None = None,
) -> Extremes:
    """lambda_max and lambda_min of H (Goldstein's map) from one Lanczos run.

    ``top_eigenvalues(op, 1, which='largest')`` and ``(..., which='smallest')`` with one seed
    start from the same vector, so their Krylov bases, tridiagonals and Ritz values agree step
    for step: the run that stops first is a prefix of the other. One run to the later of the
    two stops (each end's value frozen at its own stop, with the residual stop of
    ``top_eigenvalues``) gives both results exactly, at max(a, b) products instead of a + b.
    """
    _check_seed(seed)
    steps = min(max(int(max_iter), 1), op.n)
    taken: dict[str, tuple[float, float, int, bool]] = {}
    last: dict[str, tuple[float, float, int, bool]] = {}

    def done(alphas: np.ndarray, betas: np.ndarray, j: int) -> bool:
        values, vectors = np.linalg.eigh(_tridiagonal(alphas[0], betas[0]))
        for which in ("largest", "smallest"):
            if which in taken:
                continue
            pick = _order(values, which)[0]
            value = float(values[pick])
            residual = float(abs(betas[0, j] * vectors[-1, pick]))
            met = residual <= tol * max(abs(value), np.finfo(float).tiny)
            last[which] = (value, residual, j + 1, met)
            if met:
                taken[which] = last[which]
        return len(taken) == 2

    with _threads(one_thread), torch.no_grad():
        gen = torch.Generator(device=op.device).manual_seed(seed)
        start = _draw((1, op.n), "gaussian", gen, op.dtype).to(op.device)
        basis, _, _, _ = _lanczos(op, start, steps, restart=gen, stop=done,
                                  progress=progress, stage="eigenvalues")  # fmt: skip
    spanned = basis.shape[0] == op.n
    hi, lo = (taken.get(w, last[w]) for w in ("largest", "smallest"))
    return Extremes(
        largest=hi[0], smallest=lo[0], residuals=(hi[1], lo[1]), steps=(hi[2], lo[2]),
        iterations=int(basis.shape[0]), converged=(hi[3] or spanned, lo[3] or spanned),
    )  # fmt: skip


# ---------------------------------------------------------------------------- trace


@dataclass(frozen=True)
class Trace:
    """Hutchinson's estimate of tr(H).

    Attributes:
        trace: the mean of v^T H v over the probes.
        stderr: its standard error (sample std / sqrt(probes)).
        probes: the number of Rademacher probes.
        samples: [probes] each probe's v^T H v.
        layer_traces: per layer (``HessianOperator.layers``), the estimate from the same probes
            restricted to the layer's block; empty unless asked for.
        layer_stderr: their standard errors.
        config: the operator's config plus probes, seed.
    """

    trace: float
    stderr: float
    probes: int
    samples: np.ndarray
    layer_traces: dict[str, float] = field(default_factory=dict)
    layer_stderr: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def hutchinson_trace(
    op: HessianOperator,
    probes: int = 100,
    *,
    per_layer: bool = False,
    seed: int = 0,
    one_thread: bool = True,
    progress: Progress | None = None,
    estimator: str = "auto",
) -> Trace:
    """tr(H) from ``probes`` seeded Rademacher probes, ``op.probe_chunk`` at a time.

    ``estimator``: 'hessian' probes H (v^T H v, one Hessian-vector product each);
    'gauss-newton' probes the Gauss-Newton matrix in output space (||J^T B u||^2, one backward
    each), whose trace and per-layer traces are H's for a network piecewise linear in each
    parameter tensor, and refuses any other network; 'auto' (the default) takes
    'gauss-newton' where ``op.gauss_newton_refusal()`` finds nothing against it, else
    'hessian'. Both are unbiased for tr(H); their standard errors differ (each is reported).
    What was used, and why not Gauss-Newton, is in ``config``.
    """
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 2:
        raise SpecError(
            f"trace probes must be an integer >= 2 (for a standard error), got {probes!r}"
        )
    if estimator not in TRACE_ESTIMATORS:
        raise SpecError(f"unknown trace estimator {estimator!r}: use one of "
                        f"{', '.join(TRACE_ESTIMATORS)}")  # fmt: skip
    _check_seed(seed)
    refusal = op.gauss_newton_refusal() if estimator != "hessian" else None
    if estimator == "gauss-newton" and refusal is not None:
        raise SpecError(
            f"the Gauss-Newton trace equals the Hessian's only for a piecewise-linear network, "
            f"and this one is not ({refusal}): use the Hessian's probes (trace method "
            "hutchinson) or auto"
        )
    gauss_newton = estimator != "hessian" and refusal is None
    layers = op.layers() if per_layer else {}
    samples = np.zeros(probes)
    per = {name: np.zeros(probes) for name in layers}
    with _threads(one_thread), torch.no_grad():
        gen = torch.Generator(device=op.device).manual_seed(seed)
        for lo in range(0, probes, op.probe_chunk):
            hi = min(lo + op.probe_chunk, probes)
            if gauss_newton:
                u = _draw((hi - lo, op.n_samples, *(op.output_shape or ())), "rademacher", gen,
                          op.dtype).to(op.device)  # fmt: skip
                prod = op.gauss_newton_squares(u)
            else:
                v = _draw((hi - lo, op.n), "rademacher", gen, op.dtype).to(op.device)
                prod = v * op.matmat(v)
            samples[lo:hi] = prod.sum(1).double().cpu().numpy()
            for name, block in layers.items():
                per[name][lo:hi] = prod[:, block].sum(1).double().cpu().numpy()
            if progress is not None:
                progress("trace", hi, probes)

    def se(a: np.ndarray) -> float:
        return float(a.std(ddof=1) / math.sqrt(len(a)))

    return Trace(
        trace=float(samples.mean()),
        stderr=se(samples),
        probes=probes,
        samples=samples,
        layer_traces={name: float(a.mean()) for name, a in per.items()},
        layer_stderr={name: se(a) for name, a in per.items()},
        config={**op.config, "probes": probes, "seed": seed, "per_layer": per_layer,
                "method": "hutchinson (rademacher)",
                "estimator": "gauss-newton" if gauss_newton else "hessian",
                "gauss_newton_refused": refusal},
    )  # fmt: skip


def hutchpp_trace(
    op: HessianOperator,
    probes: int = 100,
    *,
    seed: int = 0,
    one_thread: bool = True,
    progress: Progress | None = None,
) -> Trace:
    """tr(H) by Hutch++ (Meyer, Musco, Musco and Woodruff 2021) with ``probes`` products in all.

    A third of them sketch H's dominant range (Q, orthonormal, from H S with Rademacher S),
    a third give that part's trace exactly (tr(Q^T H Q)), and the rest are Hutchinson probes of
    the deflated (I - QQ^T) H (I - QQ^T). Unbiased like Hutchinson's estimator; where a few
    eigenvalues dominate (trained networks: measured on the digits MLP after training, the
    top 10 eigenpairs held 90% of ||H||_F^2) its standard error at equal products is several
    times smaller, and where the spectrum is flat (the same MLP at initialisation) it is
    larger, having fewer probes for the remainder. The standard error is the deflated
    probes' (given Q). ``samples`` are those probes' values; the sketch size and the exact
    part are in ``config``. Per-layer traces are Hutchinson's only.
    """
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 6:
        raise SpecError(
            f"Hutch++ splits its products in three (sketch, its exact trace, probes): give at "
            f"least 6, got {probes!r}"
        )
    _check_seed(seed)
    k = probes // 3
    rest = probes - 2 * k
    done = 0

    def products(vectors: torch.Tensor) -> torch.Tensor:
        nonlocal done
        out = torch.empty_like(vectors)
        for lo in range(0, vectors.shape[0], op.probe_chunk):
            hi = min(lo + op.probe_chunk, vectors.shape[0])
            out[lo:hi] = op.matmat(vectors[lo:hi])
            done += hi - lo
            if progress is not None:
                progress("trace", done, probes)
        return out

    with _threads(one_thread), torch.no_grad():
        gen = torch.Generator(device=op.device).manual_seed(seed)
        sketch = _draw((k, op.n), "rademacher", gen, op.dtype).to(op.device)
        probe = _draw((rest, op.n), "rademacher", gen, op.dtype).to(op.device)
        basis = torch.linalg.qr(products(sketch).T.double()).Q.T.to(op.dtype)  # [k, n]
        exact = float((basis * products(basis)).sum().double())
        deflated = probe - (probe @ basis.T) @ basis
        samples = (deflated * products(deflated)).sum(1).double().cpu().numpy()
    return Trace(
        trace=exact + float(samples.mean()),
        stderr=float(samples.std(ddof=1) / math.sqrt(rest)),
        probes=probes,
        samples=samples,
        config={**op.config, "probes": probes, "seed": seed, "per_layer": False,
                "method": "hutch++ (rademacher)", "sketch": k, "residual_probes": rest,
                "exact_part": exact},
    )  # fmt: skip


# ---------------------------------------------------------------------------- density


@dataclass(frozen=True)
class Density:
    """The eigenvalue density of H by stochastic Lanczos quadrature.

    Attributes:
        grid: [bins] evenly spaced eigenvalues.
        density: [bins] the smoothed density on the grid; sum(density) * step == 1.
        nodes: [runs, steps] Ritz values per run (NaN after a run that ended early).
        weights: [runs, steps] their quadrature weights (each run's sum to 1; 0 where NaN).
        sigma_squared: the kernel variance used (``sigma_squared * max(1, range)``).
        config: the operator's config plus runs, steps, start, seed and the smoothing.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    sigma_squared: float
    config: dict[str, Any] = field(default_factory=dict)


def spectral_density(
    op: HessianOperator,
    runs: int = 1,
    steps: int = 100,
    *,
    start: str = "rademacher",
    seed: int = 0,
    bins: int = DENSITY_BINS,
    sigma_squared: float = DENSITY_SIGMA_SQUARED,
    overhead: float = DENSITY_OVERHEAD,
    one_thread: bool = True,
    progress: Progress | None = None,
) -> Density:
    """SLQ: ``runs`` Lanczos runs of ``steps`` steps (at most n) from seeded random unit starts,
    run side by side (one matmat of up to ``op.probe_chunk`` probes per step), smoothed as
    PyHessian does."""
    for name, value in (("runs", runs), ("steps", steps), ("bins", bins)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < (2 if name == "bins" else 1)
        ):
            raise SpecError(f"density {name} must be a positive integer, got {value!r}")
    if start not in ("rademacher", "gaussian"):
        raise SpecError(f"unknown SLQ start {start!r}: use 'rademacher' or 'gaussian'")
    _check_seed(seed)
    with _threads(one_thread), torch.no_grad():
        gen = torch.Generator(device=op.device).manual_seed(seed)
        starts = _draw((runs, op.n), start, gen, op.dtype).to(op.device)
        # Runs go side by side in groups of the operator's probe chunk: each group's basis is
        # steps x group x n, so many runs of a large model do not hold all their bases at once.
        group = op.probe_chunk
        parts = []
        for lo in range(0, runs, group):

            def report(stage: str, done: int, total: int, lo: int = lo) -> None:
                if progress is not None:
                    progress(stage, (lo // group) * total + done, -(-runs // group) * total)

            parts.append(_lanczos(op, starts[lo : lo + group], steps, restart=None,
                                  progress=report, stage="density")[1:])  # fmt: skip
        alphas = np.concatenate([p[0] for p in parts])
        betas = np.concatenate([p[1] for p in parts])
        lengths = np.concatenate([p[2] for p in parts])
    m = alphas.shape[1]
    nodes = np.full((runs, m), np.nan)
    weights = np.zeros((runs, m))
    for r in range(runs):
        size = int(lengths[r])
        values, vectors = np.linalg.eigh(_tridiagonal(alphas[r, :size], betas[r, :size]))
        nodes[r, :size] = values
        weights[r, :size] = vectors[0] ** 2
    grid, density, variance = smooth_density(nodes, weights, bins=bins, sigma_squared=sigma_squared,
                                             overhead=overhead)  # fmt: skip
    return Density(
        grid=grid, density=density, nodes=nodes, weights=weights, sigma_squared=variance,
        config={**op.config, "runs": runs, "steps": steps, "start": start, "seed": seed,
                "bins": bins, "sigma_squared": sigma_squared, "overhead": overhead,
                "method": "stochastic lanczos quadrature"},
    )  # fmt: skip


def smooth_density(
    nodes: np.ndarray,
    weights: np.ndarray,
    *,
    bins: int = DENSITY_BINS,
    sigma_squared: float = DENSITY_SIGMA_SQUARED,
    overhead: float = DENSITY_OVERHEAD,
) -> tuple[np.ndarray, np.ndarray, float]:
    """PyHessian's smoothing of SLQ nodes/weights [runs, m]: the grid spans the runs' mean
    smallest to mean largest node, widened by ``overhead``; each node is a Gaussian of variance
    ``sigma_squared * max(1, span)`` times its weight; runs are averaged; the result is scaled
    to mass 1 on the grid. Returns (grid, density, variance)."""
    hi = float(np.mean(np.nanmax(nodes, axis=1))) + overhead
    lo = float(np.mean(np.nanmin(nodes, axis=1))) - overhead
    grid = np.linspace(lo, hi, bins)
    variance = sigma_squared * max(1.0, hi - lo)
    # Each Gaussian is evaluated only where exp() does not underflow to 0 (|x - node| within
    # UNDERFLOW standard deviations): the same values as the whole grid, a fraction of the work.
    reach = UNDERFLOW * math.sqrt(variance)
    norm = 1.0 / math.sqrt(2 * math.pi * variance)
    density = np.zeros(bins)
    for node_row, weight_row in zip(nodes, weights, strict=True):
        keep = np.isfinite(node_row)
        starts = np.searchsorted(grid, node_row[keep] - reach, side="left")
        ends = np.searchsorted(grid, node_row[keep] + reach, side="right")
        for node, weight, a, b in zip(node_row[keep], weight_row[keep], starts, ends, strict=True):
            diff = grid[a:b] - node
            density[a:b] += weight * norm * np.exp(-(diff**2) / (2 * variance))
    density /= len(nodes)
    density /= density.sum() * (grid[1] - grid[0])
    return grid, density, variance


def _check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise SpecError(f"curvature seed must be a non-negative integer, got {seed!r}")
