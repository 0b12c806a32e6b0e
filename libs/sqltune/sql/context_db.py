"""Execution on context-only datasets: an in-memory SQLite database built from an example's CREATE/INSERT text.

sql-create-context and gretel examples carry no database, only the DDL (and, for gretel, INSERT rows) that
the prompt shows. :func:`build_context_db` runs that text on a fresh in-memory SQLite under a sandbox of its
own (an authorizer that admits only table/index/view definitions and row writes, no ATTACH, PRAGMA,
triggers, virtual tables or extension functions; a progress-handler deadline; a cap on value sizes and on
statement count) and keeps the result as a serialized image. Each query then runs on a private copy of
that image under the same guards as :func:`sqltune.sql.execute` on a SQLite file
(:func:`~sqltune.sql.sqlite_sandbox.run_untrusted_sqlite`: read-only authorizer, ``query_only``, deadline,
row cap), so nothing a query does reaches another query.

A statement of the context that SQLite rejects as written is transpiled from the example's dialect with
sqlglot and tried again; one that still fails is skipped and listed in :attr:`ContextDatabase.skipped`.
A context that defines no table at all is an :class:`~sqltune.errors.SQLError`.

Tables that the context creates without rows (sql-create-context has no INSERTs) are empty: every query
that runs returns no rows there, so an execution match on such a database says only "it ran on this
schema"; the hybrid score's ROUGE-L term still separates the answers.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import sqlglot

from sqltune.errors import SQLError
from sqltune.sql._dialects import canonical_dialect
from sqltune.sql.analyze import analyze
from sqltune.sql.compare import transpile
from sqltune.sql.match import MatchResult, execution_match, gold_is_ordered, results_equal
from sqltune.sql.result import ExecResult, error_message
from sqltune.sql.schema import split_statements
from sqltune.sql.sqlite_sandbox import (
    SQLITE_DENIED_FUNCTIONS,
    classify_sqlite,
    limit_sqlite,
    run_untrusted_sqlite,
    set_sqlite_deadline,
)

MAX_CONTEXT_STATEMENTS = 2000
MAX_CONTEXT_BYTES = 2_000_000
_CACHE_SIZE = 512

_BUILD_ALLOWED = {
    sqlite3.SQLITE_CREATE_TABLE,
    sqlite3.SQLITE_CREATE_INDEX,
    sqlite3.SQLITE_CREATE_VIEW,
    sqlite3.SQLITE_INSERT,
    sqlite3.SQLITE_UPDATE,
    sqlite3.SQLITE_DELETE,
    sqlite3.SQLITE_DROP_TABLE,
    sqlite3.SQLITE_DROP_INDEX,
    sqlite3.SQLITE_DROP_VIEW,
    sqlite3.SQLITE_ALTER_TABLE,
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_TRANSACTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}


def _build_authorizer(action: int, arg1: str | None, arg2: str | None, dbname: str | None,
                      source: str | None) -> int:
    if action not in _BUILD_ALLOWED:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in SQLITE_DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    if dbname not in (None, "main", "temp"):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


@dataclass(frozen=True)
class ContextDatabase:
    """A built context database: its serialized SQLite image and what went into it."""

    image: bytes
    tables: tuple[str, ...]
    statements: int
    skipped: tuple[str, ...] = ()
    """``"statement N: error"`` for every context statement that could not be applied."""


def has_context(text: str | None) -> bool:
    """Whether ``text`` looks like DDL that :func:`build_context_db` can turn into a database."""
    return bool(text) and "create table" in " ".join(text.lower().split())


def _limited_connection(timeout_s: float) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    limit_sqlite(conn)
    set_sqlite_deadline(conn, timeout_s)
    return conn


def _apply(conn: sqlite3.Connection, stmt: str, dialect: str) -> str | None:
    """Run one context statement; on failure try its sqlglot transpilation to SQLite. Error text or None."""
    try:
        conn.execute(stmt)
        return None
    except sqlite3.Error as exc:
        first = error_message(exc)
    except sqlite3.Warning as exc:  # more than one statement in a piece the splitter could not separate
        return error_message(exc)
    if "interrupted" in first.lower():
        return first
    try:
        rewritten = sqlglot.transpile(stmt, read=None if dialect == "sqlite" else dialect, write="sqlite")
    except Exception:  # noqa: BLE001 - sqlglot cannot read it either: keep SQLite's message
        return first
    if len(rewritten) != 1 or rewritten[0].strip() == stmt.strip():
        return first
    try:
        conn.execute(rewritten[0])
        return None
    except (sqlite3.Error, sqlite3.Warning):
        return first


def _build(context: str, dialect: str, timeout_s: float) -> ContextDatabase:
    if len(context.encode("utf-8", "replace")) > MAX_CONTEXT_BYTES:
        raise SQLError(f"the context is {len(context)} characters; the limit is {MAX_CONTEXT_BYTES} bytes")
    statements = split_statements(context)
    if len(statements) > MAX_CONTEXT_STATEMENTS:
        raise SQLError(f"the context has {len(statements)} statements; the limit is {MAX_CONTEXT_STATEMENTS}")
    conn = _limited_connection(timeout_s)
    skipped: list[str] = []
    try:
        conn.set_authorizer(_build_authorizer)
        for i, stmt in enumerate(statements, start=1):
            err = _apply(conn, stmt, dialect)
            if err is not None:
                skipped.append(f"statement {i}: {err}")
                if "interrupted" in err.lower():
                    raise SQLError(f"building the context database timed out after {timeout_s:g}s at statement {i}")
        conn.set_authorizer(None)
        tables = tuple(r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name"))
        if not tables:
            why = f" ({skipped[0]})" if skipped else ""
            raise SQLError(f"the context defines no table that SQLite accepts{why}")
        image = conn.serialize()
    finally:
        conn.close()
    return ContextDatabase(image=image, tables=tables, statements=len(statements), skipped=tuple(skipped))


_cache: OrderedDict[tuple[str, str], ContextDatabase | SQLError] = OrderedDict()
_cache_lock = threading.Lock()


def build_context_db(context: str, *, dialect: str = "sqlite", timeout_s: float = 5.0) -> ContextDatabase:
    """The in-memory database of ``context`` (cached per context and dialect); raises SQLError when none can
    be built (no table, too large, the build timed out)."""
    dialect = canonical_dialect(dialect)
    key = (context, dialect)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
    if hit is None:
        try:
            hit = _build(context, dialect, timeout_s)
        except SQLError as exc:
            hit = exc
        with _cache_lock:
            _cache[key] = hit
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    if isinstance(hit, SQLError):
        raise SQLError(str(hit))
    return hit


def _run_on_image(sql: str, image: bytes, timeout_s: float, max_rows: int) -> ExecResult:
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    try:
        conn.deserialize(image)
        return run_untrusted_sqlite(conn, sql, timeout_s=timeout_s, max_rows=max_rows)
    finally:
        conn.close()


def execute_in_context(
    sql: str,
    *,
    context: str,
    dialect: str | None = None,
    timeout_s: float = 5.0,
    max_rows: int = 1000,
    precheck: bool = True,
) -> ExecResult:
    """:func:`sqltune.sql.execute` on the database built from ``context`` (SQLite, in memory).

    Never raises for problems of the query or of the context: a context that yields no database comes back
    as an ExecResult with category ``runtime`` and the reason."""
    dialect = canonical_dialect(dialect) if dialect is not None else "sqlite"
    start = time.monotonic()

    def done(res: ExecResult) -> ExecResult:
        res.engine = "sqlite-context"
        res.elapsed_s = time.monotonic() - start
        return res

    if timeout_s <= 0 or max_rows < 0:
        raise SQLError(f"timeout_s must be > 0 and max_rows >= 0, got {timeout_s}, {max_rows}")
    if not isinstance(sql, str) or not sql.strip():
        return done(ExecResult(error="empty SQL", category="syntax"))
    run_sql = sql
    if precheck:
        analysis = analyze(sql, dialect=dialect)
        if not analysis.parseable:
            return done(ExecResult(error=analysis.error, category="syntax"))
        if not analysis.read_only:
            return done(ExecResult(error="not a read-only query: " + "; ".join(analysis.reasons),
                                   category="not_read_only"))
        if dialect != "sqlite":
            try:
                run_sql = transpile(sql, dialect, "sqlite")
            except Exception as exc:  # noqa: BLE001
                return done(ExecResult(error=f"cannot transpile {dialect} to sqlite: {exc}", category="syntax"))
    try:
        db = build_context_db(context, dialect=dialect, timeout_s=timeout_s)
    except SQLError as exc:
        return done(ExecResult(error=f"no context database: {exc}", category="runtime"))
    try:
        res = _run_on_image(run_sql, db.image, timeout_s, max_rows)
    except Exception as exc:  # noqa: BLE001 - any driver error is a result
        res = ExecResult(error=error_message(exc), category=classify_sqlite(exc))
    return done(res)


def context_execution_match(
    pred_sql: str,
    gold_sql: str,
    *,
    context: str,
    dialect: str | None = None,
    timeout_s: float = 5.0,
    float_tol: float = 1e-6,
    max_rows: int = 1000,
    gold_result: ExecResult | None = None,
) -> MatchResult:
    """:func:`sqltune.sql.execution_match` with both queries run on the context's database."""
    dialect = canonical_dialect(dialect) if dialect is not None else "sqlite"
    gold = gold_result if gold_result is not None else execute_in_context(
        gold_sql, context=context, dialect=dialect, timeout_s=timeout_s, max_rows=max_rows)
    ordered = gold_is_ordered(gold_sql, dialect)
    pred = execute_in_context(pred_sql, context=context, dialect=dialect, timeout_s=timeout_s, max_rows=max_rows)
    if not gold.ok:
        return MatchResult(False, "gold_failed", True, pred, gold, ordered,
                           reason=f"gold query failed ({gold.category}): {gold.error}")
    if not pred.ok:
        return MatchResult(False, pred.category, False, pred, gold, ordered,
                           reason=f"predicted query failed ({pred.category}): {pred.error}")
    same, why = results_equal(pred.rows, gold.rows, ordered=ordered, float_tol=float_tol)
    return MatchResult(same, None if same else "mismatch", False, pred, gold, ordered, reason=why)


def match_anywhere(
    pred_sql: str,
    gold_sql: str,
    *,
    db: str | None,
    context: str | None,
    dialect: str | None = None,
    timeout_s: float = 5.0,
    float_tol: float = 1e-6,
    max_rows: int = 1000,
    gold_result: Any = None,
) -> MatchResult | None:
    """Execution match on ``db`` when there is one, else on the database of ``context`` when it has DDL;
    None when neither exists (the caller falls back to structural comparison)."""
    if db:
        return execution_match(pred_sql, gold_sql, db=db, dialect=dialect, timeout_s=timeout_s,
                               float_tol=float_tol, max_rows=max_rows, gold_result=gold_result)
    if has_context(context):
        return context_execution_match(pred_sql, gold_sql, context=context or "", dialect=dialect,
                                       timeout_s=timeout_s, float_tol=float_tol, max_rows=max_rows,
                                       gold_result=gold_result)
    return None


__all__ = [
    "ContextDatabase",
    "build_context_db",
    "context_execution_match",
    "execute_in_context",
    "has_context",
    "match_anywhere",
]
