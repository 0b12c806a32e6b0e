"""One table of a schema (columns with types, keys) and how it is written as CREATE TABLE text.

Three styles, one renderer:

- ``full``: one column per line, ``NOT NULL``, the primary key and foreign keys as table constraints
  (what a database's own DDL says; the text recreates an empty copy of the tables).
- ``compact``: one line per table, a one-column primary key inline, no ``NOT NULL`` and no foreign
  keys (the joins are in the column names): about half the tokens of ``full``, the prompt form of
  the embedded dataset and of the server's default.
- ``plain``: one line per table, names and types only, types as the source spelled them
  (:meth:`~sqltune.sql.schema.Schema.to_ddl`'s default).

Every style quotes an identifier when it needs it (:func:`~sqltune.sql.schema.text.quote_ident`: double
quotes, which SQLite, DuckDB and PostgreSQL all read).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, get_args

from sqltune.errors import SQLError
from sqltune.sql._dialects import canonical_dialect
from sqltune.sql.schema.text import quote_ident

__all__ = ["Column", "ForeignKey", "SCHEMA_STYLES", "SchemaStyle", "Table", "render_tables"]

SchemaStyle = Literal["full", "compact", "plain"]
"""How a schema is written: multi-line DDL with keys, one line per table, or names and types only."""
SCHEMA_STYLES: tuple[str, ...] = get_args(SchemaStyle)


@dataclass
class Column:
    name: str
    type: str = ""  # as the source spells it; "" when unknown
    not_null: bool = False


@dataclass
class ForeignKey:
    columns: list[str]
    ref_table: str
    ref_columns: list[str]


@dataclass
class Table:
    """A table (or view) and what its DDL says about it."""

    name: str
    columns: list[Column] = field(default_factory=list)
    primary_key: list[str] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    namespace: str | None = None  # the schema it lives in when not the database's default one
    view: bool = False

    def render(self, style: SchemaStyle = "full", dialect: str = "sqlite") -> str:
        """This table as one CREATE TABLE statement in ``style`` (see the module docstring)."""
        canonical_dialect(dialect)  # the three dialects quote identifiers alike; a bad name still fails
        if style == "plain":
            return self._plain()
        name = (
            f"{quote_ident(self.namespace)}.{quote_ident(self.name)}"
            if self.namespace
            else quote_ident(self.name)
        )
        if style == "compact":
            return f"CREATE TABLE {name} ({', '.join(self._compact_parts())});"
        if style != "full":
            raise SQLError(f"schema style {style!r} is not one of {', '.join(map(repr, SCHEMA_STYLES))}")
        parts = [
            f"{quote_ident(c.name)} {_type(c)}".rstrip()
            + (" NOT NULL" if c.not_null and c.name not in self.primary_key else "")
            for c in self.columns
        ]
        if self.primary_key:
            parts.append("PRIMARY KEY (" + ", ".join(quote_ident(c) for c in self.primary_key) + ")")
        for fk in self.foreign_keys:
            parts.append(
                "FOREIGN KEY (" + ", ".join(quote_ident(c) for c in fk.columns) + f") REFERENCES "
                f"{quote_ident(fk.ref_table)}(" + ", ".join(quote_ident(c) for c in fk.ref_columns) + ")"
            )
        return f"CREATE TABLE {name} (\n  " + ",\n  ".join(parts) + "\n);"

    def _compact_parts(self) -> list[str]:
        inline_pk = self.primary_key[0] if len(self.primary_key) == 1 else None
        parts = [
            f"{quote_ident(c.name)} {_type(c)}".rstrip() + (" PRIMARY KEY" if c.name == inline_pk else "")
            for c in self.columns
        ]
        if len(self.primary_key) > 1:
            parts.append("PRIMARY KEY (" + ", ".join(quote_ident(c) for c in self.primary_key) + ")")
        return parts

    def _plain(self) -> str:
        defs = ", ".join(f"{quote_ident(c.name)} {c.type}".rstrip() for c in self.columns)
        return f"CREATE TABLE {quote_ident(self.name)} ({defs});"


def _type(column: Column) -> str:
    return (column.type or "TEXT").upper()


def render_tables(tables: Iterable[Table], style: SchemaStyle = "full", dialect: str = "sqlite") -> str:
    """CREATE TABLE statements, one per table: a blank line between ``full`` ones, a newline otherwise."""
    if style not in SCHEMA_STYLES:
        raise SQLError(f"schema style {style!r} is not one of {', '.join(map(repr, SCHEMA_STYLES))}")
    return ("\n\n" if style == "full" else "\n").join(t.render(style, dialect) for t in tables)
