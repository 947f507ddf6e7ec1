"""The task kind ``measures.refresh``: a study's measures rebuilt where its results land.

A worker asks for one in the transaction that marks a result task done (kinds registered with
``measures=True``: train, surface.complete, hessian, persistence, levelset.run, morse), unless
one is already pending for the study; it has the lowest priority, so during a sweep it waits
behind the other work and covers every result that finished meanwhile. `tracker meta` is then
only needed for the table and the MLflow metrics: ``v_measures`` is current without it.
"""

from __future__ import annotations

from typing import Any

from tracker._context import TaskContext
from tracker._queue import MEASURES_REFRESH
from tracker._registry import task_kind
from tracker.meta.rows import refresh_measures


@task_kind(MEASURES_REFRESH, batch=False)
def measures_refresh(ctx: TaskContext) -> dict[str, Any]:
    study_id = int(ctx.payload["study_id"])
    assert ctx.db is not None  # a worker's context
    with ctx.db.session() as session:  # one transaction: the rows change together or not at all
        n = refresh_measures(session, ctx.store, study_id)
    return {"study_id": study_id, "measures": n}
