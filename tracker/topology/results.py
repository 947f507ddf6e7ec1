"""Reading topology results: embeddings, persistence diagrams, per-sample losses.

Shared by the CLI, the plots and the dashboard; every array goes through the one reader.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._arrays import read_array
from tracker._exceptions import QueueError, SpecError
from tracker._schema import Embedding, PersistenceDiagram, Task, TrajectoryPoint
from tracker._store import ArrayStore
from tracker.topology.rows import LOSSES


@dataclass
class EmbeddingData:
    """A finished embedding: its row and arrays."""

    embedding: Embedding
    coords: np.ndarray
    potential: np.ndarray
    order: np.ndarray  # columns: tracker.topology.kinds.ORDER_COLUMNS

    @property
    def seeds(self) -> np.ndarray:
        return self.order[:, 4]

    @property
    def steps(self) -> np.ndarray:
        return self.order[:, 5]

    @property
    def epochs(self) -> np.ndarray:
        return self.order[:, 3]


def _unfinished(what: str, row: Embedding | PersistenceDiagram, session: Session) -> QueueError:
    task = session.get(Task, row.task_id) if row.task_id else None
    state = task.status if task else "unknown"
    return QueueError(f"{what} is not complete yet (its task is {state}): run `tracker work`, then `tracker status` shows what is left")  # fmt: skip


def load_embedding(session: Session, store: ArrayStore, embedding_id: int) -> EmbeddingData:
    """An embedding's coordinates, potential and sample order; unfinished is a clear error."""
    emb = Embedding.find_or_raise_by_id(session, embedding_id)
    if emb.coords_array_id is None:
        raise _unfinished(f"embedding {embedding_id}", emb, session)
    return EmbeddingData(
        embedding=emb, coords=read_array(session, store, emb.coords_array_id),
        potential=read_array(session, store, emb.potential_array_id),
        order=read_array(session, store, emb.order_array_id),
    )  # fmt: skip


def load_diagram(
    session: Session, store: ArrayStore, diagram_id: int
) -> tuple[PersistenceDiagram, np.ndarray]:
    """A persistence diagram row and its (birth, death, dimension) array."""
    row = PersistenceDiagram.find_or_raise_by_id(session, diagram_id)
    if row.diagram_array_id is None:
        raise _unfinished(f"persistence diagram {diagram_id}", row, session)
    return row, read_array(session, store, row.diagram_array_id)


def sample_loss(session: Session, order: np.ndarray, loss: str) -> np.ndarray:
    """The per-sample loss in embedding order (NaN where the split has none)."""
    if loss not in LOSSES:
        raise SpecError(f"unknown loss {loss!r}: use one of {', '.join(LOSSES)}")
    column = getattr(TrajectoryPoint, f"{loss}_loss")
    ids = sorted({int(i) for i in order[:, 0]})
    rows = session.execute(
        sa.select(TrajectoryPoint.retrain_id, TrajectoryPoint.save_index, column)
        .where(TrajectoryPoint.retrain_id.in_(ids))
    ).all()  # fmt: skip
    table = {(r, s): v for r, s, v in rows}
    out = [table.get((int(r), int(s))) for r, s in zip(order[:, 0], order[:, 2], strict=True)]
    return np.array([np.nan if v is None else v for v in out], dtype=np.float64)
