"""Directions in weight space for loss surfaces (Li et al. 2018, "Visualizing the Loss Landscape").

Every direction is a flat float32 CPU vector over a model's layout (see ``compute.state``), of
the same length as a checkpoint, with zeros on the entries it does not move. A surface point is
then ``centre + a * d1 + b * d2``.

Random directions: one Gaussian vector of the layout's length is drawn from a CPU
``torch.Generator`` seeded with ``seed`` (so the same seed gives the same direction on any
device), entries outside the mask are zeroed, and the result is rescaled by ``normalization``:

- ``filter``: for each tensor with more than one dimension, every slice along dim 0 (an output
  filter or neuron) gets the norm of the centre's slice: ``d_i *= |theta_i| / (|d_i| + 1e-10)``.
- ``layer``: each tensor as a whole gets the norm of the centre's tensor.
- ``model``: the tensors of two or more dimensions, together, get the norm of the centre's.
- ``none``: the raw Gaussian draw on the tensors of two or more dimensions.
- ``filter-std``: seed 001's (l-berg/landscapes) scaling: each slice along dim 0 of the draw is
  multiplied by the standard deviation (unbiased) of the centre's slice, ``d_i = std(theta_i)
  z_i``, and a tensor of at most one dimension by its whole standard deviation; no rescaling
  to the centre's norm, and no ``d = theta`` rule (that is Goldstein's).

Whatever the normalisation, tensors with at most one dimension (biases, BatchNorm weight/bias,
running statistics), when not ignored, take the centre's own values, ``d = theta``, as the
reference implementation (tomgoldstein/loss-landscape,
``net_plotter.normalize_directions_for_weights``) does.

``ignore='biasbn'`` zeroes tensors with at most one dimension. ``target='weights'`` moves only
parameters (buffers stay the centre's); ``'states'`` also moves the floating buffers (BatchNorm
running mean and variance), with the same rules.
"""

from __future__ import annotations

import torch

from compute.state import Layout, check_length, layout_size, mask
from tracker import SpecError

NORMALIZATIONS = ("filter", "layer", "model", "none", "filter-std")
IGNORES = ("biasbn", "none")
TARGETS = ("weights", "states")

_EPS = 1e-10
_PCA_BLOCK = 1 << 20  # columns per float64 block in pca_directions


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SpecError(f"{name}={value!r} is not one of {', '.join(allowed)}: pick one of those")


def _as_vector(vec: torch.Tensor, layout: Layout, what: str) -> torch.Tensor:
    vec = torch.as_tensor(vec)
    if vec.dim() != 1:
        raise SpecError(f"{what} must be a flat state vector, got shape {tuple(vec.shape)}")
    check_length(vec, layout)
    return vec.detach().to("cpu", torch.float32)


def random_direction(
    layout: Layout,
    centre: torch.Tensor,
    *,
    seed: int,
    normalization: str = "filter",
    ignore: str = "biasbn",
    target: str = "weights",
) -> torch.Tensor:
    """A seeded Gaussian direction, normalised against ``centre`` (see the module docstring)."""
    _check_choice("normalization", normalization, NORMALIZATIONS)
    _check_choice("ignore", ignore, IGNORES)
    _check_choice("target", target, TARGETS)
    theta = _as_vector(centre, layout, "centre")
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    # One draw over the whole layout, buffers included, so a parameter's entries are the same
    # for target='weights' and target='states' with the same seed.
    direction = torch.randn(layout_size(layout), generator=generator, dtype=torch.float32)
    keep = mask(layout, target=target, ignore=ignore)
    direction.mul_(keep)
    if normalization == "filter-std":
        return _scale_by_filter_std(direction, theta, layout, keep)

    # Tensors of at most one dimension (biases, BatchNorm weights, running statistics) that the
    # mask keeps take the centre's own values whatever the normalisation: the reference code
    # (net_plotter.normalize_directions_for_weights) copies them before it looks at `norm`, so
    # only the tensors of two or more dimensions are rescaled below.
    small = torch.zeros_like(keep, dtype=torch.bool)
    for entry in layout:
        if len(entry["shape"]) <= 1:
            small[entry["offset"] : entry["offset"] + entry["size"]] = True
    small &= keep.bool()

    if normalization == "model":
        big = keep * ~small
        scale = torch.linalg.vector_norm(theta * big) / (
            torch.linalg.vector_norm(direction * big) + _EPS
        )
        direction.mul_(scale)
    elif normalization != "none":
        for entry in layout:
            start, stop = entry["offset"], entry["offset"] + entry["size"]
            if len(entry["shape"]) <= 1 or not bool(keep[start:stop].any()):
                continue
            d = direction[start:stop]
            w = theta[start:stop]
            if normalization == "layer":
                d.mul_(torch.linalg.vector_norm(w) / (torch.linalg.vector_norm(d) + _EPS))
            else:
                rows = entry["shape"][0]
                d2 = d.view(rows, -1)
                w2 = w.view(rows, -1)
                ratio = torch.linalg.vector_norm(w2, dim=1) / (
                    torch.linalg.vector_norm(d2, dim=1) + _EPS
                )
                d2.mul_(ratio[:, None])
    direction[small] = theta[small]
    return direction


def _scale_by_filter_std(
    direction: torch.Tensor, theta: torch.Tensor, layout: Layout, keep: torch.Tensor
) -> torch.Tensor:
    """``d_i = std(theta_i) z_i`` per dim-0 slice (whole tensor when at most 1-D); a slice of
    one value has no spread and gets 0."""
    for entry in layout:
        start, stop = entry["offset"], entry["offset"] + entry["size"]
        if not bool(keep[start:stop].any()):
            continue
        rows = entry["shape"][0] if len(entry["shape"]) > 1 else 1
        d2 = direction[start:stop].view(rows, -1)
        w2 = theta[start:stop].view(rows, -1)
        if w2.shape[1] < 2:
            d2.zero_()
            continue
        d2.mul_(w2.double().std(dim=1, keepdim=True).float())
    return direction


def interpolation_direction(
    layout: Layout, a: torch.Tensor, b: torch.Tensor, *, target: str = "weights"
) -> torch.Tensor:
    """``b - a`` on the entries ``target`` moves, unnormalised; x = 0 is ``a``, x = 1 is ``b``.

    Interpolating models with BatchNorm needs ``target='states'`` so the running statistics
    travel with the weights.
    """
    _check_choice("target", target, TARGETS)
    va = _as_vector(a, layout, "the first model's state")
    vb = _as_vector(b, layout, "the second model's state")
    return (vb - va) * mask(layout, target=target, ignore="none")


def pca_directions(
    layout: Layout,
    trajectory: torch.Tensor,
    final: torch.Tensor,
    *,
    ignore: str = "biasbn",
    target: str = "weights",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The plane that best fits an optimiser's path, and the path's coordinates on it.

    The rows of ``trajectory`` (checkpoints in epoch order) minus ``final``, restricted to the
    mask, are centred over the checkpoints and decomposed as sklearn's ``PCA(2)`` would (SVD of
    the centred matrix, computed through its small Gram matrix in float64). Each component's
    sign makes its largest-magnitude entry positive.

    Returns ``(d1, d2, explained_variance_ratio [2], coords [n, 2])``. ``d1`` and ``d2`` are
    orthonormal, so the coordinates are dot products of ``checkpoint - final`` with them (equal
    to the least-squares fit of the reference's ``project_2D``); ``final`` sits at (0, 0) and
    ``coords @ [d1; d2]`` is each checkpoint's orthogonal projection onto the plane.
    """
    _check_choice("ignore", ignore, IGNORES)
    _check_choice("target", target, TARGETS)
    traj = torch.as_tensor(trajectory)
    if traj.dim() != 2:
        raise SpecError(
            f"the trajectory must be a [checkpoints, values] matrix, got shape {tuple(traj.shape)}"
        )
    check_length(traj, layout)
    n = int(traj.shape[0])
    if n < 3:
        raise SpecError(
            f"PCA directions need at least 3 checkpoints, got {n}: save more checkpoints"
        )
    theta = _as_vector(final, layout, "the final model's state")
    keep = mask(layout, target=target, ignore=ignore)
    traj = traj.detach().to("cpu")

    def diffs(cols: slice) -> torch.Tensor:
        # checkpoint - final on the masked entries of one column block, in float64
        block = traj[:, cols].to(torch.float64) - theta[cols].to(torch.float64)
        return block * keep[cols].to(torch.float64)

    # Column blocks keep the float64 copy small for large models.
    blocks = [
        slice(s, min(s + _PCA_BLOCK, traj.shape[1])) for s in range(0, traj.shape[1], _PCA_BLOCK)
    ]
    gram = torch.zeros(n, n, dtype=torch.float64)
    for cols in blocks:
        block = diffs(cols)
        block -= block.mean(dim=0, keepdim=True)
        gram += block @ block.T
    eigvals, eigvecs = torch.linalg.eigh(gram)
    eigvals = eigvals.flip(0).clamp_min(0.0)
    eigvecs = eigvecs.flip(1)
    total = float(eigvals.sum())
    if total <= 0.0 or float(eigvals[1]) <= total * 1e-12:
        raise SpecError(
            "the checkpoints do not span a plane (they differ in fewer than 2 directions): "
            "use checkpoints from different epochs"
        )
    components = torch.empty(traj.shape[1], 2, dtype=torch.float64)
    for cols in blocks:
        block = diffs(cols)
        block -= block.mean(dim=0, keepdim=True)
        components[cols] = (block.T @ eigvecs[:, :2]) / eigvals[:2].sqrt()
    # One re-orthonormalisation removes the rounding of the Gram route.
    components, _ = torch.linalg.qr(components)
    for k in range(2):
        column = components[:, k]
        if float(column[column.abs().argmax()]) < 0:
            components[:, k] = -column
    ratio = eigvals[:2] / total
    coords = torch.zeros(n, 2, dtype=torch.float64)
    for cols in blocks:
        coords += diffs(cols) @ components[cols]
    d1 = components[:, 0].to(torch.float32).contiguous()
    d2 = components[:, 1].to(torch.float32).contiguous()
    return d1, d2, ratio, coords
