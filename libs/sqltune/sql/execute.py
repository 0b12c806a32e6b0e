"""Sandboxed execution of untrusted, model-generated SQL on SQLite, DuckDB and PostgreSQL.

Two layers protect the database:

1. :func:`execute` first runs :func:`~sqltune.sql.analyze.analyze`; anything that is not one
   read-only query is refused (category ``not_read_only``) without touching the database.
2. Each engine is opened so that it cannot write or reach outside on its own (see the ``_run_*``
   functions): SQLite read-only URI, then :func:`~sqltune.sql.sqlite_sandbox.run_untrusted_sqlite`
   (limits, ``query_only``, authorizer, progress-handler deadline, row cap); DuckDB ``read_only`` with
   external access disabled and configuration locked + interrupt timer; PostgreSQL ``READ ONLY``
   transaction with ``statement_timeout``/``lock_timeout``, always rolled back (use the role made by
   :func:`sqltune.sql.postgres.ensure_readonly_role` for the DSN).

Failures come back as :class:`ExecResult` with ``error`` and ``category``; execute never raises for
problems of the query. It raises :class:`~sqltune.errors.SQLError` only for caller mistakes (unknown
dialect, a database file that does not exist).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqltune.errors import SQLError
from sqltune.sql._dialects import DUCKDB_CONFIG, canonical_dialect, engine_of
from sqltune.sql.analyze import analyze
from sqltune.sql.compare import transpile
from sqltune.sql.postgres import classify_postgres, run_readonly
from sqltune.sql.result import CATEGORIES, Category, ExecResult, capped_result, error_message
from sqltune.sql.sqlite_sandbox import classify_sqlite, run_untrusted_sqlite

__all__ = [
    "CATEGORIES", "Category", "DUCKDB_CONFIG", "ExecResult", "execute", "precheck_sql", "classify_sqlite",
    "classify_duckdb",
]

def execute(
    sql: str,
    *,
    db: str | os.PathLike[str],
    dialect: str | None = None,
    timeout_s: float = 5.0,
    max_rows: int = 1000,
    precheck: bool = True,
    pool: Any = None,
) -> ExecResult:
    """Run one read-only query against ``db`` under the sandbox; see the module docstring.

    ``db``: a SQLite file (.sqlite/.db), a DuckDB file (.duckdb) or a ``postgresql://`` DSN.
    ``dialect``: the dialect ``sql`` is written in; defaults to the engine's. When it differs from the
    engine's, the query is transpiled with sqlglot before it runs.
    ``max_rows``: at most this many rows are returned; if there were more, ``category`` is
    ``too_many_rows`` and ``truncated`` is True (the rows are still there).
    ``precheck=False`` skips the static analysis (tests use it to prove the engine sandbox alone holds).
    ``pool``: a :class:`~sqltune.sql.isolated.SandboxPool`; SQLite/DuckDB queries then run in its killable
    worker processes, so even one long builtin call ends at the timeout.
    """
    engine = engine_of(db)
    dialect = canonical_dialect(dialect) if dialect is not None else engine
    start = time.monotonic()
    if not isinstance(sql, str) or not sql.strip():
        return ExecResult(error="empty SQL", category="syntax", engine=engine)
    run_sql = sql
    if precheck:
        run_sql, refused = precheck_sql(sql, dialect=dialect, engine=engine)
        if refused is not None:
            return _done(refused, start)
    if pool is not None and engine != "postgres":
        return _done(pool.run(run_sql, db=db, engine=engine, timeout_s=timeout_s, max_rows=max_rows), start)
    return _run_unchecked(run_sql, db=db, engine=engine, timeout_s=timeout_s, max_rows=max_rows)


def precheck_sql(sql: str, *, dialect: str, engine: str) -> tuple[str, ExecResult | None]:
    """The static gate before any engine sees ``sql``: (SQL to run, None) or (sql, the refusal).

    Refused: text that does not parse (``syntax``) and anything but one read-only query
    (``not_read_only``). SQL written in another dialect than the engine's is transpiled.
    """
    analysis = analyze(sql, dialect=dialect)
    if not analysis.parseable:
        return sql, ExecResult(error=analysis.error, category="syntax", engine=engine)
    if not analysis.read_only:
        return sql, ExecResult(error="not a read-only query: " + "; ".join(analysis.reasons),
                               category="not_read_only", engine=engine)
    if dialect != engine:
        try:
            return transpile(sql, dialect, engine), None
        except Exception as exc:  # noqa: BLE001
            return sql, ExecResult(error=f"cannot transpile {dialect} to {engine}: {exc}", category="syntax",
                                   engine=engine)
    return sql, None


def _run_unchecked(sql: str, *, db: Any, engine: str | None = None, timeout_s: float = 5.0,
                   max_rows: int = 1000) -> ExecResult:
    """Run ``sql`` on the engine sandbox only, with no static pre-check."""
    engine = engine or engine_of(db)
    if max_rows < 0:
        raise SQLError(f"max_rows must be >= 0, got {max_rows}")
    if timeout_s <= 0:
        raise SQLError(f"timeout_s must be > 0, got {timeout_s}")
    runner = {"sqlite": _run_sqlite, "duckdb": _run_duckdb, "postgres": _run_postgres}[engine]
    start = time.monotonic()
    try:
        result = runner(sql, db, timeout_s, max_rows)
    except SQLError:
        raise
    except Exception as exc:  # noqa: BLE001 - any driver error is a result, not an exception
        result = ExecResult(error=error_message(exc), category=_classify(engine, exc))
    result.engine = engine
    return _done(result, start)


def _done(result: ExecResult, start: float) -> ExecResult:
    result.elapsed_s = time.monotonic() - start
    return result


def _existing_file(db: Any) -> Path:
    path = Path(db)
    if not path.is_file():
        raise SQLError(f"database file not found: {path}")
    return path.resolve()


# -- SQLite ------------------------------------------------------------------------------------------
def _run_sqlite(sql: str, db: Any, timeout_s: float, max_rows: int) -> ExecResult:
    path = _existing_file(db)
    # mode=ro: the file is opened read-only and never created; no journal is written.
    uri = f"file:{quote(str(path))}?mode=ro"
    if _sqlite_is_wal(path) and not Path(f"{path}-wal").exists():
        # A WAL database opened read-only would create -wal/-shm files next to it. With no -wal file
        # there is no writer and no pending change, so immutable=1 reads it without any locking files.
        uri += "&immutable=1"
    conn = sqlite3.connect(uri, uri=True, timeout=min(timeout_s, 5.0), isolation_level=None,
                           check_same_thread=False)
    try:
        return run_untrusted_sqlite(conn, sql, timeout_s=timeout_s, max_rows=max_rows)
    finally:
        conn.close()


def _sqlite_is_wal(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
    except OSError:
        return False
    return len(head) == 20 and head[18] == 2 and head[19] == 2


# -- DuckDB ------------------------------------------------------------------------------------------
def _run_duckdb(sql: str, db: Any, timeout_s: float, max_rows: int) -> ExecResult:
    import duckdb

    path = _existing_file(db)
    try:
        conn = duckdb.connect(str(path), read_only=True, config=dict(DUCKDB_CONFIG))
    except duckdb.ConnectionException as exc:
        if "different configuration" in str(exc):
            raise SQLError(
                f"{path} is already open in this process with another DuckDB configuration; close that "
                "connection before executing SQL on it (DuckDB allows one configuration per file per process)"
            ) from exc
        raise
    timed_out = threading.Event()

    def _interrupt() -> None:
        timed_out.set()
        conn.interrupt()

    timer = threading.Timer(timeout_s, _interrupt)
    timer.daemon = True
    timer.start()
    try:
        try:
            cur = conn.execute(sql)
            columns = [d[0] for d in cur.description or []]
            rows = cur.fetchmany(max_rows + 1) if cur.description else []
        except Exception as exc:
            if timed_out.is_set():
                return ExecResult(error=f"timed out after {timeout_s:g}s ({error_message(exc)})", category="timeout")
            raise
        return capped_result([tuple(r) for r in rows], columns, max_rows)
    finally:
        # Stop whatever is still running (a streaming result can keep worker threads busy, e.g. an
        # unbounded recursive CTE after the first max_rows+1 rows) before closing; the timer stays
        # armed until the connection is closed.
        try:
            conn.interrupt()
        except Exception:  # noqa: BLE001
            pass
        conn.close()
        timer.cancel()


# -- PostgreSQL --------------------------------------------------------------------------------------
def _run_postgres(sql: str, db: Any, timeout_s: float, max_rows: int) -> ExecResult:
    return run_readonly(sql, str(db), timeout_s=timeout_s, max_rows=max_rows)


# -- error classification ----------------------------------------------------------------------------
def _classify(engine: str, exc: BaseException) -> str:
    if engine == "sqlite":
        return classify_sqlite(exc)
    if engine == "duckdb":
        return classify_duckdb(exc)
    return classify_postgres(exc)


def classify_duckdb(exc: BaseException) -> str:
    import duckdb

    msg = str(exc)
    low = msg.lower()
    if isinstance(exc, duckdb.InterruptException) or "interrupted" in low:
        return "timeout"
    if isinstance(exc, duckdb.ParserException):
        return "syntax"
    if isinstance(exc, duckdb.PermissionException) or "read-only mode" in low or "configuration has been locked" in low:
        return "not_read_only"
    if isinstance(exc, duckdb.CatalogException):
        if "function with name" in low or "macro function" in low:
            return "runtime"
        return "unknown_identifier"
    if isinstance(exc, duckdb.BinderException):
        if "referenced column" in low or "does not have a column named" in low or "referenced table" in low:
            return "unknown_identifier"
        return "runtime"
    return "runtime"
