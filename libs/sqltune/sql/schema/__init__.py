"""The schema model of sqltune: one home for what a database's tables look like.

- :class:`Schema` - tables -> typed columns (plus keys), from DDL (:meth:`Schema.from_ddl`), a mapping, or a
  live SQLite/DuckDB/PostgreSQL database (:meth:`Schema.from_db`); written back out as CREATE TABLE text in
  the ``plain``, ``full`` or ``compact`` style (:meth:`Schema.to_ddl`).
- :func:`ddl_from_database` - a live database's schema as prompt text in one call.
- :mod:`~sqltune.sql.schema.text` - the parser-free layer: :func:`split_statements`, :func:`quote_ident`,
  and the one CREATE TABLE reader, which cuts a statement into its elements with their text kept
  (:func:`parse_table_text`): :meth:`Schema.from_ddl` reads names and types with it, and prompt fitting
  (:func:`sqltune.data.schema.fit_schema`) drops elements with it.

Submodules, lowest first: ``text`` < ``table`` (Table/Column and the renderer) < ``introspect`` <
``model`` (Schema).
"""

from __future__ import annotations

import os

from sqltune.errors import SQLError
from sqltune.sql.schema.model import Schema, as_schema
from sqltune.sql.schema.table import SCHEMA_STYLES, Column, ForeignKey, SchemaStyle, Table, render_tables
from sqltune.sql.schema.text import TableText, parse_table_text, quote_ident, split_statements

__all__ = [
    "SCHEMA_STYLES",
    "Column",
    "ForeignKey",
    "Schema",
    "SchemaStyle",
    "Table",
    "TableText",
    "as_schema",
    "ddl_from_database",
    "parse_table_text",
    "quote_ident",
    "render_tables",
    "split_statements",
]


def ddl_from_database(
    db: str | os.PathLike[str], *, style: SchemaStyle = "full", timeout_s: float = 10.0
) -> str:
    """The base tables of every schema of a live database as CREATE TABLE text in ``style``.

    Tables outside the default schema (``main``, ``public``) are schema-qualified; views are left out.
    Raises SQLError naming the database or the style.
    """
    if style not in SCHEMA_STYLES:
        raise SQLError(f"schema style {style!r} is not one of {', '.join(map(repr, SCHEMA_STYLES))}")
    return Schema.from_db(db, timeout_s=timeout_s, everything=True).to_ddl(style=style)
