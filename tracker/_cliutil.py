"""Helpers every command-line module shares: settings, the database, tables, lazy commands.

Only the standard library is imported here at module top: each method's ``cli.py`` imports
this module while `tracker --help` builds its parsers, and that must stay instant.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tracker._config import Settings
    from tracker._db import Database

Command = Callable[[argparse.Namespace], int]


def settings(args: argparse.Namespace) -> Settings:
    """The settings the command's --db/--store/--home and the environment give."""
    from tracker._config import resolve

    return resolve(db_url=args.db, store_url=args.store, home=args.home)


def open_db(args: argparse.Namespace, *, check: bool = True) -> Database:
    """The command's database; ``check`` refuses one whose schema is out of date."""
    from tracker._db import open_database

    return open_database(settings(args).db_url, check=check)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Rows as left-aligned text columns under their headers (None prints as blank)."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def when(value: object) -> str:
    """A timestamp as `YYYY-MM-DD HH:MM:SS` (blank for None)."""
    if value is None:
        return ""
    strftime = getattr(value, "strftime", None)
    return str(strftime("%Y-%m-%d %H:%M:%S")) if strftime is not None else str(value)


def lazy_command(module: str, name: str) -> Command:
    """The command function ``name`` of ``module``, imported only when the command runs."""

    def run(args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(module), name)(args) or 0)

    return run
