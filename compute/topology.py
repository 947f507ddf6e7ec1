"""PHATE embeddings and loss-level persistence of jump-and-retrain samples (Horoi et al. 2022).

Three steps, each a plain function of arrays so the task kinds and the benchmark share them:

1. :func:`streamed_pca`: principal-component scores of the samples ``X [n, D]`` without ever
   holding ``X``. The caller hands a reader of column blocks; the centred Gram matrix
   ``Xc Xc^T`` (n x n, float64) is accumulated block by block, and its eigenvectors give the
   exact PCA scores ``U S`` (the same numbers as a full SVD, up to each component's sign,
   which is fixed: the largest-magnitude score is positive). Memory is O(n^2 + n * block),
   whatever D is.
2. :func:`phate_embedding`: PHATE with cosine distances for the kNN graph and for metric MDS,
   on the PCA scores (``n_pca=None``: PHATE does no PCA of its own). The reference ran PHATE's
   randomised PCA to 100 components on the raw parameters and then cosine distances on those
   scores; doing the PCA ourselves, exactly and streamed, is that computation with an exact
   instead of a randomised decomposition. When D is huge the cosine distances are those of
   the PCA-reduced vectors, not of the raw parameter vectors: an approximation, exact only
   when the kept components span the samples.
3. :func:`persistence_diagram`: a k-nearest-neighbour graph in diffusion-potential distance
   (``U[i, j] = -log(P^t[i, j] + 1e-7)`` is how far j is from i in t diffusion steps; each i
   is linked to the k smallest ``U[i, j]``, j != i; ``legacy=True`` takes the k largest, as the
   published code did), its flag complex to dimension 2 with the lower-star filtration of a
   per-sample loss (vertex: its loss; edge and triangle: the largest loss of their vertices),
   and gudhi's persistence in dimensions 0 and 1. H0 keeps its zero-length pairs, so it has
   one pair per sample; H1 drops them (a cycle that a triangle fills at the value it appears).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tracker import SpecError

PCA_BLOCK = 1 << 16  # columns per block of the streamed Gram matrix
PHATE_KNN = 5  # phate's defaults, written out: they are part of the recorded method
PHATE_DECAY = 40
T_MAX = 100

COLUMN_CHUNK = 1 << 16  # columns per Zarr chunk of a trajectory row

ColumnReader = Callable[[slice], np.ndarray]


def trajectory_chunks(n_columns: int) -> tuple[int, int]:
    """Chunks of a [saves, D] trajectory: one save per chunk row, so each save owns its chunks
    and a reader of a column block decodes only that block."""
    return (1, max(1, min(n_columns, COLUMN_CHUNK)))


class NonFiniteSamples(SpecError):
    """Some samples hold NaN or infinite values (a diverged retrain)."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows
        super().__init__(f"{len(rows)} samples hold NaN or infinite parameters (rows {rows[:5].tolist()}...): drop the diverged runs or use smaller steps")  # fmt: skip


@dataclass(frozen=True)
class PCAResult:
    scores: np.ndarray  # [n, k] float64, U S of the centred samples
    explained_variance_ratio: np.ndarray  # [k]
    n_columns: int


def streamed_pca(
    read_columns: ColumnReader, n_samples: int, n_columns: int, n_components: int = 100,
    block: int = PCA_BLOCK,
) -> PCAResult:  # fmt: skip
    """Exact PCA scores of ``X [n_samples, n_columns]`` read one column block at a time.

    ``read_columns(slice)`` returns ``X[:, slice]``. Components with no variance (beyond the
    n - 1 a centred set of n samples can have) are dropped.
    """
    if n_samples < 3:
        raise SpecError(f"an embedding needs at least 3 samples, got {n_samples}")
    gram = np.zeros((n_samples, n_samples), dtype=np.float64)
    for start in range(0, n_columns, block):
        cols = slice(start, min(start + block, n_columns))
        x = np.asarray(read_columns(cols), dtype=np.float64)
        if x.shape != (n_samples, cols.stop - cols.start):
            raise SpecError(f"a column block has shape {x.shape}, expected {(n_samples, cols.stop - cols.start)}")  # fmt: skip
        x -= x.mean(axis=0, keepdims=True)
        gram += x @ x.T
    bad = np.flatnonzero(~np.isfinite(np.diag(gram)))
    if len(bad):
        raise NonFiniteSamples(bad)
    eigvals, eigvecs = np.linalg.eigh(gram)
    eigvals, eigvecs = eigvals[::-1].clip(min=0.0), eigvecs[:, ::-1]
    total = float(eigvals.sum())
    if total <= 0.0:
        raise SpecError("all samples are the same point: there is nothing to embed")
    keep = int(np.sum(eigvals > total * 1e-12))
    k = max(1, min(n_components, n_samples - 1, keep))
    scores = eigvecs[:, :k] * np.sqrt(eigvals[:k])
    for j in range(k):  # a fixed sign per component: its largest-magnitude score is positive
        if scores[np.argmax(np.abs(scores[:, j])), j] < 0:
            scores[:, j] = -scores[:, j]
    return PCAResult(scores, eigvals[:k] / total, n_columns)


class TrajectoryColumns:
    """The samples of several [saves, D] arrays as one [n, len(columns)] matrix, read by blocks.

    ``store.read(path, selection)`` reads a selection of one array (``tracker._store``);
    ``columns`` are the indices to keep (increasing), e.g. the trainable parameters.
    """

    def __init__(self, store: Any, paths: list[str], columns: np.ndarray) -> None:
        self.store, self.paths, self.columns = store, paths, np.asarray(columns)

    def __call__(self, cols: slice) -> np.ndarray:
        idx = self.columns[cols]
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        parts = [self.store.read(p, (slice(None), slice(lo, hi)))[:, idx - lo] for p in self.paths]
        return np.concatenate(parts, axis=0)


@dataclass(frozen=True)
class Embedding:
    coords: np.ndarray  # [n, 2]
    potential: np.ndarray  # [n, n]
    t: int
    notes: list[str] = field(default_factory=list)  # PHATE's warnings, if any


def phate_embedding(scores: np.ndarray, seed: int, *, knn: int = PHATE_KNN) -> Embedding:
    """Cosine PHATE (kNN graph and MDS) of PCA scores, with a fixed random state."""
    import phate

    n = int(scores.shape[0])
    op = phate.PHATE(
        n_components=2, knn=min(knn, n - 1), decay=PHATE_DECAY, t="auto", knn_dist="cosine",
        mds_dist="cosine", n_pca=None, n_landmark=None, random_state=int(seed), n_jobs=1,
        verbose=0,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        # PHATE warns (a disconnected kNN graph, an unconverged MDS): recorded on the row.
        warnings.simplefilter("always")
        coords = np.asarray(op.fit_transform(np.ascontiguousarray(scores)), dtype=np.float64)
    notes = sorted({str(w.message).strip() for w in caught})
    potential = np.asarray(op.diff_potential, dtype=np.float64)
    t = int(op.optimal_t) if op.optimal_t is not None else int(op.t)
    return Embedding(coords=coords, potential=potential, t=t, notes=notes)


def knn_edges(potential: np.ndarray, k: int, *, legacy: bool = False) -> np.ndarray:
    """Undirected edges [E, 2] (i < j, sorted) linking each sample to k others by potential.

    Ties are broken by index (a stable sort), so the graph is a function of the matrix.
    """
    n = int(potential.shape[0])
    if not 1 <= k < n:
        raise SpecError(f"knn must be between 1 and {n - 1} (the samples minus one), got {k}")
    u = np.array(potential, dtype=np.float64)
    np.fill_diagonal(u, -np.inf if legacy else np.inf)
    order = np.argsort(-u if legacy else u, axis=1, kind="stable")[:, :k]
    rows = np.repeat(np.arange(n), k)
    pairs = np.column_stack([rows, order.ravel()])
    pairs.sort(axis=1)
    return np.unique(pairs, axis=0)


def persistence_diagram(
    values: np.ndarray, edges: np.ndarray, *, max_dimension: int = 2
) -> np.ndarray:
    """[m, 3] rows of (birth, death, dimension) for dimensions 0 and 1; death inf if never.

    A non-finite vertex value (a diverged retrain) enters the filtration last, at +inf.
    """
    import gudhi

    f = np.asarray(values, dtype=np.float64).copy()
    f[~np.isfinite(f)] = np.inf
    st = gudhi.SimplexTree()
    for v, value in enumerate(f):
        st.insert([v], filtration=float(value))
    for a, b in np.asarray(edges, dtype=np.int64):
        st.insert([int(a), int(b)], filtration=float(max(f[a], f[b])))
    st.expansion(max_dimension)
    # persistence_dim_max: without triangles the complex is 1-dimensional, and gudhi would
    # otherwise skip its top dimension (H1).
    st.compute_persistence(min_persistence=-1.0, persistence_dim_max=True)
    parts = []
    for dim in (0, 1):
        iv = np.asarray(st.persistence_intervals_in_dimension(dim), dtype=np.float64).reshape(-1, 2)
        if dim == 1:  # an edge closing a cycle that a triangle fills at once is no feature
            iv = iv[iv[:, 1] > iv[:, 0]]
        iv = iv[np.lexsort((iv[:, 1], iv[:, 0]))]
        parts.append(np.column_stack([iv, np.full(len(iv), float(dim))]))
    return np.vstack(parts)


SUMMARY_COLUMNS = ("count", "total_p1", "total_p2", "max")


def summarize_diagram(diagram: np.ndarray) -> dict[str, float | int | None]:
    """Per dimension: pairs (infinite ones included), total persistence sum |d - b|^p over the
    finite pairs for p = 1, 2, and the largest finite persistence (None if there is none)."""
    out: dict[str, float | int | None] = {}
    for dim in (0, 1):
        rows = diagram[diagram[:, 2] == dim]
        life = rows[:, 1] - rows[:, 0]
        finite = life[np.isfinite(life)]
        out[f"h{dim}_count"] = len(rows)
        out[f"h{dim}_total_p1"] = float(np.sum(np.abs(finite)))
        out[f"h{dim}_total_p2"] = float(np.sum(finite**2))
        out[f"h{dim}_max"] = float(finite.max()) if len(finite) else None
    return out
