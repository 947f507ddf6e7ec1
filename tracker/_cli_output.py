"""What a command prints: prose for a person, or one JSON document for a script (``--json``).

Every command gets the ``--json`` flag from the shared parent parser. A command reports through
``emit(args, data, text)``; with ``--json`` only ``data`` is printed, as one JSON document on
stdout, so a script never parses prose. Enqueueing commands hand an ``Enqueued`` to ``emit``.
A writing command that reports nothing itself (a new verb that only prints prose) still answers
``--json``: ``main`` prints the rows its session created, recorded by ``RowsCreated``.

Only the standard library is imported at module top (`tracker --help` imports this module).
"""

from __future__ import annotations

import argparse
import io
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any


def wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def jsonable(value: Any) -> Any:
    """``value`` in JSON's own types: times as ISO 8601 text, NaN and infinities as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    to_json = getattr(value, "to_json", None)
    return jsonable(to_json()) if callable(to_json) else str(value)


def dumps(data: Any) -> str:
    return json.dumps(jsonable(data))


def emit(args: argparse.Namespace, data: Any, text: str | Callable[[], str] | None) -> None:
    """Print ``data`` as JSON under ``--json``, else ``text`` (a string, or a function that
    makes it: tables are built only for a person). ``None`` prints nothing in text mode."""
    if isinstance(data, Enqueued):
        args.enqueued = data  # what `enqueue --wait` waits for (tracker._wait)
    if wants_json(args):
        args.json_payload = data  # main prints it once the command has returned
    elif text is not None:
        print(text() if callable(text) else text)


@dataclass(frozen=True)
class Enqueued:
    """What an enqueue command made or found: the rows a script goes on with.

    ``what`` is the table (``surfaces``), ``ids`` the ids of its rows the request names, in
    order; under ``--json`` the output adds which of them this call created and every row it
    created (``RowsCreated``), so a command need not work that out itself.
    """

    study: str
    what: str
    ids: list[int]
    tasks: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, created: dict[str, list[int]] | None = None) -> dict[str, Any]:
        created = created or {}
        made = set(created.get(self.what, []))
        return {
            "study": self.study,
            "what": self.what,
            "ids": list(self.ids),
            "new": [i for i in self.ids if i in made],
            "already_queued": [i for i in self.ids if i not in made],
            "tasks": list(self.tasks),
            **self.extra,
            "created": created,
        }


class RowsCreated:
    """The ids of the rows each database session inserted, by table, while it is active.

    Listens to SQLAlchemy's ``after_flush`` on every session (the ORM assigns ids at flush),
    so it sees rows added by any command without that command's help.
    """

    def __init__(self) -> None:
        self.ids: dict[str, list[int]] = {}

    def _record(self, session: Any, _context: Any) -> None:
        for obj in session.new:
            table = getattr(obj, "__tablename__", None)
            row_id = getattr(obj, "id", None)
            if table and isinstance(row_id, int):
                self.ids.setdefault(table, []).append(row_id)

    @contextmanager
    def watching(self) -> Iterator[RowsCreated]:
        from sqlalchemy import event
        from sqlalchemy.orm import Session

        event.listen(Session, "after_flush", self._record)
        try:
            yield self
        finally:
            event.remove(Session, "after_flush", self._record)

    def to_json(self) -> dict[str, Any]:
        return {"created": {t: sorted(set(ids)) for t, ids in self.ids.items()}}


@contextmanager
def json_mode(args: argparse.Namespace) -> Iterator[None]:
    """Run a command so that it prints exactly one JSON document under ``--json``.

    The command's own prose is captured; what it gave ``emit`` is printed, else (a command
    that knows nothing of JSON) the rows it created and its prose as a list of lines.
    """
    if not wants_json(args):
        yield
        return
    captured = io.StringIO()
    with RowsCreated().watching() as rows, redirect_stdout(captured):
        yield  # an error propagates: stderr has its one line, stdout stays empty
    if getattr(args, "json_printed", False):  # the command printed its document itself
        return
    payload = getattr(args, "json_payload", rows)
    if isinstance(payload, Enqueued):
        document: Any = payload.to_json(rows.to_json()["created"])
    elif hasattr(args, "json_payload"):
        document = payload
    else:
        lines = [line for line in captured.getvalue().splitlines() if line.strip()]
        document = {**rows.to_json(), "output": lines}
    extra = getattr(args, "json_extra", None)  # e.g. what `enqueue --wait` waited for
    if extra and isinstance(document, dict):
        document = {**document, **extra}
    print(dumps(document))
