"""The SQLite side of the sandbox, shared by :func:`sqltune.sql.execute` and :mod:`sqltune.sql.context_db`:
the read-only authorizer, the size limit of one value, and how SQLite's errors map to categories."""

from __future__ import annotations

import sqlite3

from sqltune.sql.result import Category

__all__ = [
    "SQLITE_ALLOWED_ACTIONS",
    "SQLITE_DENIED_FUNCTIONS",
    "SQLITE_MAX_LENGTH",
    "classify_sqlite",
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
