"""The engine's own compile step, without running the query: SQLite/DuckDB ``EXPLAIN``, PostgreSQL ``PREPARE``.

:func:`compile_check` catches what static analysis cannot be sure of (an unknown column the engine's
binder rejects, a type error, a function the engine lacks) at the cost of a plan, not of a query. It goes
through the same sandbox as :func:`~sqltune.sql.execute.execute`: the static read-only check first, then
the engine opened read-only (SQLite authorizer, DuckDB without external access, a PostgreSQL ``READ ONLY``
transaction that is always rolled back). ``EXPLAIN`` (never ``EXPLAIN ANALYZE``) plans the query and
``PREPARE`` parses, binds and rewrites it; neither reads a row.

:func:`scratch_database` builds an empty SQLite/DuckDB file from CREATE TABLE text, so SQL written for a
pasted schema can be compiled (and executed, returning no rows) without the real database.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from sqltune.errors import SQLError
from sqltune.sql._dialects import canonical_dialect, engine_of
from sqltune.sql.execute import ExecResult, _done, _run_unchecked, precheck_sql

__all__ = ["compile_check", "scratch_database"]


def compile_check(
    sql: str, *, db: str | os.PathLike[str], dialect: str | None = None, timeout_s: float = 5.0, pool: Any = None
) -> ExecResult:
    """Compile ``sql`` on ``db``'s engine without executing it; ``ok`` when the engine accepts it.

    Failures come back as an :class:`ExecResult` with ``error`` and ``category`` (``syntax``,
    ``unknown_identifier``, ``not_read_only``, ``runtime``, ``timeout``), like :func:`execute`; rows are
    never returned. Raises :class:`~sqltune.errors.SQLError` only for caller mistakes (a database file
    that does not exist, an unknown dialect, PostgreSQL unreachable). ``pool``: a
    :class:`~sqltune.sql.isolated.SandboxPool` to compile SQLite/DuckDB in (DuckDB's planner folds constants,
    so a long builtin call can run even inside ``EXPLAIN``).
    """
    start = time.monotonic()
    engine = engine_of(db)
    dialect = canonical_dialect(dialect) if dialect is not None else engine
    if not isinstance(sql, str) or not sql.strip():
        return ExecResult(error="empty SQL", category="syntax", engine=engine)
    # The static gate of execute() first: a refused or unparseable query never reaches the engine.
    run_sql, refused = precheck_sql(sql, dialect=dialect, engine=engine)
    if refused is not None:
        return _done(refused, start)
    if engine == "postgres":
        from sqltune.sql import postgres as pg

        result = pg.prepare_readonly(run_sql, str(db), timeout_s=timeout_s)
    elif pool is not None:
        result = pool.run("EXPLAIN " + run_sql, db=db, engine=engine, timeout_s=timeout_s, max_rows=0)
    else:
        # EXPLAIN output (bytecode or plan rows) is not wanted: max_rows=0 fetches one row at most.
        result = _run_unchecked("EXPLAIN " + run_sql, db=db, engine=engine, timeout_s=timeout_s, max_rows=0)
    if result.category == "too_many_rows":
        result = ExecResult(engine=engine)
    result.rows, result.columns, result.truncated = [], [], False
    result.engine = engine
    return _done(result, start)


def scratch_database(ddl: str, *, dialect: str = "sqlite", directory: str | os.PathLike[str] | None = None) -> Path:
    """An empty database file with the tables of ``ddl`` (only its CREATE TABLE statements are used).

    The DDL is re-rendered from the parsed :class:`~sqltune.sql.schema.Schema` (names and types only), so
    nothing but ``CREATE TABLE`` ever runs. ``dialect`` postgres gives a DuckDB file (the closest engine
    that runs in-process). Raises SQLError when the text holds no table.
    """
    from sqltune.sql.schema import Schema

    dialect = canonical_dialect(dialect)
    engine = "sqlite" if dialect == "sqlite" else "duckdb"
    schema = Schema.from_ddl(ddl, dialect)
    if not len(schema):
        raise SQLError("the schema text has no CREATE TABLE statement sqlglot can parse; paste CREATE TABLE DDL")
    folder = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="sqltune-scratch-"))
    path = folder / ("scratch.sqlite" if engine == "sqlite" else "scratch.duckdb")
    if path.exists():
        path.unlink()
    statements = [_create_table(t, cols, engine) for t, cols in schema.tables.items()]
    if engine == "sqlite":
        conn = sqlite3.connect(path)
        try:
            for stmt in statements:
                _try(conn.execute, stmt)
            conn.commit()
        finally:
            conn.close()
    else:
        import duckdb

        conn = duckdb.connect(str(path))
        try:
            for stmt in statements:
                _try(conn.execute, stmt)
        finally:
            conn.close()
    return path


def _create_table(table: str, columns: dict[str, str], engine: str) -> str:
    from sqlglot import exp

    def ident(name: str) -> str:
        return exp.to_identifier(name, quoted=True).sql(dialect=engine)

    cols = ", ".join(f"{ident(c)} {_type_for(t, engine)}".rstrip() for c, t in columns.items()) or '"_" INTEGER'
    return f"CREATE TABLE {ident(table)} ({cols})"


def _type_for(raw: str, engine: str) -> str:
    """A type the engine accepts: SQLite takes anything; DuckDB gets a known family (TEXT when unsure)."""
    if engine == "sqlite":
        return raw if raw.replace("(", "").replace(")", "").replace(",", "").replace(" ", "").isalnum() else ""
    low = raw.lower()
    for needle, out in (("int", "BIGINT"), ("bool", "BOOLEAN"), ("timestamp", "TIMESTAMP"), ("date", "DATE"),
                        ("time", "TIME"), ("double", "DOUBLE"), ("float", "DOUBLE"), ("real", "DOUBLE"),
                        ("numeric", "DOUBLE"), ("decimal", "DOUBLE"), ("blob", "BLOB"), ("bytea", "BLOB")):
        if needle in low:
            return out
    return "TEXT"


def _try(run, stmt: str) -> None:
    try:
        run(stmt)
    except Exception as exc:  # noqa: BLE001 - one odd table must not hide the others
        raise SQLError(f"cannot create a scratch copy of the schema ({stmt[:80]}...): {exc}") from None
