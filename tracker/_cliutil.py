"""Helpers every command-line module shares: settings, the database, tables, lazy commands.

Only the standard library is imported here at module top: each method's ``cli.py`` imports
this module while `tracker --help` builds its parsers, and that must stay instant.
"""

from __future__ import annotations

import argparse
import copy
import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from tracker._config import Settings
    from tracker._db import Database

Command = Callable[[argparse.Namespace], int]


def settings(args: argparse.Namespace) -> Settings:
    """The settings the command's --db/--store/--home and the environment give."""
    from tracker._config import resolve

    return resolve(db_url=args.db, store_url=args.store, home=args.home)


# Commands that add rows. On a brand-new embedded SQLite database (a file that does not exist
# yet, or has no tables at all) these create the schema themselves, so that `tracker train` on
# a fresh machine just works; reading commands (status, show, plot, export) never create one.
WRITING_COMMANDS = frozenset({"enqueue", "train", "work", "import"})


def open_db(args: argparse.Namespace, *, check: bool = True) -> Database:
    """The command's database; ``check`` refuses one whose schema is out of date.

    For a writing command (``args.command`` in WRITING_COMMANDS) a brand-new SQLite database
    gets the schema at head first; an out-of-date SQLite database and a PostgreSQL database
    without the schema are still refused with the `tracker db upgrade` message.
    """
    from tracker._db import open_database

    url = settings(args).db_url
    if not _writes(args):
        refuse_missing_sqlite(url)
    if not check or getattr(args, "command", None) not in WRITING_COMMANDS:
        return open_database(url, check=check)
    db = open_database(url, check=False)
    create_if_brand_new_sqlite(db)
    db.check_schema()
    return db


def _writes(args: argparse.Namespace) -> bool:
    command = getattr(args, "command", None)
    if command == "db":
        return getattr(args, "db_command", None) in ("upgrade", "downgrade", "create-reader", "create-worker")
    return command in WRITING_COMMANDS


def refuse_missing_sqlite(url: str) -> None:
    """A reading command on an SQLite file that does not exist: the one-line schema error,
    without creating the file or its folder (SQLite would create both on connect)."""
    from pathlib import Path

    from tracker._exceptions import SchemaOutOfDate

    if not url.startswith("sqlite"):
        return
    import sqlalchemy as sa

    try:
        path = sa.engine.make_url(url).database
    except Exception:  # a malformed URL gets its own message from open_database
        return
    if path and path != ":memory:" and not path.startswith("file:") and not Path(path).exists():
        raise SchemaOutOfDate(
            f"the database {path} does not exist, so it has no tracker schema: "
            "run `tracker db upgrade` to create it (or check --db, TRACKER_DB_URL, TRACKER_HOME)"
        )


def create_if_brand_new_sqlite(db: Database) -> bool:
    """Migrate an empty SQLite database to head; True if this call created the schema.

    Only a database with no table at all qualifies: one with some tables but no tracker schema
    (another program's file) or an older revision is left for check_schema to refuse, since
    upgrading data is the user's decision (`tracker db upgrade`, after a backup). PostgreSQL is
    never created here: its database and roles are set up by whoever runs the server.
    """
    import sqlalchemy as sa
    from sqlalchemy import exc as sa_exc

    from tracker._db import SCHEMA_REVISION

    if db.dialect != "sqlite":
        return False
    with db.engine.connect() as conn:
        if sa.inspect(conn).get_table_names():
            return False
    copied = _copy_schema_template(db)
    if copied is not None:
        return copied
    from tracker._migrate import upgrade  # Alembic: only for a brand-new database

    try:
        upgrade(db, "head")
    except sa_exc.OperationalError:
        # Another process (a second `tracker work` started at the same moment) created it
        # between our look and our migration: fine if it got to head.
        if db.revision() != SCHEMA_REVISION:
            raise
        return False
    return True


def schema_template() -> Path:
    """The prepared SQLite database at head: named by the revision and a hash of the migration
    files, so an edited migration never hands out a stale copy."""
    import hashlib

    import migrations
    from tracker._config import prepared_folder
    from tracker._db import SCHEMA_REVISION

    folder = Path(migrations.__file__).parent
    digest = hashlib.sha256()
    for path in sorted([folder / "env.py", *(folder / "versions").glob("*.py")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return prepared_folder() / f"tracker-{SCHEMA_REVISION}-{digest.hexdigest()[:16]}.db"


def _copy_schema_template(db: Database) -> bool | None:
    """Give an empty SQLite database the schema at head by copying the prepared database into
    it (SQLite's backup API, a few milliseconds) instead of running the migrations (Alembic's
    import and 14 revisions: about a second of a new home's first command). The template is
    made by those same migrations, once per machine and schema. True when copied, False when
    another process set the database up meanwhile, None when the template cannot be used (the
    cache folder is not writable...): the caller then migrates as before.
    """
    import fcntl
    import sqlite3

    from tracker._db import SCHEMA_REVISION

    target = db.engine.url.database
    if not target or target == ":memory:" or target.startswith("file:"):
        return None
    try:
        template = schema_template()
        if not template.exists():
            _make_schema_template(template)
        db.engine.dispose()  # our connections to the empty file: the copy goes through SQLite
        with open(Path(target).with_name(Path(target).name + ".init-lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one new-home set-up at a time
            dest = sqlite3.connect(target, timeout=30)
            try:
                (n,) = dest.execute("SELECT count(*) FROM sqlite_master").fetchone()
                if n:  # another process set it up meanwhile
                    return False
                src = sqlite3.connect(f"file:{template}?mode=ro", uri=True)
                try:
                    src.backup(dest)
                finally:
                    src.close()
            finally:
                dest.close()
    except (OSError, sqlite3.Error):
        return None
    return True if db.revision() == SCHEMA_REVISION else None


def _make_schema_template(template: Path) -> None:
    import os
    import sqlite3
    import threading

    from tracker._db import open_database
    from tracker._migrate import upgrade

    template.parent.mkdir(parents=True, exist_ok=True)
    tmp = template.with_name(f"{template.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.unlink(missing_ok=True)
    made = open_database(f"sqlite:///{tmp}", check=False)
    try:
        upgrade(made, "head")
    finally:
        made.dispose()
    conn = sqlite3.connect(tmp)  # one self-contained file: no WAL beside it
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
    finally:
        conn.close()
    os.replace(tmp, template)  # atomic: another process never copies a half-made one


def add_wait_flags(parser: argparse.ArgumentParser) -> None:
    """``--wait`` and its progress flags, on one enqueue verb's parser."""
    parser.add_argument(
        "--wait", action="store_true",
        help="after enqueueing, wait until the result's tasks are done or failed, with the "
        "progress `tracker work` shows; a worker does the work (keep `tracker work --forever` "
        "running in another terminal). Follow-ups (a surface's figures on MLflow, the study's "
        "measures refresh) are not waited for. Exit 1 if a task failed, 130 on Ctrl-C (the "
        "tasks stay queued)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true",
                        help="with --wait: no progress output (the hint and errors still show)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="with --wait: a plain progress line every 10 s instead of a live bar")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Rows under their headers (None prints as blank).

    On a terminal, a table drawn by rich (the library of the progress bar) to the terminal's
    width, numbers right-aligned; otherwise (a pipe, a file, ``--json``'s capture) plain
    left-aligned text columns, the format scripts and tests read.
    """
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    if _stdout_is_terminal():
        return _rich_table(cells)
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def _stdout_is_terminal() -> bool:
    import sys

    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty())


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def _rich_table(cells: list[list[str]]) -> str:
    """The header row and rows as a rich table, rendered for this terminal (its colours and
    width as rich detects them; cell text is shown as is, never read as markup)."""
    import sys

    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    header, body = cells[0], cells[1:]
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for i, name in enumerate(header):
        column = [row[i] for row in body if row[i]]
        numeric = bool(column) and all(_is_number(c) for c in column)
        grid.add_column(Text(name), justify="right" if numeric else "left", overflow="fold")
    for row in body:
        grid.add_row(*(Text(c) for c in row))
    console = Console(file=sys.stdout)
    # Wider than the terminal: whole cells, the lines running on as the plain ones do
    # (folded into the terminal's width, a wide table became columns of single letters).
    widest = console.measure(grid, options=console.options.update_width(1 << 16)).maximum
    if widest > console.width:
        console = Console(file=sys.stdout, width=widest)
    with console.capture() as captured:
        console.print(grid)
    return captured.get().rstrip("\n")


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


MAX_SEEDS = 10_000


def parse_seeds(text: str) -> tuple[int, ...]:
    """``0-3`` or ``0,2,5`` (or both: ``0-3,8``) as a tuple of distinct seeds."""
    from tracker._exceptions import SpecError

    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                first, last = int(lo), int(hi)
                if len(out) + max(last - first + 1, 0) > MAX_SEEDS:  # before building the list
                    raise SpecError(f"seeds {text!r} name more than {MAX_SEEDS:,} seeds")
                out.extend(range(first, last + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise SpecError(f"seeds {text!r} are not a list like 0-3 or 0,1,2") from None
    if not out:
        raise SpecError(f"seeds {text!r} name no seed: write e.g. 0-3")
    if any(s < 0 or s >= 2**32 for s in out):
        raise SpecError(f"seeds {text!r} include a seed outside 0..2**32-1")
    return tuple(dict.fromkeys(out))


# --- help: defaults shown, an example per command ----------------------------------------------

# What `tracker ls` and `tracker delete` name: the kinds of rows (tracker._manage maps them).
LISTABLE = (
    "studies", "tasks", "models", "checkpoints", "directions", "surfaces", "hessian", "retrains",
    "embeddings", "diagrams", "levelsets", "l2-baselines", "ensembles", "morse", "arrays",
)  # fmt: skip

# The study every verb uses when --study is not given.
DEFAULT_STUDY = "default"

# One example per command, shown under its --help. Keyed by the command's words after `tracker`.
EXAMPLES: dict[str, str] = {}


def example(command: str, *lines: str) -> None:
    """Register the example lines shown at the end of `tracker COMMAND --help`."""
    EXAMPLES[command] = "\n".join(f"  {line}" for line in lines)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that shows every option's default, and keeps the examples' line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "%(default)" in text or "default" in text.lower() or not _shows_default(action):
            return text
        return f"{text} (default: %(default)s)".strip()

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and _shows_default(action):
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)


def _shows_default(action: argparse.Action) -> bool:
    default = action.default
    return bool(action.option_strings) and not (
        default is None or default is False or default is argparse.SUPPRESS
        or default == [] or default == ""
    )  # fmt: skip


class Parser(argparse.ArgumentParser):
    """The `tracker` parser and all its subcommands: shown defaults and examples.

    ``add_subparsers`` makes subparsers of the parser's own class, so every command gets this
    formatter and its registered example without saying so.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def format_help(self) -> str:
        words = " ".join(self.prog.split()[1:])
        text = EXAMPLES.get(words)
        if text and not self.epilog:
            self.epilog = f"example:\n{text}"
        return super().format_help()


def exit_now(code: int) -> NoReturn:
    """Leave the process as the interpreter would, minus its module teardown.

    After a command that imported torch (and torch._dynamo, which every optimizer step
    imports), the interpreter spends ~1 s of a 2-core machine freeing module objects one by
    one once the work is done. Everything with an effect still runs, in the interpreter's
    order: non-daemon threads are joined, exit hooks run (logging, temporary folders,
    multiprocessing and Dask children, weakref finalizers), standard streams are flushed.
    """
    import atexit
    import contextlib
    import os
    import sys
    import threading

    threading._shutdown()  # type: ignore[attr-defined]  # joins non-daemon threads, as exit does
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe (`tracker ... | head`): nothing more to say.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code & 0xFF)
