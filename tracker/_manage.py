"""What `tracker ls`, `cancel` and `delete` do, as plain data: listing rows with safe filters,
cancelling queued work, deleting rows with everything that hangs on them.

``--where`` filters are parsed here into ``column op value`` against the table's own columns
and bound as parameters: user text never becomes SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tracker._cliutil import LISTABLE as LISTABLE_NAMES
from tracker._db import utcnow
from tracker._exceptions import ConfigError, QueueError
from tracker._queue import find_study
from tracker._schema import (
    ArrayRef,
    Base,
    Checkpoint,
    Direction,
    Embedding,
    Ensemble,
    HessianSpectrum,
    L2BaselineRun,
    LevelSetRun,
    Model,
    MorseGraph,
    PersistenceDiagram,
    Retrain,
    Study,
    Surface,
    Task,
    TaskDependency,
)

# What `tracker ls WHAT` lists: a name a user types -> the table.
_TABLES: dict[str, type[Base]] = {
    "studies": Study,
    "tasks": Task,
    "models": Model,
    "checkpoints": Checkpoint,
    "directions": Direction,
    "surfaces": Surface,
    "hessian": HessianSpectrum,
    "retrains": Retrain,
    "embeddings": Embedding,
    "diagrams": PersistenceDiagram,
    "levelsets": LevelSetRun,
    "l2-baselines": L2BaselineRun,
    "ensembles": Ensemble,
    "morse": MorseGraph,
    "arrays": ArrayRef,
}
LISTABLE = {name: _TABLES[name] for name in LISTABLE_NAMES}  # the order `tracker ls` shows

# Columns not worth a terminal column (a script gets them with --json).
_HIDDEN_IN_TEXT = {"spec_hash", "lease_token", "payload", "result", "error", "config"}

_FILTER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|!=|<=|>=|=|<|>|~)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Filter:
    """One ``--where`` condition: a known column, an operator, a typed value (None: NULL)."""

    column: str
    op: str
    value: Any


def table_of(what: str) -> type[Base]:
    try:
        return LISTABLE[what]
    except KeyError:
        raise ConfigError(f"no such kind of row {what!r}: choose one of {', '.join(LISTABLE)}") from None


def parse_filter(table: type[Base], text: str) -> Filter:
    """``text`` such as ``lr<0.1``, ``dataset=mnist``, ``name~resnet`` (contains),
    ``completed_at=null`` as a Filter on a column of ``table``; anything else is a ConfigError."""
    match = _FILTER.match(text)
    columns = table.__table__.columns
    if match is None:
        raise ConfigError(
            f"--where {text!r} is not COLUMN OP VALUE (OP one of = != < <= > >= ~), "
            "e.g. --where 'lr<0.1'"
        )
    name, op, raw = match.groups()
    if name not in columns:
        raise ConfigError(
            f"--where {text!r}: {table.__tablename__} has no column {name!r}; "
            f"its columns: {', '.join(columns.keys())}"
        )
    op = "=" if op == "==" else op
    column = columns[name]
    if raw.lower() in ("null", "none"):
        if op not in ("=", "!="):
            raise ConfigError(f"--where {text!r}: compare with null only by = or !=")
        return Filter(name, op, None)
    if op == "~":
        return Filter(name, op, raw)
    return Filter(name, op, _typed(column, raw, text))


def _scalar_kind(column: Any) -> type | None:
    """The Python type of a column a filter can compare (None for JSON and other kinds)."""
    try:
        kind = column.type.python_type
    except NotImplementedError:
        return None
    return kind if kind in (int, float, str, bool, datetime) else None


def _typed(column: Any, raw: str, text: str) -> Any:
    kind = _scalar_kind(column)
    if kind is None:
        raise ConfigError(f"--where {text!r}: {column.name} holds JSON; filter another column")
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if kind is datetime:
            return datetime.fromisoformat(raw)
        return kind(raw)
    except ValueError:
        raise ConfigError(
            f"--where {text!r}: {raw!r} is not {_KIND_NAMES.get(kind, kind)} ({column.name})"
        ) from None


_KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "text",
               datetime: "a date-time such as 2026-11-30T12:00"}  # fmt: skip


def _condition(table: type[Base], f: Filter) -> sa.ColumnElement[bool]:
    column = table.__table__.columns[f.column]
    if f.value is None:
        return column.is_(None) if f.op == "=" else column.is_not(None)
    if f.op == "~":
        return sa.cast(column, sa.String).contains(f.value, autoescape=True)
    ops = {
        "=": column.__eq__, "!=": column.__ne__, "<": column.__lt__, "<=": column.__le__,
        ">": column.__gt__, ">=": column.__ge__,
    }  # fmt: skip
    return ops[f.op](f.value)  # type: ignore[no-any-return]


def list_rows(
    session: Session,
    what: str,
    study: str | None = None,
    where: list[str] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The rows of table ``what`` (of ``study``, matching every filter), as column dicts."""
    table = table_of(what)
    filters = [parse_filter(table, text) for text in where or []]
    query = sa.select(table.__table__)
    if study is not None:
        study_id = find_study(session, study).id
        columns = table.__table__.columns
        if "study_id" in columns:
            query = query.where(columns["study_id"] == study_id)
        elif table is Study:
            query = query.where(columns["id"] == study_id)
        elif table is Checkpoint:
            query = query.where(
                columns["model_id"].in_(sa.select(Model.id).where(Model.study_id == study_id))
            )
        else:
            query = query.where(
                columns["task_id"].in_(sa.select(Task.id).where(Task.study_id == study_id))
            )
    for f in filters:
        query = query.where(_condition(table, f))
    query = query.order_by(table.__table__.columns["id"])
    if limit is not None:
        query = query.limit(limit)
    return [dict(row._mapping) for row in session.execute(query)]


def text_columns(what: str) -> list[str]:
    """The columns `tracker ls WHAT` prints as text (JSON and bookkeeping columns left out)."""
    table = table_of(what)
    out = []
    for column in table.__table__.columns:
        if column.name not in _HIDDEN_IN_TEXT and _scalar_kind(column) is not None:
            out.append(column.name)
    if "tags" in table.__table__.columns:
        out.append("tags")
    return out


# --- cancel -------------------------------------------------------------------------------------

CANCELLED = "cancelled by `tracker cancel`: `tracker requeue` brings it back"


def cancel(session: Session, task_ids: list[int], study: str | None) -> list[int]:
    """Fail the pending and waiting tasks among ``task_ids`` (or all of ``study``); their waiting
    dependents fail with them. Running, done and failed tasks are left as they are."""
    if not task_ids and study is None:
        raise ConfigError("say what to cancel: task ids or --study NAME")
    query = sa.select(Task.id).where(Task.status.in_(("pending", "waiting")))
    if task_ids:
        query = query.where(Task.id.in_(task_ids))
    if study is not None:
        query = query.where(Task.study_id == find_study(session, study).id)
    ids = set(session.scalars(query.with_for_update()))
    frontier = set(ids)
    while frontier:  # the tasks waiting on cancelled ones could never run: cancelled too
        frontier = set(
            session.scalars(
                sa.select(TaskDependency.task_id)
                .join(Task, Task.id == TaskDependency.task_id)
                .where(TaskDependency.depends_on_id.in_(frontier), Task.status == "waiting")
            )
        ) - ids
        ids |= frontier
    if ids:
        session.execute(
            sa.update(Task)
            .where(Task.id.in_(ids), Task.status.in_(("pending", "waiting")))
            .values(status="failed", error=CANCELLED, finished_at=utcnow()),
            execution_options={"synchronize_session": False},
        )
    return sorted(ids)


# --- delete -------------------------------------------------------------------------------------


@dataclass
class Deletion:
    """The rows (by table) and array paths that deleting some rows takes with it."""

    rows: dict[str, set[int]]
    paths: list[str]

    def counts(self) -> dict[str, int]:
        return {t: len(ids) for t, ids in self.rows.items() if ids}


def _fks_into(target: sa.Table) -> list[tuple[sa.Table, sa.ForeignKey]]:
    return [
        (t, fk)
        for t in Base.metadata.sorted_tables
        for fk in t.foreign_keys
        if fk.column.table is target
    ]


def plan_deletion(session: Session, what: str, ids: list[int]) -> Deletion:
    """Everything that goes with the ``what`` rows ``ids``: rows that point at them (a model's
    checkpoints and surfaces), the tasks that make them and the tasks that wait on those,
    the rows those tasks produce, and the arrays of all of them."""
    tables = {t.name: t for t in Base.metadata.sorted_tables}
    start = Base.metadata.tables[table_of(what).__tablename__]
    found = set(session.scalars(sa.select(start.c.id).where(start.c.id.in_(ids))))
    missing = sorted(set(ids) - found)
    if missing:
        raise ConfigError(f"no {what} with id {missing[0]}: `tracker ls {what}` lists them")
    rows: dict[str, set[int]] = {name: set() for name in tables if "id" in tables[name].c}
    todo: list[tuple[str, set[int]]] = [(start.name, found)]
    while todo:
        name, batch = todo.pop()
        batch = batch - rows[name]
        if not batch:
            continue
        rows[name] |= batch
        table = tables[name]
        more: list[tuple[str, set[int]]] = []
        # Rows that point at these (unless the pointer is merely cleared on delete).
        for child, fk in _fks_into(table):
            if fk.ondelete == "SET NULL" or "id" not in child.c or child.name == "arrays":
                continue
            more.append((child.name, _ids(session, child, fk.parent.in_(batch))))
        if "task_id" in table.c and name != "arrays":
            more.append(("tasks", _ids(session, table, table.c.id.in_(batch), table.c.task_id)))
        if name == "tasks":
            deps = tables["task_dependencies"]
            more.append(("tasks", _ids(session, deps, deps.c.depends_on_id.in_(batch),
                                       deps.c.task_id)))  # fmt: skip
            for other in tables.values():
                if "task_id" in other.c and "id" in other.c and other.name != "task_blocks":
                    more.append((other.name, _ids(session, other, other.c.task_id.in_(batch))))
        else:
            for column in table.c:
                if column.name.endswith("_array_id"):
                    more.append(("arrays", _ids(session, table, table.c.id.in_(batch), column)))
        todo.extend(more)
    arrays = tables["arrays"]
    paths = sorted(
        session.scalars(sa.select(arrays.c.path).where(arrays.c.id.in_(rows["arrays"])))
    )
    return Deletion(rows, paths)


def _ids(
    session: Session, table: sa.Table, where: Any, column: sa.Column[Any] | None = None
) -> set[int]:
    col = table.c.id if column is None else column
    return {i for i in session.scalars(sa.select(col).where(where)) if i is not None}


def delete(session: Session, plan: Deletion) -> None:
    """Delete the planned rows, children before parents; refused while any of its tasks runs."""
    running = session.scalars(
        sa.select(Task.id).where(Task.id.in_(plan.rows["tasks"]), Task.status == "running")
    ).all()
    if running:
        raise QueueError(
            f"task {running[0]} of these rows is running: wait for it, or `tracker cancel` the "
            "rest and delete once it has finished"
        )
    deps = Base.metadata.tables[TaskDependency.__tablename__]
    session.execute(
        deps.delete().where(
            sa.or_(deps.c.task_id.in_(plan.rows["tasks"]),
                   deps.c.depends_on_id.in_(plan.rows["tasks"]))
        )
    )  # fmt: skip
    # Children before parents. The tables' order is not enough where their keys form a cycle
    # (retrains -> directions -> hessian_spectra -> retrains: a retrain's jump direction, and
    # the eigenvector directions of its networks' spectra), so each pass deletes the planned
    # rows no other planned row still points at; the rows themselves never form a cycle.
    order = list(reversed(Base.metadata.sorted_tables))
    left = {t.name: set(plan.rows.get(t.name) or ()) for t in order}
    while any(left.values()):
        progressed = False
        for table in order:
            ids = left[table.name] - _held(session, table, left)
            if not ids:
                continue
            # Pointers that are cleared on delete: cleared here too, whatever the backend does.
            for child, fk in _fks_into(table):
                if fk.ondelete == "SET NULL":
                    session.execute(
                        child.update().where(fk.parent.in_(ids)).values({fk.parent.name: None})
                    )
            if table.name == "tasks":
                blocks = Base.metadata.tables["task_blocks"]
                session.execute(blocks.delete().where(blocks.c.task_id.in_(ids)))
            session.execute(table.delete().where(table.c.id.in_(ids)))
            left[table.name] -= ids
            progressed = True
        if not progressed:  # only a cycle among the rows themselves could stop it
            raise QueueError(f"these rows point at each other in a cycle: {left}")


def _held(session: Session, table: sa.Table, left: dict[str, set[int]]) -> set[int]:
    """The planned rows of ``table`` that planned rows of other tables, not yet deleted,
    still point at (by a key that is not cleared on delete)."""
    ids = left[table.name]
    held: set[int] = set()
    if not ids:
        return held
    for child, fk in _fks_into(table):
        pending = left.get(child.name)
        if fk.ondelete == "SET NULL" or child is table or not pending:
            continue
        held |= _ids(session, child, sa.and_(child.c.id.in_(pending), fk.parent.in_(ids)),
                     fk.parent)  # fmt: skip
    return held


def find_study_id(session: Session, name: str) -> int:
    return find_study(session, name).id


# --- tags and notes -------------------------------------------------------------------------------

TAG_LIMIT = 64


def retag(
    row: Study | Model, add: list[str], remove: list[str], note: str | None
) -> dict[str, Any]:
    """Add and remove tags on a study or model row and set its note (``""`` clears it);
    return its id, tags and note."""
    for label in add:
        if not label or len(label) > TAG_LIMIT or not label.isprintable() or "," in label:
            raise ConfigError(
                f"tag {label!r} is not 1-{TAG_LIMIT} printable characters without a comma"
            )
    tags = [t for t in (row.tags or []) if t not in remove]
    tags += [t for t in dict.fromkeys(add) if t not in tags]
    row.tags = tags
    if note is not None:
        row.note = note or None
    return {"id": row.id, "tags": tags, "note": row.note}
