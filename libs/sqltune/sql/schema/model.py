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
from sqltune.sql.schema.text import split_statements

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
            defs = [Table(str(t), [Column(str(c), str(ty or "")) for c, ty in cols.items()]) for t, cols in tables.items()]
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
        """Parse the CREATE TABLE statements of ``text``; every other statement is ignored.

        Statements sqlglot cannot parse are skipped one by one (with a debug log), so one odd
        statement does not hide the rest of the schema.
        """
        dialect = canonical_dialect(dialect)
        tables: dict[str, dict[str, str]] = {}
        for stmt in _parse_leniently(text, dialect):
            if not isinstance(stmt, exp.Create) or (stmt.args.get("kind") or "").upper() != "TABLE":
                continue
            target = stmt.this
            table = target.this if isinstance(target, exp.Schema) else target
            if not isinstance(table, exp.Table) or not table.name:
                continue
            cols: dict[str, str] = {}
            if isinstance(target, exp.Schema):
                for col in target.expressions:
                    if isinstance(col, exp.ColumnDef) and col.name:
                        kind = col.args.get("kind")
                        cols[col.name] = kind.sql() if kind is not None else ""
            elif isinstance(stmt.expression, exp.Query):  # CREATE TABLE ... AS SELECT
                cols = {name: "" for name in stmt.expression.named_selects if name != "*"}
            tables[table.name] = cols
        return cls(tables)

    @classmethod
    def from_db(cls, db: str | os.PathLike[str], *, timeout_s: float = 10.0, everything: bool = False) -> "Schema":
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


def _parse_leniently(text: str, dialect: str) -> list[exp.Expression]:
    try:
        return [s for s in sqlglot.parse(text, read=dialect) if s is not None]
    except Exception:  # noqa: BLE001 - fall back to one statement at a time
        pass
    out = []
    for chunk in split_statements(text):
        try:
            out.extend(s for s in sqlglot.parse(chunk, read=dialect) if s is not None)
        except Exception as exc:  # noqa: BLE001
            log.debug("skipping unparseable DDL statement %r: %s", chunk[:80], exc)
    return out
