"""Morse graphs of a learned map between two training checkpoints (DOODL3, arXiv 2106.07683).

The dynamical system is f: early weights -> final weights of an ensemble, restricted to K >= 2
kernel weights and learned with a Gaussian process (its posterior mean). CMGDB covers the
padded bounding box of the data with 2**subdiv boxes (dimension 0 split first, then the next,
cyclically), builds the outer-approximating box map F(B) = [min f(corners) - w,
max f(corners) + w] (w: the box width) and returns the Morse graph: the recurrent strongly
connected components of the box digraph, ordered by reachability. A node whose Conley index is
trivial (all zero) is a spurious recurrent set of the outer approximation, not dynamics of f.

Rasters are indexed with the last weight first: [iy, ix] for two weights, [i_{K-1}, ..., i_0]
for K.

The order retraction sends every box to the greatest Morse node reachable from it: the
identity on Morse sets, ``AMBIGUOUS`` where the reachable nodes have no greatest element,
``NONE`` where no node is reachable (the box leaves the domain).

This module knows nothing about SQL; it takes arrays and returns arrays and plain dicts.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tracker._exceptions import SpecError

NONE = -1  # no Morse node is reachable from the box
AMBIGUOUS = -2  # the reachable Morse nodes have no greatest element
NOT_COMPUTED = -3  # the retraction was not computed for this box
MAX_SUBDIV = 20  # 2**20 boxes: about a million, minutes of CMGDB time
PICKS = ("max-variance", "min-variance")
DOMAIN_PADDING = 0.5

BatchMap = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class MorseResult:
    """A Morse graph on a uniform grid of boxes, with the Morse sets and the retraction."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    shape: tuple[int, ...]  # boxes along (y, x) for two weights: rasters are indexed [iy, ix]
    nodes: list[dict[str, Any]]
    edges: list[tuple[int, int]]  # (u, v): v is reachable from u; transitively reduced
    morse_sets: np.ndarray  # int32 [ny, nx]: the node a box belongs to, or NONE
    retraction: np.ndarray  # int32 [ny, nx]: node, NONE or AMBIGUOUS
    seconds: float

    @property
    def attractors(self) -> list[int]:
        """Minimal nodes: nothing below them."""
        return [n["id"] for n in self.nodes if n["attractor"]]

    @property
    def n_nontrivial(self) -> int | None:
        """Nodes whose Conley index is not trivial; None when the indices were not computed."""
        flags = [n.get("trivial") for n in self.nodes]
        if any(f is None for f in flags):
            return None
        return sum(1 for f in flags if not f)

    def graph_json(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "edges": [list(e) for e in self.edges],
            "lo": list(self.lo),
            "hi": list(self.hi),
            "shape": list(self.shape),
        }


# --- the data ---------------------------------------------------------------------------------


MAX_WEIGHTS = 8  # 2**8 corners per box and at least one split per axis


def pick_weights(final: np.ndarray, candidates: list[int], pick: str, k: int = 2) -> list[int]:
    """The ``k`` candidate columns whose final values vary most (or least) across models, in
    DOODL3's order: ascending standard deviation, as its notebooks take ``std_df[-k:]`` (so the
    first axis of a pair is the second largest, the second axis the largest).

    Ties go to the lower column index first, so the choice is deterministic.
    """
    if pick not in PICKS:
        raise SpecError(f"unknown pick {pick!r}: use one of {', '.join(PICKS)}")
    if not 2 <= k <= MAX_WEIGHTS:
        raise SpecError(f"a Morse graph takes 2..{MAX_WEIGHTS} weights, got {k}")
    if len(candidates) < k:
        raise SpecError(
            f"a Morse graph on {k} weights needs {k} candidate weights, got {len(candidates)}: "
            "use fewer --weights or an ensemble whose setup has more kernel weights"
        )
    std = np.asarray(final, dtype=np.float64)[:, candidates].std(axis=0)
    order = np.argsort(std, kind="stable")
    chosen = order[-k:] if pick == "max-variance" else order[:k]
    return [int(candidates[i]) for i in chosen]


def box_counts(subdiv: int, dim: int) -> list[int]:
    """Boxes along each axis at ``subdiv``: CMGDB splits axis 0 first, then 1, ... cyclically
    (subdiv 15 in two dimensions: 256 x 128)."""
    return [2 ** ((subdiv - d + dim - 1) // dim) for d in range(dim)]


def domain(
    x: np.ndarray, y: np.ndarray, pad: float = DOMAIN_PADDING
) -> tuple[list[float], list[float]]:
    """The bounding box of both ends of the pairs, padded by ``pad`` on every side."""
    both = np.vstack([x, y]).astype(np.float64)
    lo = (both.min(axis=0) - pad).tolist()
    hi = (both.max(axis=0) + pad).tolist()
    return lo, hi


def fit_gp(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[Any, dict[str, Any]]:
    """DOODL3's regressor: RBF(0.5, bounds [0.01, 2]) + white noise; returns it and its fit."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, WhiteKernel

    kernel = RBF(length_scale=0.5, length_scale_bounds=(0.01, 2.0)) + WhiteKernel()
    gp = GaussianProcessRegressor(kernel=kernel, random_state=seed)
    # DOODL3's bounds are narrow; a fit at a bound is a fact about the data to record, not
    # an error.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        gp.fit(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    fitted = gp.kernel_
    params = {
        "kernel": str(fitted),
        "length_scale": float(fitted.k1.length_scale),
        "noise_level": float(fitted.k2.noise_level),
        "log_marginal_likelihood": float(gp.log_marginal_likelihood_value_),
        "seed": int(seed),
        "n_pairs": len(x),
        "warnings": sorted({str(w.message).split(".")[0] for w in caught}),
    }
    return gp, params


def gp_map(gp: Any) -> BatchMap:
    """The GP posterior mean as a map of (m, K) points to (m, K) points."""

    def f(points: np.ndarray) -> np.ndarray:
        return np.asarray(gp.predict(np.asarray(points, dtype=np.float64)), dtype=np.float64)

    return f


# --- CMGDB ------------------------------------------------------------------------------------


class GridCornerMap:
    """The padded corner box map of ``f`` on CMGDB's uniform grid, with ``f`` evaluated once
    per grid vertex.

    Neighbouring boxes share corners, and CMGDB maps every box more than once (the Morse graph
    pass and the cached map graph), so evaluating ``f`` (a GP prediction) per box corner costs
    about 2**(K+1) times the prod(n_d + 1) vertex values. Rectangles that are not boxes of
    the grid fall back to evaluating ``f`` at their corners.
    """

    def __init__(self, f: BatchMap, lo: list[float], hi: list[float], subdiv: int) -> None:
        self.f = f
        self.lo = np.asarray(lo, dtype=np.float64)
        self.dim = len(lo)
        hi_a = np.asarray(hi, dtype=np.float64)
        self.n = np.array(box_counts(subdiv, self.dim))
        self.width = (hi_a - self.lo) / self.n
        self.values: np.ndarray | None = None  # [n_0 + 1, ..., n_{K-1} + 1, K]
        self.corners = np.array(list(np.ndindex(*([2] * self.dim))), dtype=np.int64)

    def _vertex_values(self) -> np.ndarray:
        if self.values is None:
            axes = [self.lo[d] + self.width[d] * np.arange(self.n[d] + 1) for d in range(self.dim)]
            pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, self.dim)
            self.values = np.asarray(self.f(pts)).reshape(*(len(a) for a in axes), self.dim)
        return self.values

    def __call__(self, rects: np.ndarray) -> np.ndarray:
        rects = np.asarray(rects, dtype=np.float64)
        k = self.dim
        i0 = np.rint((rects[:, :k] - self.lo) / self.width).astype(np.int64)
        i1 = np.rint((rects[:, k:] - self.lo) / self.width).astype(np.int64)
        tol = 1e-9 * self.width
        on_grid = (
            np.all(np.abs(self.lo + i0 * self.width - rects[:, :k]) <= tol, axis=1)
            & np.all(np.abs(self.lo + i1 * self.width - rects[:, k:]) <= tol, axis=1)
            & np.all(i1 - i0 == 1, axis=1)
            & np.all((i0 >= 0) & (i1 <= self.n), axis=1)
        )
        out = np.empty_like(rects)
        if on_grid.any():
            v = self._vertex_values()
            a = i0[on_grid]
            corners = np.stack([v[tuple((a + c).T)] for c in self.corners])
            pad = rects[on_grid, k:] - rects[on_grid, :k]
            out[on_grid] = np.hstack([corners.min(axis=0) - pad, corners.max(axis=0) + pad])
        if not on_grid.all():
            import CMGDB

            out[~on_grid] = CMGDB.BoxMapBatch(self.f, rects[~on_grid], padding=True)
        return out


def _cmgdb_model(f: BatchMap, lo: list[float], hi: list[float], subdiv: int) -> Any:
    import CMGDB

    batch = GridCornerMap(f, lo, hi, subdiv)

    def single(rect: list[float]) -> list[float]:
        return batch(np.asarray([rect], dtype=np.float64))[0].tolist()

    model = CMGDB.Model(int(subdiv), list(lo), list(hi), single)
    model.set_batch_map(batch)
    return model


def _raster_index(
    boxes: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[tuple[np.ndarray, ...], tuple[int, ...]]:
    """Raster indices of uniform boxes [N, 2K] (last axis first: (iy, ix) for K = 2) and the
    raster's shape ((ny, nx) for K = 2)."""
    k = len(lo)
    width = boxes[0, k:] - boxes[0, :k]
    counts = np.rint((hi - lo) / width).astype(int)
    index = [
        np.clip(np.floor((boxes[:, d] - lo[d]) / width[d] + 0.5).astype(np.int64), 0, counts[d] - 1)
        for d in range(k)
    ]
    return tuple(reversed(index)), tuple(int(c) for c in reversed(counts))


def conley_trivial(annotations: list[str]) -> bool | None:
    """Whether a Conley index (CMGDB's annotations, one polynomial per homology dimension) is
    trivial: every entry zero. None when there is no index to judge."""
    if not annotations:
        return None
    return all(_zero(text) for text in annotations)


def _zero(text: str) -> bool:
    """A CMGDB Conley-index annotation like "(0, 0)" or "(x, 0)": all of its entries are 0."""
    entries = [e.strip() for e in text.strip().strip("()[]").split(",")]
    return all(e in ("0", "") for e in entries)


def _below(n: int, edges: list[tuple[int, int]]) -> list[set[int]]:
    """For each node, the nodes strictly below it (reachable along Morse graph edges)."""
    children: list[list[int]] = [[] for _ in range(n)]
    for u, v in edges:
        children[u].append(v)
    out: list[set[int]] = []
    for start in range(n):
        seen: set[int] = set()
        stack = list(children[start])
        while stack:
            v = stack.pop()
            if v not in seen:
                seen.add(v)
                stack.extend(children[v])
        out.append(seen)
    return out


def _greatest(masks: np.ndarray, n: int, below: list[set[int]]) -> np.ndarray:
    """Per distinct bitmask of reachable nodes: its greatest node, NONE or AMBIGUOUS."""
    out = np.full(masks.shape, NONE, dtype=np.int32)
    for mask in np.unique(masks):
        reach = [i for i in range(n) if (int(mask) >> i) & 1]
        if not reach:
            continue
        tops = [c for c in reach if all(d == c or d in below[c] for d in reach)]
        out[masks == mask] = tops[0] if len(tops) == 1 else AMBIGUOUS
    return out


def _reachability_masks(map_graph: Any, morse_graph: Any, n_boxes: int, n_nodes: int) -> np.ndarray:
    """Bitmask per box of the Morse nodes reachable from it (CMGDB's native query)."""
    import CMGDB

    return np.asarray(
        CMGDB.MorseReachabilityMasks(map_graph, morse_graph, list(range(n_boxes))), dtype=np.uint64
    )


def compute_morse_graph(
    f: BatchMap,
    lo: list[float],
    hi: list[float],
    subdiv: int,
    *,
    conley: bool = True,
    retraction: bool = True,
) -> MorseResult:
    """The (Conley) Morse graph of the box map of ``f`` on [lo, hi] at ``subdiv``, and its
    order retraction. Works on a uniform grid of 2**subdiv boxes."""
    import CMGDB

    if not 1 <= subdiv <= MAX_SUBDIV:
        raise SpecError(
            f"subdiv must be in 1..{MAX_SUBDIV}, got {subdiv}: choose --subdiv in that range"
        )
    k = len(lo)
    if subdiv < k:
        raise SpecError(f"subdiv {subdiv} is below the {k} weights: each axis needs one split")
    started = time.perf_counter()
    model = _cmgdb_model(f, lo, hi, subdiv)
    compute = CMGDB.ComputeConleyMorseGraph if conley else CMGDB.ComputeMorseGraph
    mg, map_graph = compute(model, cache_map_graph=retraction)
    n_nodes = int(mg.num_vertices())
    n_boxes = int(map_graph.num_vertices())
    boxes = np.asarray([mg.phase_space_box(i) for i in range(n_boxes)], dtype=np.float64)
    lo_a, hi_a = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    index, shape = _raster_index(boxes, lo_a, hi_a)
    morse_sets = np.full(shape, NONE, dtype=np.int32)
    edges = sorted((int(u), int(v)) for u, v in mg.edges())
    nodes: list[dict[str, Any]] = []
    for v in range(n_nodes):
        members = np.asarray(mg.morse_set(v), dtype=np.int64)
        morse_sets[tuple(i[members] for i in index)] = v
        rects = boxes[members]
        annotations = [str(a) for a in mg.annotations(v)] if conley else []
        nodes.append({
            "id": v,
            "n_boxes": len(members),
            "attractor": not any(u == v for u, _ in edges),
            "conley_index": annotations or None,
            "trivial": conley_trivial(annotations),
            "bbox": [*(float(x) for x in rects[:, :k].min(axis=0)),
                     *(float(x) for x in rects[:, k:].max(axis=0))],
        })  # fmt: skip
    retract = np.full(shape, NOT_COMPUTED, dtype=np.int32)
    if retraction and n_nodes <= 64:
        masks = _reachability_masks(map_graph, mg, n_boxes, n_nodes)
        retract[index] = _greatest(masks, n_nodes, _below(n_nodes, edges))
    return MorseResult(
        lo=tuple(float(x) for x in lo), hi=tuple(float(x) for x in hi), shape=shape,
        nodes=nodes, edges=edges, morse_sets=morse_sets, retraction=retract,
        seconds=time.perf_counter() - started,
    )  # fmt: skip


def retract_points(result: MorseResult, points: np.ndarray) -> np.ndarray:
    """The retraction's value at each point (its box's), NONE outside the domain."""
    return raster_at(result.retraction, result.lo, result.hi, points)


def raster_at(
    raster: np.ndarray, lo: Any, hi: Any, points: np.ndarray, outside: int = NONE
) -> np.ndarray:
    """The value of a box raster (last axis first) at points [m, K]; ``outside`` off the
    domain."""
    pts = np.asarray(points, dtype=np.float64)
    lo_a, hi_a = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    counts = np.asarray(raster.shape[::-1])
    idx = np.floor((pts - lo_a) / (hi_a - lo_a) * counts).astype(np.int64)
    inside = np.all((idx >= 0) & (idx < counts), axis=1)
    out = np.full(len(pts), outside, dtype=np.int32)
    out[inside] = raster[tuple(idx[inside, ::-1].T)]
    return out


def morse_from_pairs(
    early: np.ndarray, final: np.ndarray, subdiv: int, seed: int, *, conley: bool = True
) -> tuple[MorseResult, dict[str, Any]]:
    """DOODL3's whole computation on pairs (early[m], final[m]) of K weights per model."""
    gp, params = fit_gp(early, final, seed)
    lo, hi = domain(early, final)
    return compute_morse_graph(gp_map(gp), lo, hi, subdiv, conley=conley), params
