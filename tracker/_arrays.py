"""Arrays as rows: the one path formula, the ``arrays`` row writer, and the one array reader.

Every stored array lives at ``FOLDER/ID-HASH/NAME``: the row's id and the first ten
characters of its spec hash, so a reset database never points at an older run's arrays.
Readers go through ``read_array``; by default it checks the array against its row
(shape, dtype, every chunk written) before returning it.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._exceptions import CorruptArray
from tracker._schema import ArrayRef
from tracker._store import ArraySpec, ArrayStore


class SpecRow(Protocol):
    """A row that owns arrays: an id and a spec hash."""

    @property
    def id(self) -> int: ...

    @property
    def spec_hash(self) -> str: ...


def array_path(folder: str, row: SpecRow, *names: str) -> str:
    """The store path of ``row``'s arrays (``names`` go below its folder), e.g.
    ``array_path("surfaces", surface, "loss") == "surfaces/12-3fa9c0d1e2/loss"``."""
    return "/".join((f"{folder}/{row.id}-{row.spec_hash[:10]}", *names))


def array_id(session: Session, path: str) -> int | None:
    """The id of the array row at ``path`` (None while no task has recorded it)."""
    return session.scalar(sa.select(ArrayRef.id).where(ArrayRef.path == path))


def add_array(session: Session, spec: ArraySpec, *, task_id: int | None = None) -> ArrayRef:
    """Record (or update) the row of an array written to the store; flushed, so it has an id."""
    ref = session.scalar(sa.select(ArrayRef).where(ArrayRef.path == spec.path))
    if ref is None:
        ref = ArrayRef(path=spec.path)
        session.add(ref)
    ref.shape, ref.dtype, ref.chunks = list(spec.shape), spec.dtype, list(spec.chunks)
    if task_id is not None:
        ref.task_id = task_id
    session.flush()
    return ref


def array_spec(ref: ArrayRef) -> ArraySpec:
    """What the row says the stored array is."""
    return ArraySpec(ref.path, tuple(ref.shape), ref.dtype, tuple(ref.chunks))


def array_ref(session: Session, array_id: int | None, what: str) -> ArrayRef:
    """The row of the array ``what`` refers to; no array yet is a CorruptArray naming it."""
    ref = session.get(ArrayRef, array_id) if array_id is not None else None
    if ref is None:
        raise CorruptArray(f"{what} has no stored array: its producing task has not finished")
    return ref


def read_array(
    session: Session,
    store: ArrayStore,
    array_id: int | None,
    *,
    verify: bool = True,
    what: str | None = None,
) -> np.ndarray:
    """The stored array of an ``arrays`` row.

    ``verify=True`` checks it against its row (layout, every chunk present) first; ``False``
    reads whatever is there (arrays whose rows predate their recorded layout).
    """
    ref = array_ref(session, array_id, what or f"array row {array_id}")
    if verify:
        return store.verify(array_spec(ref))
    return store.read(ref.path)
