"""Writing result rows: the one get-or-add by spec hash that every method's enqueue uses.

A spec hash is a unique key, so enqueueing the same spec twice finds the first row; two
enqueues racing on one spec both end with the row that committed first. The finders
(``Table.find_or_raise_by_id``) are classmethods of the tables in ``tracker._schema``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from tracker._queue import note_task
from tracker._schema import WorkRow

RowT = TypeVar("RowT", bound=WorkRow)


def get_or_add(session: Session, cls: type[RowT], digest: str, **values: Any) -> tuple[RowT, bool]:
    """The row of ``cls`` with this spec hash and whether it is new (added and flushed now).

    A concurrent enqueue of the same spec that commits first wins, and its row is returned
    (as ``enqueue`` does for tasks).
    """
    row = session.scalar(sa.select(cls).where(cls.spec_hash == digest))
    if row is not None:
        note_task(row.task_id)  # the row's result may still be coming: `--wait` waits for it
        return row, False
    try:
        with session.begin_nested():
            new: Callable[..., RowT] = cls  # the declarative constructor takes the columns
            row = new(spec_hash=digest, **values)
            session.add(row)
            session.flush()
    except sa_exc.IntegrityError:
        row = session.scalar(sa.select(cls).where(cls.spec_hash == digest))
        if row is None:  # the violation was another constraint: report it
            raise
        note_task(row.task_id)
        return row, False
    return row, True
