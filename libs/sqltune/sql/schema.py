"""A small database schema model (tables -> ordered columns with types), built from DDL or a live DB."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp

from sqltune.errors import SQLError
from sqltune.sql._dialects import canonical_dialect

log = logging.getLogger(__name__)


@dataclass
class Schema:
    """Tables and their columns. Names are matched case-insensitively.

    ``tables`` maps table name -> {column name -> type string (may be "")}, insertion-ordered.
    """

    tables: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._index = {t.lower(): t for t in self.tables}

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
    def from_db(cls, db: str, *, timeout_s: float = 10.0) -> "Schema":
        """Introspect a SQLite/DuckDB file or a PostgreSQL DSN (schema ``public``) read-only."""
        from sqltune.sql._dialects import engine_of

        engine = engine_of(db)
        if engine == "sqlite":
            import sqlite3
            from pathlib import Path
            from urllib.parse import quote

            uri = f"file:{quote(str(Path(db).resolve()))}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=timeout_s)
            try:
                names = [r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type IN ('table','view') "
                    "AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
                tables = {}
                for name in names:
                    info = conn.execute("SELECT name, type FROM pragma_table_info(?)", (name,)).fetchall()
                    tables[name] = {c: t or "" for c, t in info}
            finally:
                conn.close()
            return cls(tables)
        if engine == "duckdb":
            import duckdb

            from sqltune.sql.execute import DUCKDB_CONFIG

            # the same configuration as execute(): DuckDB allows one configuration per file per process
            conn = duckdb.connect(str(db), read_only=True, config=dict(DUCKDB_CONFIG))
            try:
                rows = conn.execute(
                    "SELECT table_name, column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position").fetchall()
            finally:
                conn.close()
        else:
            from sqltune.sql import postgres as _pg

            rows = _pg.introspect_columns(db, timeout_s=timeout_s)
        tables: dict[str, dict[str, str]] = {}
        for table, column, dtype in rows:
            tables.setdefault(table, {})[column] = dtype or ""
        return cls(tables)

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

    def to_ddl(self, dialect: str = "sqlite") -> str:
        """Render CREATE TABLE statements (what a prompt shows)."""
        dialect = canonical_dialect(dialect)
        out = []
        for table, cols in self.tables.items():
            defs = ", ".join(
                f"{exp.to_identifier(c).sql(dialect=dialect)} {ty}".rstrip() for c, ty in cols.items()
            )
            out.append(f"CREATE TABLE {exp.to_identifier(table).sql(dialect=dialect)} ({defs});")
        return "\n".join(out)

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


_TOKEN = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\]|--[^\n]*|/\*.*?\*/|;)""", re.S)


def split_statements(text: str) -> list[str]:
    """Split SQL text on semicolons outside quotes and comments; empty pieces are dropped.

    A lexical splitter: it does not need the SQL to parse, so it also works on broken input.
    (Dollar-quoted PostgreSQL bodies are not understood.)
    """
    pieces, buf = [], []
    for part in _TOKEN.split(text):
        if part == ";":
            pieces.append("".join(buf))
            buf = []
        else:
            buf.append(part)
    pieces.append("".join(buf))
    out = []
    for p in pieces:
        stripped = _TOKEN.sub(lambda m: "" if m.group(0).startswith(("--", "/*")) else m.group(0), p).strip()
        if stripped:
            out.append(p.strip())
    return out
