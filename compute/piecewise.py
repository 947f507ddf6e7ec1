"""Is a network piecewise linear in each of its parameter tensors? A check on one forward pass.

Where it is (ReLU, leaky ReLU, max/average pooling, convolutions and linear layers, BatchNorm
with running statistics, residual additions, padding, reshapes), the output moves linearly
along any direction that changes one parameter tensor, between the kinks, so the residual
term of the Hessian, sum_k dL/df_k * d2 f_k / dtheta2, has zero diagonal blocks. The Hessian's
trace, and each layer's, then equals the generalised Gauss-Newton matrix's, J^T H_L J, whose
probes cost a single backward pass instead of a Hessian-vector product (compute.curvature).

The check runs the model's forward on one sample under a torch-function mode (which sees each
torch function as the model calls it, F.conv2d, F.batch_norm, Tensor.__add__, without the
dispatcher's one-time import of torch._dynamo that a dispatch mode costs) that follows, for
every tensor, the set of parameter tensors it depends on, and classifies each function:

- linear (sums, reshapes, padding, pooling by averages, concatenation): dependencies add up;
- piecewise linear in its inputs (ReLU, max pooling, clamps): the same;
- multilinear (matrix products, convolutions, BatchNorm in eval mode, elementwise products):
  allowed when no parameter tensor reaches two of the multiplied inputs (a shared weight
  used twice, or x * x, is quadratic);
- piecewise constant (sign, rounding) or not floating point (comparisons, sizes, argmax): the
  result depends on nothing;
- anything else touching a parameter (tanh, softmax, BatchNorm with batch statistics, a
  division by an activation): not piecewise linear, and its name is the reason.

Conservative by construction: a function it does not know makes the model "not piecewise
linear", which costs speed (Hessian-vector products are used), never correctness. What
escapes torch functions (a custom autograd Function's own backward) escapes the check.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

# Linear in every tensor input (their dependencies add up), or piecewise linear in them.
_LINEAR = frozenset((
    "add", "__add__", "__radd__", "__iadd__", "add_", "sub", "__sub__", "__rsub__", "__isub__",
    "sub_", "subtract", "neg", "__neg__", "negative", "__pos__", "cat", "concat", "concatenate",
    "stack", "hstack", "vstack", "view", "view_as", "reshape", "reshape_as", "t", "transpose",
    "swapaxes", "permute", "movedim", "expand", "expand_as", "broadcast_to", "clone",
    "contiguous", "__getitem__", "__setitem__", "select", "narrow", "squeeze", "unsqueeze",
    "flatten", "unflatten", "split", "chunk", "unbind", "tensor_split", "to", "type", "float",
    "double", "copy_", "detach", "pad", "mean", "sum", "avg_pool1d", "avg_pool2d",
    "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "index_select", "gather", "take_along_dim", "embedding", "repeat", "tile", "roll", "flip",
    "relu", "relu_", "threshold", "threshold_", "leaky_relu", "leaky_relu_", "hardtanh",
    "hardtanh_", "relu6", "clamp", "clamp_", "clip", "clamp_min", "clamp_max", "abs",
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices",
    "max_pool2d_with_indices", "max_pool3d_with_indices", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "amax", "amin", "max", "min", "maximum",
    "minimum", "where", "masked_fill", "masked_fill_", "dropout", "dropout1d", "dropout2d",
    "dropout3d", "feature_dropout", "zero_", "fill_", "new_zeros", "new_empty",
    "zeros_like", "empty_like", "__iter__",
))  # fmt: skip
# Piecewise constant: no derivative anywhere it has one.
_CONSTANT = frozenset(("sign", "sgn", "floor", "ceil", "round", "trunc", "heaviside"))
# Multilinear: every tensor argument is a factor, except those named here as added (bias) or
# as divisors (which must not depend on the parameters).
_PRODUCTS = frozenset((
    "mm", "bmm", "matmul", "__matmul__", "__rmatmul__", "dot", "mv", "inner", "outer",
    "mul", "__mul__", "__rmul__", "__imul__", "mul_", "multiply", "linear", "bilinear",
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "addmm", "addmv", "baddbmm",
))  # fmt: skip
_ADDED = {"linear": (2, "bias"), "bilinear": (3, "bias"), "conv1d": (2, "bias"),
          "conv2d": (2, "bias"), "conv3d": (2, "bias"), "conv_transpose1d": (2, "bias"),
          "conv_transpose2d": (2, "bias"), "conv_transpose3d": (2, "bias"),
          "addmm": (0, "input"), "addmv": (0, "input"), "baddbmm": (0, "input")}  # fmt: skip
_DIVISIONS = frozenset(("div", "__truediv__", "__itruediv__", "div_", "divide", "true_divide"))
# BatchNorm: where its arguments sit (input, weight, running mean, running var, training).
_BATCH_NORM_ARGS = {
    F.batch_norm: ((0, "input"), (3, "weight"), (1, "running_mean"), (2, "running_var"),
                   (5, "training")),
    torch.batch_norm: ((0, "input"), (1, "weight"), (3, "running_mean"), (4, "running_var"),
                       (5, "training")),
}  # fmt: skip


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], where: tuple[int, str]) -> Any:
    pos, name = where
    return args[pos] if pos < len(args) else kwargs.get(name)


class _Dependencies(TorchFunctionMode):
    """Follows which parameter tensors each tensor depends on; records the first function that
    is not piecewise linear in them."""

    def __init__(self, params: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.deps: WeakIdKeyDictionary = WeakIdKeyDictionary()
        for name, tensor in params.items():
            self.deps[tensor] = frozenset({name})
        self.used: set[str] = set()
        self.reason: str | None = None

    def _of(self, value: Any) -> frozenset[str]:
        if not isinstance(value, torch.Tensor):
            return frozenset()
        found: frozenset[str] = self.deps.get(value, frozenset())
        return found

    def _refuse(self, why: str) -> None:
        if self.reason is None:
            self.reason = why

    def _classify(self, func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                  union: frozenset[str]) -> frozenset[str]:  # fmt: skip
        """The dependencies of the result (refusing what is not piecewise linear)."""
        if not union or name in _CONSTANT:
            return frozenset()
        if name in _LINEAR:
            return union
        if name in _PRODUCTS or name in _DIVISIONS:
            added = _ADDED.get(name)
            skip = _arg(args, kwargs, added) if added else None
            if name in _DIVISIONS:
                if self._of(_arg(args, kwargs, (1, "other"))):
                    self._refuse(f"{name} by a tensor that depends on the parameters")
                return union
            tensors = [a for a in tree_flatten((args, kwargs))[0]
                       if isinstance(a, torch.Tensor) and a is not skip]  # fmt: skip
            self._disjoint(name, [self._of(a) for a in tensors])
            return union
        if func in _BATCH_NORM_ARGS:
            x, w, mean, var, training = (_arg(args, kwargs, a) for a in _BATCH_NORM_ARGS[func])
            if training or self._of(mean) or self._of(var):
                self._refuse("batch statistics (BatchNorm in train mode)")
            self._disjoint(name, [self._of(x), self._of(w)])
            return union
        self._refuse(name)
        return union

    def _disjoint(self, name: str, factors: list[frozenset[str]]) -> None:
        seen: set[str] = set()
        for d in factors:
            if seen & d:
                self._refuse(f"{name} with parameter {sorted(seen & d)[0]!r} in two factors")
            seen |= d

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", type(func).__name__)
        union = frozenset().union(*(self._of(a) for a in tree_flatten((args, kwargs))[0]))
        self.used |= union
        outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        floating = [o for o in outs if o.is_floating_point() or o.is_complex()]
        if not floating and not name.endswith("_") and name != "__setitem__":
            return out  # sizes, comparisons, indices: nothing a derivative passes through
        result = self._classify(func, name, tuple(args), kwargs, union)
        for o in floating:
            self.deps[o] = result
        # In place (x.relu_(), x += y, x[i] = y): the first argument holds the result, and
        # so does the tensor it is a view of.
        if (
            args
            and isinstance(args[0], torch.Tensor)
            and (name.endswith("_") or name.startswith("__i") or name == "__setitem__")
        ):
            target = args[0]
            self.deps[target] = self._of(target) | result
            if target._base is not None:
                self.deps[target._base] = self._of(target._base) | result
        return out


def nonlinearity(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    x1: torch.Tensor,
) -> str | None:
    """None when ``model``'s forward on the sample batch ``x1``, as a function of ``params``
    (``functional_call``'s parameters, buffers fixed), is piecewise linear in each parameter
    tensor; otherwise the first reason it is not (a function's name, batch statistics, a
    parameter in two factors of a product, an unused parameter, an output that is not a
    tensor)."""
    traced = {k: v.detach().clone() for k, v in params.items()}
    mode = _Dependencies(traced)
    with torch.no_grad(), mode:
        out = functional_call(model, (traced, buffers), (x1,))
    if not isinstance(out, torch.Tensor):
        return f"the model returns {type(out).__name__}, not one tensor"
    if mode.reason is not None:
        return mode.reason
    unused = next((k for k in traced if k not in mode.used), None)
    if unused is not None:
        return f"parameter {unused!r} is not used by the forward pass"
    return None
