"""Morse graphs of a learned map between two training checkpoints (DOODL3, arXiv 2106.07683).

The dynamical system is f: early weights -> final weights of an ensemble, restricted to two
kernel weights and learned with a Gaussian process (its posterior mean). CMGDB covers the
padded bounding box of the data with 2**subdiv boxes, builds the outer-approximating box map
F(B) = [min f(corners) - w, max f(corners) + w] (w: the box width) and returns the Morse graph:
the recurrent strongly connected components of the box digraph, ordered by reachability.

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

    lo: tuple[float, float]
    hi: tuple[float, float]
    shape: tuple[int, int]  # boxes along (y, x): rasters are indexed [iy, ix]
    nodes: list[dict[str, Any]]
    edges: list[tuple[int, int]]  # (u, v): v is reachable from u; transitively reduced
    morse_sets: np.ndarray  # int32 [ny, nx]: the node a box belongs to, or NONE
    retraction: np.ndarray  # int32 [ny, nx]: node, NONE or AMBIGUOUS
    seconds: float

    @property
    def attractors(self) -> list[int]:
        """Minimal nodes: nothing below them."""
        return [n["id"] for n in self.nodes if n["attractor"]]

    def graph_json(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "edges": [list(e) for e in self.edges],
            "lo": list(self.lo),
            "hi": list(self.hi),
            "shape": list(self.shape),
        }


# --- the data ---------------------------------------------------------------------------------


def pick_weights(final: np.ndarray, candidates: list[int], pick: str) -> list[int]:
    """The two candidate columns whose final values vary most (or least) across models.

    Ties go to the lower column index, so the choice is deterministic.
    """
    if pick not in PICKS:
        raise SpecError(f"unknown pick {pick!r}: use one of {', '.join(PICKS)}")
    if len(candidates) < 2:
        raise SpecError(
            f"a Morse graph needs at least two candidate weights, got {len(candidates)}: "
            "use an ensemble whose setup has two or more kernel weights"
        )
    std = np.asarray(final, dtype=np.float64)[:, candidates].std(axis=0)
    key = -std if pick == "max-variance" else std
    order = np.argsort(key, kind="stable")
    return [int(candidates[i]) for i in order[:2]]


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
    """The GP posterior mean as a map of (m, 2) points to (m, 2) points."""

    def f(points: np.ndarray) -> np.ndarray:
        return np.asarray(gp.predict(np.asarray(points, dtype=np.float64)), dtype=np.float64)

    return f


# --- CMGDB ------------------------------------------------------------------------------------


class GridCornerMap:
    """The padded corner box map of ``f`` on CMGDB's uniform grid, with ``f`` evaluated once
    per grid vertex.

    Neighbouring boxes share corners, and CMGDB maps every box more than once (the Morse graph
    pass and the cached map graph), so evaluating ``f`` (a GP prediction) per box corner costs
    about eight times the (nx + 1) (ny + 1) vertex values. Rectangles that are not boxes of
    the grid fall back to evaluating ``f`` at their corners.
    """

    def __init__(self, f: BatchMap, lo: list[float], hi: list[float], subdiv: int) -> None:
        self.f = f
        self.lo = np.asarray(lo, dtype=np.float64)
        hi_a = np.asarray(hi, dtype=np.float64)
        # CMGDB splits dimension 0 first, then alternates: level 15 is 256 x 128 boxes.
        self.n = np.array([2 ** ((subdiv + 1) // 2), 2 ** (subdiv // 2)])
        self.width = (hi_a - self.lo) / self.n
        self.values: np.ndarray | None = None  # [nx + 1, ny + 1, 2]

    def _vertex_values(self) -> np.ndarray:
        if self.values is None:
            gx = self.lo[0] + self.width[0] * np.arange(self.n[0] + 1)
            gy = self.lo[1] + self.width[1] * np.arange(self.n[1] + 1)
            pts = np.stack(np.meshgrid(gx, gy, indexing="ij"), axis=-1).reshape(-1, 2)
            self.values = np.asarray(self.f(pts)).reshape(len(gx), len(gy), 2)
        return self.values

    def __call__(self, rects: np.ndarray) -> np.ndarray:
        rects = np.asarray(rects, dtype=np.float64)
        i0 = np.rint((rects[:, :2] - self.lo) / self.width).astype(np.int64)
        i1 = np.rint((rects[:, 2:] - self.lo) / self.width).astype(np.int64)
        tol = 1e-9 * self.width
        on_grid = (
            np.all(np.abs(self.lo + i0 * self.width - rects[:, :2]) <= tol, axis=1)
            & np.all(np.abs(self.lo + i1 * self.width - rects[:, 2:]) <= tol, axis=1)
            & np.all(i1 - i0 == 1, axis=1)
            & np.all((i0 >= 0) & (i1 <= self.n), axis=1)
        )
        out = np.empty_like(rects)
        if on_grid.any():
            v = self._vertex_values()
            a, b = i0[on_grid], i1[on_grid]
            corners = np.stack([v[a[:, 0], a[:, 1]], v[b[:, 0], a[:, 1]],
                                v[a[:, 0], b[:, 1]], v[b[:, 0], b[:, 1]]])  # fmt: skip
            pad = rects[on_grid, 2:] - rects[on_grid, :2]
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
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Grid indices (ix, iy) of uniform boxes [N, 4] and the grid shape (ny, nx)."""
    width = boxes[0, 2:] - boxes[0, :2]
    counts = np.rint((hi - lo) / width).astype(int)
    ix = np.floor((boxes[:, 0] - lo[0]) / width[0] + 0.5).astype(np.int64)
    iy = np.floor((boxes[:, 1] - lo[1]) / width[1] + 0.5).astype(np.int64)
    return (
        np.clip(ix, 0, counts[0] - 1),
        np.clip(iy, 0, counts[1] - 1),
        (int(counts[1]), int(counts[0])),
    )


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
    started = time.perf_counter()
    model = _cmgdb_model(f, lo, hi, subdiv)
    compute = CMGDB.ComputeConleyMorseGraph if conley else CMGDB.ComputeMorseGraph
    mg, map_graph = compute(model, cache_map_graph=retraction)
    n_nodes = int(mg.num_vertices())
    n_boxes = int(map_graph.num_vertices())
    boxes = np.asarray([mg.phase_space_box(i) for i in range(n_boxes)], dtype=np.float64)
    lo_a, hi_a = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    ix, iy, shape = _raster_index(boxes, lo_a, hi_a)
    morse_sets = np.full(shape, NONE, dtype=np.int32)
    edges = sorted((int(u), int(v)) for u, v in mg.edges())
    nodes: list[dict[str, Any]] = []
    for v in range(n_nodes):
        members = np.asarray(mg.morse_set(v), dtype=np.int64)
        morse_sets[iy[members], ix[members]] = v
        rects = boxes[members]
        annotations = [str(a) for a in mg.annotations(v)] if conley else []
        nodes.append({
            "id": v,
            "n_boxes": len(members),
            "attractor": not any(u == v for u, _ in edges),
            "conley_index": annotations or None,
            "bbox": [float(rects[:, 0].min()), float(rects[:, 1].min()),
                     float(rects[:, 2].max()), float(rects[:, 3].max())],
        })  # fmt: skip
    retract = np.full(shape, NOT_COMPUTED, dtype=np.int32)
    if retraction and n_nodes <= 64:
        masks = _reachability_masks(map_graph, mg, n_boxes, n_nodes)
        retract[iy, ix] = _greatest(masks, n_nodes, _below(n_nodes, edges))
    return MorseResult(
        lo=(float(lo[0]), float(lo[1])), hi=(float(hi[0]), float(hi[1])), shape=shape,
        nodes=nodes, edges=edges, morse_sets=morse_sets, retraction=retract,
        seconds=time.perf_counter() - started,
    )  # fmt: skip


def retract_points(result: MorseResult, points: np.ndarray) -> np.ndarray:
    """The retraction's value at each point (its box's), NONE outside the domain."""
    pts = np.asarray(points, dtype=np.float64)
    lo, hi = np.asarray(result.lo), np.asarray(result.hi)
    ny, nx = result.shape
    frac = (pts - lo) / (hi - lo)
    ix = np.floor(frac[:, 0] * nx).astype(np.int64)
    iy = np.floor(frac[:, 1] * ny).astype(np.int64)
    inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    out = np.full(len(pts), NONE, dtype=np.int32)
    out[inside] = result.retraction[iy[inside], ix[inside]]
    return out


def morse_from_pairs(
    early: np.ndarray, final: np.ndarray, subdiv: int, seed: int, *, conley: bool = True
) -> tuple[MorseResult, dict[str, Any]]:
    """DOODL3's whole computation on pairs (early[m], final[m]) of two weights per model."""
    gp, params = fit_gp(early, final, seed)
    lo, hi = domain(early, final)
    return compute_morse_graph(gp_map(gp), lo, hi, subdiv, conley=conley), params
