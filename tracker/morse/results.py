"""Morse-graph results shared by the task kinds, `tracker plot morse` and the benchmark: an
ensemble's stored weights, and a computed graph with what its figures need."""

from __future__ import annotations

from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._arrays import read_array
from tracker._exceptions import NotFound
from tracker._schema import Ensemble, EnsembleMember
from tracker._store import ArrayStore
from tracker.morse.rows import NO_ENSEMBLE_FIX, find_morse


def ensemble_weights(
    session: Session, store: ArrayStore, ensemble: Ensemble
) -> tuple[np.ndarray, np.ndarray]:
    """Early and final weights [models, params] from the arrays the ensemble row references;
    row i of both is model i, so pairs match by model id."""
    out = []
    for what, ref_id in (("early", ensemble.early_array_id), ("final", ensemble.final_array_id)):
        weights = read_array(
            session, store, ref_id, what=f"ensemble {ensemble.id}'s {what} weights"
        )
        out.append(np.asarray(weights, dtype=np.float64))
    return out[0], out[1]


def load_morse(session: Session, store: ArrayStore, morse_id: int) -> dict[str, Any]:
    """A computed Morse graph with its arrays, the ensemble's early weights on its two axes,
    and each model's metrics: what the plots need."""
    row = find_morse(session, morse_id)
    if row.ensemble_id is None:  # its ensemble was deleted
        raise NotFound(f"Morse graph {morse_id} lost its ensemble: {NO_ENSEMBLE_FIX}")
    ensemble = Ensemble.find_or_raise_by_id(session, row.ensemble_id)
    columns = list(row.source["weight_columns"])
    early = np.asarray(read_array(session, store, ensemble.early_array_id))
    members = session.scalars(
        sa.select(EnsembleMember)
        .where(EnsembleMember.ensemble_id == ensemble.id)
        .order_by(EnsembleMember.model_index)
    ).all()
    return {
        "id": row.id, "ensemble_id": ensemble.id, "setup": row.setup, "subdiv": row.subdiv,
        "graph": row.graph, "weight_names": list(row.weight_names),
        "morse_sets": read_array(session, store, row.morse_sets_array_id),
        "retraction": read_array(session, store, row.retraction_array_id),
        "early": early[:, columns],
        "accuracy": _per_model(members, "balanced_accuracy", len(early)),
        "entropy": _per_model(members, "entropy", len(early)),
    }  # fmt: skip


def _per_model(members: Any, key: str, n_models: int) -> np.ndarray:
    """One metric per model by model index; NaN for a model without a member row."""
    out = np.full(n_models, np.nan)
    for m in members:
        value = getattr(m, key)
        out[m.model_index] = np.nan if value is None else value
    return out
