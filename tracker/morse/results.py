"""Morse-graph results shared by the task kinds, `tracker plot morse` and the benchmark: an
ensemble's stored weights, and a computed graph with what its figures need."""

from __future__ import annotations

from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._exceptions import CorruptArray
from tracker._schema import ArrayRef, Ensemble, EnsembleMember
from tracker.morse.rows import find_morse


def ensemble_weights(
    session: Session, store: Any, ensemble: Ensemble
) -> tuple[np.ndarray, np.ndarray]:
    """Early and final weights [models, params] from the arrays the ensemble row references;
    row i of both is model i, so pairs match by model id."""
    out = []
    for what, ref_id in (("early", ensemble.early_array_id), ("final", ensemble.final_array_id)):
        ref = session.get(ArrayRef, ref_id) if ref_id is not None else None
        if ref is None:
            raise CorruptArray(f"ensemble {ensemble.id} has no stored {what} weights: requeue its tasks")  # fmt: skip
        out.append(np.asarray(store.read(ref.path), dtype=np.float64))
    return out[0], out[1]


def load_morse(session: Session, store: Any, morse_id: int) -> dict[str, Any]:
    """A computed Morse graph with its arrays, the ensemble's early weights on its two axes,
    and each model's metrics: what the plots need."""
    row = find_morse(session, morse_id)
    ensemble = session.get(Ensemble, row.ensemble_id)
    columns = list(row.source["weight_columns"])
    early = np.asarray(store.read(session.get(ArrayRef, ensemble.early_array_id).path))
    members = session.scalars(
        sa.select(EnsembleMember)
        .where(EnsembleMember.ensemble_id == ensemble.id)
        .order_by(EnsembleMember.model_index)
    ).all()
    return {
        "id": row.id, "ensemble_id": ensemble.id, "setup": row.setup, "subdiv": row.subdiv,
        "graph": row.graph, "weight_names": list(row.weight_names),
        "morse_sets": store.read(session.get(ArrayRef, row.morse_sets_array_id).path),
        "retraction": store.read(session.get(ArrayRef, row.retraction_array_id).path),
        "early": early[:, columns],
        "accuracy": np.array([m.balanced_accuracy for m in members], dtype=np.float64),
        "entropy": np.array([m.entropy for m in members], dtype=np.float64),
    }  # fmt: skip
