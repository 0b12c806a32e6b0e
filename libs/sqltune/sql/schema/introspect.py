"""Read the tables of a live database: a SQLite file, a DuckDB file or a PostgreSQL DSN.

Each reader returns :class:`~sqltune.sql.schema.table.Table` objects (views included, flagged) in the
database's own order: SQLite by creation, DuckDB and PostgreSQL by schema (the default one first), then
table name (DuckDB: schemas in name order). Databases are opened read-only and never created.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sqltune.errors import SQLError
from sqltune.sql._dialects import DUCKDB_CONFIG, engine_of, is_postgres_dsn
from sqltune.sql.postgres import read_catalog
from sqltune.sql.schema.table import Column, ForeignKey, Table

__all__ = ["introspect"]


def introspect(db: str | os.PathLike[str], *, timeout_s: float = 10.0) -> list[Table]:
    """Every table and view of ``db`` with column types, NOT NULL, primary and foreign keys.

    Tables outside the default schema (``main``, ``public``) carry it as ``namespace``. Raises SQLError
    naming the database when it does not exist, is no database sqltune reads, or cannot be read.
    """
    text = os.fspath(db)
    if not is_postgres_dsn(text) and not Path(text).is_file():
        raise SQLError(
            f"database {text!r} does not exist (expected a SQLite/DuckDB file or a postgresql:// DSN)"
        )
    try:
        engine = engine_of(text)
    except SQLError:
        raise SQLError(
            f"database {text!r} is neither a SQLite nor a DuckDB file (unknown header); use a .sqlite/.db or "
            ".duckdb file or a postgresql:// DSN"
        ) from None
    if engine == "sqlite":
        return _sqlite(text, timeout_s)
    if engine == "duckdb":
        return _duckdb(text)
    columns, keys = read_catalog(text, timeout_s=timeout_s)
    return _assemble(columns, keys, default_schema="public")


def _sqlite(path: str, timeout_s: float) -> list[Table]:
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout_s)
    except sqlite3.Error as exc:
        raise SQLError(f"cannot open SQLite database {path}: {exc}") from exc
    try:
        objects = conn.execute(
            "SELECT name, type FROM sqlite_master "
            "WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' "
            "ORDER BY rowid"
        ).fetchall()
        return [_sqlite_table(conn, name, kind == "view") for name, kind in objects]
    except sqlite3.Error as exc:
        raise SQLError(f"cannot read the schema of SQLite database {path}: {exc}") from exc
    finally:
        conn.close()


def _sqlite_table(conn: sqlite3.Connection, name: str, view: bool) -> Table:
    info = conn.execute('SELECT cid, name, type, "notnull", pk FROM pragma_table_info(?)', (name,)).fetchall()
    table = Table(
        name=name,
        columns=[Column(r[1], r[2] or "", bool(r[3])) for r in info],
        primary_key=[r[1] for r in sorted((r for r in info if r[4]), key=lambda r: r[4])],
        view=view,
    )
    # id, seq, table, from, to, ...; 'to' is None when the parent's primary key is meant.
    for row in conn.execute("SELECT * FROM pragma_foreign_key_list(?)", (name,)).fetchall():
        parent, column, ref_col = row[2], row[3], row[4]
        if ref_col is None:
            parent_pk = [
                p[0] for p in conn.execute("SELECT name FROM pragma_table_info(?) WHERE pk", (parent,))
            ]
            ref_col = parent_pk[0] if parent_pk else column
        table.foreign_keys.append(ForeignKey([column], parent, [ref_col]))
    return table


def _duckdb(path: str) -> list[Table]:
    import duckdb  # a compiled extension: loaded only when a DuckDB file is read

    try:
        conn = duckdb.connect(path, read_only=True, config=dict(DUCKDB_CONFIG))
    except duckdb.Error as exc:
        raise SQLError(f"cannot open DuckDB database {path}: {exc}") from exc
    try:
        columns = conn.execute(
            """SELECT c.table_schema, c.table_name, t.table_type = 'VIEW', c.column_name, c.data_type,
                      c.is_nullable = 'NO'
               FROM information_schema.columns c
               JOIN information_schema.tables t
                 ON t.table_catalog = c.table_catalog AND t.table_schema = c.table_schema
                AND t.table_name = c.table_name
               WHERE c.table_catalog = current_database()
                 AND c.table_schema NOT IN ('information_schema', 'pg_catalog')
               ORDER BY c.table_schema, c.table_name, c.ordinal_position"""
        ).fetchall()
        keys = conn.execute(
            """SELECT schema_name, table_name, constraint_type, constraint_column_names,
                      referenced_table, referenced_column_names
               FROM duckdb_constraints()
               WHERE database_name = current_database()
                 AND constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY')
               ORDER BY constraint_index"""
        ).fetchall()
    except duckdb.Error as exc:
        raise SQLError(f"cannot read the schema of DuckDB database {path}: {exc}") from exc
    finally:
        conn.close()
    return _assemble(columns, keys, default_schema="main")


def _assemble(columns: list[tuple], keys: list[tuple], *, default_schema: str) -> list[Table]:
    """Tables from (schema, table, is_view, column, type, not_null) rows and key rows (see read_catalog)."""
    tables: dict[tuple[str, str], Table] = {}
    for schema, name, view, column, typ, not_null in columns:
        key = (schema, name)
        if key not in tables:
            namespace = None if schema == default_schema else schema
            tables[key] = Table(name=name, namespace=namespace, view=bool(view))
        tables[key].columns.append(Column(column, str(typ or ""), bool(not_null)))
    for schema, name, kind, cols, ref_table, ref_cols in keys:
        table = tables.get((schema, name))
        if table is None:
            continue
        if kind == "PRIMARY KEY":
            table.primary_key = list(cols)
        elif ref_table:
            table.foreign_keys.append(ForeignKey(list(cols), ref_table, list(ref_cols or [])))
    return list(tables.values())
