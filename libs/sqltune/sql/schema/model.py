"""The schema model: tables -> ordered columns with types (plus keys), from DDL, a mapping or a live DB."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

import sqlglot
from sqlglot import exp

from sqltune.errors import SQLError
from sqltune.sql._dialects import canonical_dialect
from sqltune.sql.schema.introspect import introspect
from sqltune.sql.schema.table import Column, SchemaStyle, Table, render_tables
from sqltune.sql.schema.text import column_type, parse_table_text, split_statements

__all__ = ["Schema", "as_schema"]

log = logging.getLogger(__name__)


class Schema:
    """Tables and their columns. Names are matched case-insensitively.

    ``tables`` maps table name -> {column name -> type string (may be "")}, insertion-ordered; ``defs``
    holds the same tables as :class:`Table` objects with what else their DDL says (keys, NOT NULL, the
    schema they live in), which :meth:`to_ddl` writes out.
    """

    def __init__(self, tables: Mapping[str, Mapping[str, str]] | Iterable[Table] | None = None) -> None:
        if isinstance(tables, Mapping):
            defs = [
                Table(str(t), [Column(str(c), str(ty or "")) for c, ty in cols.items()])
                for t, cols in tables.items()
            ]
        else:
            defs = list(tables or [])
        self.defs: list[Table] = defs
        self.tables: dict[str, dict[str, str]] = {t.name: {c.name: c.type for c in t.columns} for t in defs}
        self._index = {t.lower(): t for t in self.tables}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schema) and self.defs == other.defs

    def __repr__(self) -> str:
        return f"Schema({self.tables!r})"

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Mapping[str, str] | Iterable[str]]) -> "Schema":
        """Build from ``{table: {column: type}}`` or ``{table: [column, ...]}``."""
        tables: dict[str, dict[str, str]] = {}
        for table, cols in mapping.items():
            if isinstance(cols, Mapping):
                tables[str(table)] = {str(c): str(t or "") for c, t in cols.items()}
            else:
                tables[str(table)] = {str(c): "" for c in cols}
        return cls(tables)

    @classmethod
    def from_ddl(cls, text: str, dialect: str = "sqlite") -> "Schema":
        """Read the CREATE TABLE statements of ``text``; every other statement is ignored.

        The statements are cut by the text layer (:func:`~sqltune.sql.schema.text.parse_table_text`), so
        SQL that no parser accepts still yields the tables it defines, and types stay as written. The
        SELECT of a ``CREATE TABLE ... AS SELECT`` is read with sqlglot in ``dialect`` for its column
        names. A table defined twice keeps its last definition.
        """
        dialect = canonical_dialect(dialect)
        tables: dict[str, dict[str, str]] = {}
        for position, stmt in enumerate(split_statements(text)):
            table = parse_table_text(stmt, position)
            if table is None:
                continue
            if table.elements:
                cols = {name: column_type(el) for name, el in zip(table.columns, table.elements) if name}
            else:
                cols = {name: "" for name in _selected_names(stmt, dialect)}
            tables[table.name] = cols
        return cls(tables)

    @classmethod
    def from_db(
        cls, db: str | os.PathLike[str], *, timeout_s: float = 10.0, everything: bool = False
    ) -> "Schema":
        """Introspect a SQLite/DuckDB file or a PostgreSQL DSN read-only.

        By default: the tables and views a query can name without a schema qualifier (SQLite's, DuckDB's
        ``main``, PostgreSQL's ``public``). ``everything=True``: the base tables of every schema, views
        left out (what :meth:`to_ddl` should recreate). Raises SQLError naming the database.
        """
        tables = introspect(db, timeout_s=timeout_s)
        if everything:
            return cls([t for t in tables if not t.view])
        return cls([t for t in tables if t.namespace is None])

    # -- queries ------------------------------------------------------------------------------------
    def has_table(self, name: str) -> bool:
        return name.lower() in self._index

    def columns(self, table: str) -> dict[str, str] | None:
        key = self._index.get(table.lower())
        return None if key is None else self.tables[key]

    def has_column(self, table: str, column: str) -> bool:
        cols = self.columns(table)
        return cols is not None and column.lower() in {c.lower() for c in cols}

    def to_sqlglot(self) -> dict[str, dict[str, str]]:
        """The mapping shape sqlglot's optimizer takes (types default to TEXT)."""
        return {t: {c: (ty or "TEXT") for c, ty in cols.items()} for t, cols in self.tables.items()}

    def to_ddl(self, dialect: str = "sqlite", *, style: SchemaStyle = "plain") -> str:
        """CREATE TABLE statements (what a prompt shows), in one of the styles of
        :mod:`sqltune.sql.schema.table`: ``plain`` (names and types, quoted for ``dialect``), ``full``
        (with keys and NOT NULL) or ``compact`` (one line per table, the primary key inline)."""
        return render_tables(self.defs, style, dialect)

    def __len__(self) -> int:
        return len(self.tables)


def as_schema(schema: "Schema | str | Mapping | None", dialect: str) -> "Schema | None":
    """Accept a Schema, DDL text or a mapping; None stays None."""
    if schema is None or isinstance(schema, Schema):
        return schema
    if isinstance(schema, str):
        return Schema.from_ddl(schema, dialect)
    if isinstance(schema, Mapping):
        return Schema.from_mapping(schema)
    raise SQLError(f"schema must be DDL text, a Schema or a mapping, got {type(schema).__name__}")


def _selected_names(stmt: str, dialect: str) -> list[str]:
    """The output column names of a ``CREATE TABLE ... AS SELECT`` (none when sqlglot cannot read it)."""
    try:
        tree = sqlglot.parse_one(stmt, read=dialect)
    except Exception as exc:  # noqa: BLE001 - sqlglot raises several types; an unreadable one adds no columns
        log.debug("cannot read the SELECT of %r: %s", stmt[:80], exc)
        return []
    query = tree.expression if isinstance(tree, exp.Create) else None
    return [name for name in query.named_selects if name != "*"] if isinstance(query, exp.Query) else []
