"""The SQLite side of the sandbox, shared by :func:`sqltune.sql.execute` (a database file) and
:mod:`sqltune.sql.context_db` (an in-memory database built from a context): the connection limits, the
deadline, the read-only authorizer, the guarded run of one untrusted query, and how SQLite's errors map to
categories."""

from __future__ import annotations

import sqlite3
import time

from sqltune.sql.result import Category, ExecResult, capped_result

__all__ = [
    "SQLITE_ALLOWED_ACTIONS",
    "SQLITE_DENIED_FUNCTIONS",
    "SQLITE_MAX_LENGTH",
    "classify_sqlite",
    "limit_sqlite",
    "run_untrusted_sqlite",
    "set_sqlite_deadline",
    "sqlite_authorizer",
]

SQLITE_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}
SQLITE_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}
SQLITE_MAX_LENGTH = 50_000_000  # bytes in one string/blob value (zeroblob(1e9) and friends)


def sqlite_authorizer(
    action: int, arg1: str | None, arg2: str | None, dbname: str | None, source: str | None
) -> int:
    """Admit reads, plain functions and recursive CTEs on the main/temp databases; deny everything else."""
    if action not in SQLITE_ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in SQLITE_DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_READ and dbname not in (None, "main", "temp"):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def limit_sqlite(conn: sqlite3.Connection) -> None:
    """The limits of every connection that runs untrusted SQL: no extension loading, no value over
    :data:`SQLITE_MAX_LENGTH` bytes, no ATTACH, temporary tables and sorts in memory (never on disk)."""
    if hasattr(conn, "enable_load_extension"):
        conn.enable_load_extension(False)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, SQLITE_MAX_LENGTH)
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.execute("PRAGMA temp_store = MEMORY")


def set_sqlite_deadline(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Interrupt what ``conn`` runs once ``timeout_s`` seconds from now have passed (SQLite then raises
    "interrupted", category ``timeout``)."""
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 1000)


def run_untrusted_sqlite(conn: sqlite3.Connection, sql: str, *, timeout_s: float, max_rows: int) -> ExecResult:
    """Run one untrusted query on the open ``conn`` under every SQLite guard: :func:`limit_sqlite`,
    ``query_only``, :func:`sqlite_authorizer`, :func:`set_sqlite_deadline` and a cap of ``max_rows`` rows
    (:func:`~sqltune.sql.result.capped_result`). Driver errors propagate (:func:`classify_sqlite` them)."""
    limit_sqlite(conn)
    conn.execute("PRAGMA query_only = ON")
    conn.set_authorizer(sqlite_authorizer)
    set_sqlite_deadline(conn, timeout_s)
    cur = conn.execute(sql)
    columns = [d[0] for d in cur.description or []]
    rows = cur.fetchmany(max_rows + 1) if cur.description else []
    return capped_result([tuple(r) for r in rows], columns, max_rows)


def classify_sqlite(exc: BaseException) -> Category:
    msg = str(exc).lower()
    if "interrupted" in msg:
        return "timeout"
    if "no such table" in msg or "no such column" in msg:
        return "unknown_identifier"
    if "syntax error" in msg or "incomplete input" in msg or "unrecognized token" in msg:
        return "syntax"
    if (
        "not authorized" in msg
        or "authorization denied" in msg
        or "readonly database" in msg
        or "read-only" in msg
        or "prohibited" in msg
        or "one statement at a time" in msg
        or "query_only" in msg
    ):
        return "not_read_only"
    if isinstance(exc, sqlite3.Warning):  # e.g. "You can only execute one statement at a time."
        return "not_read_only"
    return "runtime"
