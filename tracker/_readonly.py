"""Reading the tracker's tables with SQL a user typed: two independent layers of defence.

1. A statement allow-list. PostgreSQL statements are parsed with the server's own grammar
   (pglast, libpg_query): exactly one SELECT / WITH / VALUES, or an EXPLAIN of one without
   ANALYZE; no data-modifying CTE, SELECT INTO, FOR UPDATE/SHARE, or function that reaches
   outside the tables (files, programs, signals, advisory locks, settings, sequences, queries
   passed as text). SQLite statements must begin with one of those keywords, and SQLite's own
   parser then asks an authorizer about every action while compiling: only reads of tables and
   ordinary functions are allowed (no PRAGMA, ATTACH, transaction control or writes).
2. A least-privilege connection. On PostgreSQL the SQL runs only as a role that is not a
   superuser, has no write privilege on the tracker's tables and is not a member of the
   file/program/signal roles (``tracker db create-reader`` makes one); SQLite files are opened
   ``mode=ro`` with ``query_only``.

On both backends a statement is cut after ``STATEMENT_SECONDS``, results are capped at
``MAX_ROWS`` rows and ``MAX_RESULT_BYTES`` of text, the transaction is rolled back, and the
connection that ran the user's SQL is closed rather than returned to the pool, so no session
state (a lock, a setting) survives it.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tracker._exceptions import ConfigError, QueryRejected, TrackerError

STATEMENT_SECONDS = 10
MAX_ROWS = 10_000
MAX_RESULT_BYTES = 8_000_000
DEFAULT_READER = "tracker_reader"
READER_PASSWORD_ENV = "TRACKER_READER_PASSWORD"
DEFAULT_WORKER = "tracker_worker"
WORKER_PASSWORD_ENV = "TRACKER_WORKER_PASSWORD"

_FIRST_WORDS = ("select", "with", "values", "explain")

# Function names refused anywhere in a PostgreSQL statement (the last part of a qualified
# name, lower case). Names starting with these prefixes are refused too, except pg_typeof.
_DENIED_PREFIXES = ("pg_", "lo_", "dblink", "binary_upgrade_", "brin_", "gin_")
_ALLOWED_PG = frozenset({"pg_typeof"})
_DENIED_FUNCTIONS = frozenset({
    "set_config", "nextval", "setval", "currval", "lastval",
    "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema",
    "cursor_to_xml", "cursor_to_xmlschema", "table_to_xml", "table_to_xmlschema",
    "table_to_xml_and_xmlschema", "schema_to_xml", "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema", "database_to_xml", "database_to_xmlschema",
    "database_to_xml_and_xmlschema", "ts_stat", "ts_rewrite", "txid_current",
})  # fmt: skip
# SQLite functions refused by the authorizer (most exist only in the sqlite3 shell, but a
# build may link them in).
_SQLITE_DENIED_FUNCTIONS = frozenset(
    {"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit", "sqlar_compress",
     "sqlar_uncompress", "zipfile"}
)  # fmt: skip

# Roles whose members can read or write server files, run programs or signal backends.
_DANGEROUS_ROLES = (
    "pg_execute_server_program", "pg_read_server_files", "pg_write_server_files",
    "pg_signal_backend",
)  # fmt: skip
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_WRITE_PRIVILEGES = "INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER"


@dataclass(frozen=True)
class QueryResult:
    """What a user's query returned, and why it may be shorter than the full answer."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    note: str | None = None


# --- layer 1: the statement allow-list ------------------------------------------------------


def _strip_leading_comments(sql: str) -> str:
    text = sql.lstrip()
    while True:
        if text.startswith("--"):
            end = text.find("\n")
            text = "" if end < 0 else text[end + 1 :].lstrip()
        elif text.startswith("/*"):
            end = text.find("*/")
            text = "" if end < 0 else text[end + 2 :].lstrip()
        else:
            return text


def _refuse(why: str) -> QueryRejected:
    return QueryRejected(
        f"refused: {why}; the SQL box runs one read-only query (SELECT, WITH, VALUES or EXPLAIN)"
    )


def _pg_nodes(node: Any) -> Iterator[Any]:
    from pglast import ast

    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, ast.Node):
            yield item
            slots: Any = getattr(type(item), "__slots__", ())  # pglast nodes' children
            stack.extend(getattr(item, name, None) for name in slots)


def _function_name(call: Any) -> str:
    parts = [getattr(p, "sval", "") for p in (call.funcname or ())]
    return (parts[-1] if parts else "").lower()


def _pg_function_denied(name: str) -> bool:
    if name in _ALLOWED_PG:
        return False
    return name in _DENIED_FUNCTIONS or name.startswith(_DENIED_PREFIXES)


def check_postgresql(sql: str) -> None:
    """Raise QueryRejected unless ``sql`` is one read-only query in PostgreSQL's grammar."""
    from pglast import ast, parse_sql
    from pglast.parser import ParseError

    try:
        statements = parse_sql(sql)
    except ParseError as err:
        raise QueryRejected(f"the query does not parse: {str(err).splitlines()[0]}") from None
    if len(statements) != 1:
        raise _refuse(f"{len(statements)} statements given")
    top = statements[0].stmt
    if isinstance(top, ast.ExplainStmt):
        for option in top.options or ():
            if str(option.defname).lower() == "analyze":
                raise _refuse("EXPLAIN ANALYZE runs the statement")
        top = top.query
    if not isinstance(top, ast.SelectStmt):
        raise _refuse(f"{type(top).__name__.removesuffix('Stmt').upper()} is not a query")
    for node in _pg_nodes(top):
        if isinstance(node, ast.SelectStmt):
            if node.intoClause is not None:
                raise _refuse("SELECT INTO creates a table")
            if node.lockingClause:
                raise _refuse("FOR UPDATE/SHARE takes row locks")
        elif type(node).__name__.endswith("Stmt"):
            raise _refuse(f"a {type(node).__name__.removesuffix('Stmt').upper()} inside the query")
        elif isinstance(node, ast.FuncCall) and _pg_function_denied(_function_name(node)):
            raise _refuse(f"function {_function_name(node)}() is not allowed in the SQL box")


def check_statement(sql: str, dialect: str) -> str:
    """The statement to run (trailing semicolons removed), or QueryRejected."""
    text = sql.strip().rstrip(";").strip()
    if not _strip_leading_comments(text):
        raise QueryRejected("the SQL box is empty: write one SELECT statement")
    first = re.match(r"[A-Za-z]+", _strip_leading_comments(text))
    if first is None or first.group(0).lower() not in _FIRST_WORDS:
        word = first.group(0).upper() if first else text.split()[0][:20]
        raise _refuse(f"{word} is not a query, and the dashboard is read-only")
    if dialect == "postgresql":
        check_postgresql(text)
    return text


# --- layer 2: the connection ----------------------------------------------------------------


def _sqlite_query_authorizer(action: int, arg1: Any, arg2: Any, *_rest: Any) -> int:
    import sqlite3

    if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION:
        name = str(arg2 or "").lower()
        return sqlite3.SQLITE_DENY if name in _SQLITE_DENIED_FUNCTIONS else sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def role_problem(conn: sa.Connection) -> str | None:
    """Why the connected PostgreSQL role may not run users' SQL, or None for a reader."""
    from tracker._schema import Base

    row = conn.execute(
        sa.text(
            "SELECT current_user, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls "
            "FROM pg_roles WHERE rolname = current_user"
        )
    ).one()
    user = row[0]
    fix = (
        "create a read-only role with `tracker db create-reader` and start the dashboard with "
        f"--db postgresql+psycopg://{DEFAULT_READER}@HOST/DB"
    )
    if row[1]:
        return f"the dashboard connects as {user!r}, a superuser: {fix}"
    powers = [name for name, held in zip(("CREATEROLE", "CREATEDB", "BYPASSRLS"), row[2:],
                                         strict=True) if held]  # fmt: skip
    for role in _DANGEROUS_ROLES:
        if conn.execute(
            sa.text("SELECT pg_has_role(current_user, :r, 'USAGE')"), {"r": role}
        ).scalar():
            powers.append(role)
    tables = [t for t in (*Base.metadata.tables, "alembic_version")]
    writable = (
        conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relname = ANY(:names) "
                f"AND has_table_privilege(current_user, c.oid, '{_WRITE_PRIVILEGES}') "
                "ORDER BY c.relname LIMIT 3"
            ),
            {"names": tables},
        )
        .scalars()
        .all()
    )
    if writable:
        powers.append(f"write access to {', '.join(writable)}")
    if powers:
        return f"the dashboard connects as {user!r}, which has {'; '.join(powers)}: {fix}"
    return None


def run_query(engine: sa.Engine, sql: str) -> QueryResult:
    """Run one user-written query through both layers; QueryRejected with one line if refused."""
    dialect = engine.dialect.name
    text = check_statement(sql, dialect)
    raw = engine.raw_connection()
    deadline = time.monotonic() + STATEMENT_SECONDS
    try:
        driver: Any = raw.driver_connection  # sqlite3.Connection or psycopg.Connection
        cur: Any = raw.cursor()
        if dialect == "postgresql":
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute(f"SET LOCAL statement_timeout = {STATEMENT_SECONDS * 1000}")
            with engine.connect() as check:
                problem = role_problem(check)
            if problem is not None:
                raise QueryRejected(f"the SQL box is off: {problem}")
            cur.execute(text, prepare=True)
        else:
            driver.set_authorizer(_sqlite_query_authorizer)
            driver.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
            cur.execute(text)
        if cur.description is None:
            raise QueryRejected(
                "the statement returned no rows: the SQL box only runs queries (SELECT, WITH ...)"
            )
        columns = [d[0] for d in cur.description]
        rows, note = _fetch_capped(cur)
    except QueryRejected:
        raise
    except TrackerError:
        raise
    except Exception as err:
        raise _explain(err) from None
    finally:
        # The connection that ran a user's statement is never reused.
        with contextlib.suppress(Exception):
            raw.rollback()
        raw.invalidate()
    return QueryResult(columns, rows, note)


def _fetch_capped(cur: Any) -> tuple[list[tuple[Any, ...]], str | None]:
    rows: list[tuple[Any, ...]] = []
    size = 0
    while True:
        batch = cur.fetchmany(500)
        if not batch:
            return rows, None
        for row in batch:
            if len(rows) >= MAX_ROWS:
                return rows, f"showing the first {MAX_ROWS:,} rows: add a LIMIT or a WHERE"
            size += sum(len(str(v)) for v in row)
            if size > MAX_RESULT_BYTES:
                return rows, (
                    f"showing the first {len(rows):,} rows ({MAX_RESULT_BYTES // 1_000_000} MB "
                    "of text): select fewer or smaller columns"
                )
            rows.append(tuple(row))


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _explain(err: BaseException) -> QueryRejected:
    first = _first_line(err)
    low = first.lower()
    if getattr(err, "sqlstate", None) == "57014" or "interrupted" in low:
        return QueryRejected(
            f"the query ran longer than {STATEMENT_SECONDS} s and was stopped: narrow it "
            "(a WHERE, a LIMIT, fewer joins)"
        )
    if (
        getattr(err, "sqlstate", None) in ("25006", "42501")
        or "readonly" in low
        or "read-only" in low
        or "not authorized" in low
        or "permission denied" in low
    ):
        return QueryRejected(
            "refused: the dashboard is read-only, so INSERT, UPDATE, DELETE, DROP and other "
            f"changes cannot run here (the database said: {first})"
        )
    return QueryRejected(f"the query failed: {first}")


# --- the reader role ------------------------------------------------------------------------


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def create_reader(engine: sa.Engine, role: str, password: str | None) -> str:
    """Make (or bring back to read-only) the PostgreSQL role the dashboard connects as.

    The role can log in, holds SELECT on the tracker's tables (those of later migrations too,
    through default privileges of the connected owner) and nothing else: no superuser, no
    CREATEROLE/CREATEDB, no membership in the file/program/signal roles. Its sessions default
    to read-only transactions with the SQL box's statement timeout. Returns the URL to use.
    """

    def grant(conn: sa.Connection, role_sql: str, schema_sql: str, present: list[str]) -> None:
        names = ", ".join(_ident(t) for t in present)
        conn.exec_driver_sql(f"GRANT SELECT ON {names} TO {role_sql}")
        conn.exec_driver_sql(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema_sql} GRANT SELECT ON TABLES TO {role_sql}"
        )
        conn.exec_driver_sql(f"ALTER ROLE {role_sql} SET default_transaction_read_only = on")
        conn.exec_driver_sql(f"ALTER ROLE {role_sql} SET statement_timeout = '{STATEMENT_SECONDS}s'")

    return _make_role(
        engine, role, password, "create-reader", "the dashboard opens a SQLite file read-only "
        "by itself, so SQLite needs no reader role", READER_PASSWORD_ENV, grant,
    )  # fmt: skip


def create_worker(engine: sa.Engine, role: str, password: str | None) -> str:
    """Make (or reset) the PostgreSQL role that workers and `tracker enqueue` connect as.

    Least privilege for a worker: it reads and writes the rows of the tracker's tables
    (SELECT, INSERT, UPDATE, DELETE; sequences for new ids; tables of later migrations too,
    through the owner's default privileges), reads the schema revision, and can do nothing
    else: no DDL (migrations stay with the owner), no TRUNCATE, no superuser, no roles or
    databases, no server files, programs or signals. Returns the URL to use.
    """
    from tracker._views import VIEW_DOCS

    def grant(conn: sa.Connection, role_sql: str, schema_sql: str, present: list[str]) -> None:
        read_only = {"alembic_version", *VIEW_DOCS}
        rows = [t for t in present if t not in read_only]
        conn.exec_driver_sql(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(_ident(t) for t in rows)} "
            f"TO {role_sql}"
        )
        seen = [t for t in present if t in read_only]
        conn.exec_driver_sql(f"GRANT SELECT ON {', '.join(_ident(t) for t in seen)} TO {role_sql}")
        conn.exec_driver_sql(
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema_sql} TO {role_sql}"
        )
        conn.exec_driver_sql(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema_sql} "
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role_sql}"
        )
        conn.exec_driver_sql(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema_sql} "
            f"GRANT USAGE, SELECT ON SEQUENCES TO {role_sql}"
        )
        # A role that was a reader before: its sessions must be able to write.
        conn.exec_driver_sql(f"ALTER ROLE {role_sql} RESET default_transaction_read_only")
        conn.exec_driver_sql(f"ALTER ROLE {role_sql} RESET statement_timeout")

    return _make_role(
        engine, role, password, "create-worker", "a SQLite file has no roles: workers on one "
        "machine open it as its owner", WORKER_PASSWORD_ENV, grant,
    )  # fmt: skip


def _make_role(
    engine: sa.Engine,
    role: str,
    password: str | None,
    command: str,
    sqlite_reason: str,
    password_env: str,
    grant: Any,
) -> str:
    """Create or reset a LOGIN role with no attributes, no dangerous memberships and no
    privilege on the tracker's tables, then let ``grant`` give it what its job needs."""
    from tracker._db import redact
    from tracker._schema import Base
    from tracker._views import VIEW_DOCS

    if engine.dialect.name != "postgresql":
        raise ConfigError(f"`tracker db {command}` is for PostgreSQL: {sqlite_reason}")
    if password is not None and ("\x00" in password or not password):
        raise ConfigError(f"${password_env} must be a non-empty password without NUL")
    if not _ROLE_NAME.match(role):
        raise ConfigError(
            f"--role {role!r} is not a plain role name: use lower-case letters, digits and _"
        )
    # The documented views (v_models, v_surfaces, v_measures) are read like tables.
    tables = [*Base.metadata.tables, "alembic_version", *VIEW_DOCS]
    with engine.begin() as conn:
        me = conn.execute(
            sa.text(
                "SELECT current_user, rolsuper, rolcreaterole FROM pg_roles "
                "WHERE rolname = current_user"
            )
        ).one()
        if not (me[1] or me[2]):
            raise ConfigError(
                f"the connected role {me[0]!r} cannot create roles: run `tracker db {command}` "
                "as the tracker database's owner with CREATEROLE, or as a superuser"
            )
        if me[0] == role:
            raise ConfigError(f"--role {role!r} is the role this command connects as: pick another")
        present = set(conn.execute(
            sa.text("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = current_schema() AND c.relname = ANY(:t)"), {"t": tables}
        ).scalars())  # fmt: skip
        if "alembic_version" not in present:
            raise ConfigError("the database has no tracker schema: run `tracker db upgrade` first")
        exists = conn.execute(
            sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}
        ).first()
        attrs = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT"
        verb = "ALTER" if exists else "CREATE"
        role_sql = _ident(role)
        conn.exec_driver_sql(f"{verb} ROLE {role_sql} WITH {attrs}")
        if password is not None:
            # ALTER ROLE takes no bind parameters: a SQL string literal (standard strings).
            quoted = "'" + password.replace("'", "''") + "'"
            conn.exec_driver_sql(f"ALTER ROLE {role_sql} PASSWORD {quoted}")
        for member_of in _DANGEROUS_ROLES:
            conn.exec_driver_sql(f"REVOKE {member_of} FROM {role_sql}")
        db = conn.execute(sa.text("SELECT current_database()")).scalar_one()
        schema_sql = _ident(conn.execute(sa.text("SELECT current_schema()")).scalar_one())
        conn.exec_driver_sql(f"GRANT CONNECT ON DATABASE {_ident(db)} TO {role_sql}")
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {schema_sql} TO {role_sql}")
        conn.exec_driver_sql(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema_sql} FROM {role_sql}")
        conn.exec_driver_sql(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema_sql} FROM {role_sql}")
        for objects in ("TABLES", "SEQUENCES"):  # what an earlier kind of this role was given
            conn.exec_driver_sql(
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema_sql} REVOKE ALL ON {objects} "
                f"FROM {role_sql}"
            )
        grant(conn, role_sql, schema_sql, sorted(present))
    url = engine.url.set(username=role, password=password)
    return redact(url.render_as_string(hide_password=False))
