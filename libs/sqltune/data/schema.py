"""Schema text for prompts: DDL rebuilt from Spider/BIRD ``tables.json``, introspected from a live
database (SQLite file, DuckDB file, PostgreSQL DSN), and fitted to a token budget.

Every function returns plain ``CREATE TABLE`` statements separated by blank lines, one statement per
table, so the text can be shown to a model, parsed with sqlglot, or executed to recreate an empty copy.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqltune.errors import DataError, missing

__all__ = [
    "ddl_from_tables_json",
    "ddl_from_database",
    "fit_schema",
    "select_tables",
    "approx_token_count",
    "quote_ident",
    "split_statements",
]

# Words that must be quoted when used as identifiers (SQLite's and PostgreSQL's reserved words that
# appear in real schemas; quoting more than needed is harmless, quoting less breaks parsing).
_RESERVED = frozenset(
    """
    abort action add after all alter always analyze and as asc attach autoincrement before begin between
    by cascade case cast check collate column commit conflict constraint create cross current
    current_date current_time current_timestamp database default deferrable deferred delete desc detach
    distinct do drop each else end escape except exclude exclusive exists explain fail filter first
    following for foreign from full generated glob group groups having if ignore immediate in index
    indexed initially inner insert instead intersect into is isnull join key last left like limit match
    materialized natural no not nothing notnull null nulls of offset on or order others outer over
    partition plan pragma preceding primary query raise range recursive references regexp reindex release
    rename replace restrict returning right rollback row rows savepoint select set table temp temporary
    then ties to transaction trigger unbounded union unique update user using vacuum values view virtual
    when where window with without analyse any array asymmetric both fetch grant leading localtime
    localtimestamp only placing symmetric trailing variadic verbose
    """.split()
)
_SIMPLE_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


SchemaStyle = Literal["full", "compact"]
"""How a live database's schema is rendered: multi-line DDL with constraints, or one line per table."""


def quote_ident(name: str) -> str:
    """Quote ``name`` with double quotes when it is not a plain identifier or is a reserved word."""
    if _SIMPLE_IDENT.match(name) and name.lower() not in _RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


# --------------------------------------------------------------------------------------- tables.json

_TYPE_MAP = {
    "text": "TEXT",
    "number": "NUMERIC",
    "time": "DATETIME",
    "boolean": "BOOLEAN",
    "others": "TEXT",
    "integer": "INTEGER",
    "real": "REAL",
    "date": "DATE",
    "datetime": "DATETIME",
    "blob": "BLOB",
}


def _sql_type(raw: Any) -> str:
    text = str(raw or "").strip()
    if not text:
        return "TEXT"
    mapped = _TYPE_MAP.get(text.lower())
    if mapped:
        return mapped
    return text.upper() if re.match(r"^[A-Za-z][A-Za-z0-9_ ]*(\(\s*\d+(\s*,\s*\d+)?\s*\))?$", text) else "TEXT"


def _flatten(values: Any) -> list[int]:
    out: list[int] = []
    for value in values or []:
        if isinstance(value, (list, tuple)):
            out.extend(_flatten(value))
        else:
            out.append(int(value))
    return out


def ddl_from_tables_json(entry: Mapping[str, Any]) -> str:
    """Render one Spider/BIRD ``tables.json`` entry as CREATE TABLE statements.

    Uses ``table_names_original``/``column_names_original`` (falling back to the normalized names),
    ``column_types``, ``primary_keys`` (flat or nested column indexes; several in one table make a
    composite key) and ``foreign_keys`` (pairs of column indexes).
    """
    where = f"tables.json entry {entry.get('db_id', '?')!r}"
    tables = entry.get("table_names_original") or entry.get("table_names")
    columns = entry.get("column_names_original") or entry.get("column_names")
    if not isinstance(tables, list) or not isinstance(columns, list):
        raise DataError(f"{where}: fields 'table_names_original' and 'column_names_original' must be lists")
    types = list(entry.get("column_types") or [])
    # column index -> (table index, name); index 0 is the '*' pseudo column.
    per_table: list[list[tuple[int, str, str]]] = [[] for _ in tables]
    col_info: dict[int, tuple[int, str]] = {}
    for idx, item in enumerate(columns):
        try:
            t_idx, name = int(item[0]), str(item[1])
        except (TypeError, ValueError, IndexError) as exc:
            raise DataError(f"{where}: column_names_original[{idx}] is not a [table index, name] pair") from exc
        if t_idx < 0:
            continue
        if t_idx >= len(tables):
            raise DataError(f"{where}: column {name!r} points at table index {t_idx}, only {len(tables)} tables")
        col_info[idx] = (t_idx, name)
        if any(existing.lower() == name.lower() for _, existing, _ in per_table[t_idx]):
            continue  # a few Spider tables list a column twice; a table cannot have it twice
        per_table[t_idx].append((idx, name, _sql_type(types[idx] if idx < len(types) else "")))

    pks: dict[int, list[str]] = {}
    for col in _flatten(entry.get("primary_keys")):
        if col in col_info:
            t_idx, name = col_info[col]
            if name not in pks.setdefault(t_idx, []):
                pks[t_idx].append(name)
    fks: dict[int, list[tuple[str, str, str]]] = {}
    for pair in entry.get("foreign_keys") or []:
        try:
            src, dst = int(pair[0]), int(pair[1])
        except (TypeError, ValueError, IndexError):
            continue
        if src in col_info and dst in col_info:
            s_t, s_name = col_info[src]
            d_t, d_name = col_info[dst]
            fk = (s_name, str(tables[d_t]), d_name)
            if fk not in fks.setdefault(s_t, []):
                fks[s_t].append(fk)

    statements = []
    for t_idx, table in enumerate(tables):
        cols = per_table[t_idx]
        if not cols or str(table).lower().startswith("sqlite_"):
            continue  # SQLite's internal tables (sqlite_sequence) cannot be created and are never queried
        statements.append(
            _render_table(
                str(table),
                [(name, typ, False) for _, name, typ in cols],
                pks.get(t_idx, []),
                fks.get(t_idx, []),
            )
        )
    return "\n\n".join(statements)


def _render_table(
    table: str,
    columns: Sequence[tuple[str, str, bool]],
    primary_key: Sequence[str],
    foreign_keys: Sequence[tuple[str, str, str]] | Sequence[str],
    *,
    schema: str | None = None,
    compact: bool = False,
) -> str:
    """CREATE TABLE text; ``columns`` are (name, type, not_null); foreign keys are (col, table, col)
    triples or already-rendered constraint strings.

    ``compact``: the one-line prompt form: ``name TYPE`` per column, a one-column primary key inline,
    no NOT NULL and no foreign keys (the joins are in the column names), about half the tokens.
    """
    name = f"{quote_ident(schema)}.{quote_ident(table)}" if schema else quote_ident(table)
    if compact:
        inline_pk = primary_key[0] if len(primary_key) == 1 else None
        cols = [f"{quote_ident(n)} {t}".rstrip() + (" PRIMARY KEY" if n == inline_pk else "") for n, t, _ in columns]
        if len(primary_key) > 1:
            cols.append("PRIMARY KEY (" + ", ".join(quote_ident(c) for c in primary_key) + ")")
        return f"CREATE TABLE {name} ({', '.join(cols)});"
    parts = []
    for col_name, typ, not_null in columns:
        parts.append(f"{quote_ident(col_name)} {typ}".rstrip() + (" NOT NULL" if not_null else ""))
    if primary_key:
        parts.append("PRIMARY KEY (" + ", ".join(quote_ident(c) for c in primary_key) + ")")
    for fk in foreign_keys:
        if isinstance(fk, str):
            parts.append(fk)
        else:
            col, ref_table, ref_col = fk
            parts.append(
                f"FOREIGN KEY ({quote_ident(col)}) REFERENCES {quote_ident(ref_table)}({quote_ident(ref_col)})"
            )
    return f"CREATE TABLE {name} (\n  " + ",\n  ".join(parts) + "\n);"


# ---------------------------------------------------------------------------------- live databases


def _kind_of(db: str) -> str:
    if re.match(r"^postgres(ql)?(\+\w+)?://", db):
        return "postgres"
    path = Path(db)
    if not path.is_file():
        raise DataError(f"database {db!r} does not exist (expected a SQLite/DuckDB file or a postgresql:// DSN)")
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head.startswith(b"SQLite format 3"):
        return "sqlite"
    if head[8:12] == b"DUCK":
        return "duckdb"
    suffix = path.suffix.lower()
    if suffix in {".duckdb", ".ddb"}:
        return "duckdb"
    if suffix in {".sqlite", ".sqlite3", ".db"}:
        return "sqlite"
    raise DataError(f"database {db!r} is neither a SQLite nor a DuckDB file (unknown header)")


def ddl_from_database(db: str | os.PathLike[str], *, style: SchemaStyle = "full") -> str:
    """Introspect a live database's tables into CREATE TABLE statements (types, NOT NULL, keys).

    ``db`` is a SQLite file, a DuckDB file (detected by header, then suffix) or a ``postgresql://``
    DSN (every non-system schema; tables outside ``public`` are schema-qualified). ``style="compact"``
    gives one line per table (see :func:`_render_table`), the form the embedded dataset's prompts use.
    """
    if style not in ("full", "compact"):
        raise ValueError(f"schema style {style!r} is not one of 'full', 'compact'")
    db = os.fspath(db)
    kind = _kind_of(db)
    compact = style == "compact"
    if kind == "sqlite":
        return _ddl_sqlite(db, compact)
    if kind == "duckdb":
        return _ddl_duckdb(db, compact)
    return _ddl_postgres(db, compact)


def _ddl_sqlite(path: str, compact: bool = False) -> str:
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise DataError(f"cannot open SQLite database {path}: {exc}") from exc
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
            )
        ]
        out = []
        for table in tables:
            info = conn.execute(f"PRAGMA table_info('{table.replace(chr(39), chr(39) * 2)}')").fetchall()
            # cid, name, type, notnull, dflt_value, pk
            cols = [(r[1], (r[2] or "").upper() or "TEXT", bool(r[3]) and not r[5]) for r in info]
            pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
            fk_rows = conn.execute(
                f"PRAGMA foreign_key_list('{table.replace(chr(39), chr(39) * 2)}')"
            ).fetchall()
            # id, seq, table, from, to, ...; 'to' is None when the parent's primary key is meant.
            fks = []
            for r in fk_rows:
                ref_col = r[4]
                if ref_col is None:
                    parent = conn.execute(
                        f"PRAGMA table_info('{str(r[2]).replace(chr(39), chr(39) * 2)}')"
                    ).fetchall()
                    parent_pk = [p[1] for p in parent if p[5]]
                    ref_col = parent_pk[0] if parent_pk else r[3]
                fks.append((r[3], r[2], ref_col))
            if cols:
                out.append(_render_table(table, cols, pk, fks, compact=compact))
        return ("\n" if compact else "\n\n").join(out)
    except sqlite3.Error as exc:
        raise DataError(f"cannot read the schema of SQLite database {path}: {exc}") from exc
    finally:
        conn.close()


def _ddl_duckdb(path: str, compact: bool = False) -> str:
    import duckdb

    try:
        conn = duckdb.connect(path, read_only=True)
    except duckdb.Error as exc:
        raise DataError(f"cannot open DuckDB database {path}: {exc}") from exc
    try:
        rows = conn.execute(
            """SELECT table_schema, table_name, column_name, data_type, is_nullable
               FROM information_schema.columns
               WHERE table_catalog = current_database()
                 AND table_schema NOT IN ('information_schema', 'pg_catalog')
                 AND table_name IN (SELECT table_name FROM information_schema.tables t
                                    WHERE t.table_schema = columns.table_schema
                                      AND t.table_catalog = current_database()
                                      AND t.table_type = 'BASE TABLE')
               ORDER BY table_schema, table_name, ordinal_position"""
        ).fetchall()
        cons = conn.execute(
            """SELECT schema_name, table_name, constraint_type, constraint_column_names,
                      referenced_table, referenced_column_names
               FROM duckdb_constraints()
               WHERE database_name = current_database()
                 AND constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY')
               ORDER BY constraint_index"""
        ).fetchall()
    except duckdb.Error as exc:
        raise DataError(f"cannot read the schema of DuckDB database {path}: {exc}") from exc
    finally:
        conn.close()
    return _render_introspected(rows, cons, default_schema="main", compact=compact)


def _render_introspected(rows: list[tuple], cons: list[tuple], *, default_schema: str, compact: bool = False) -> str:
    order: list[tuple[str, str]] = []
    cols: dict[tuple[str, str], list[tuple[str, str, bool]]] = {}
    for schema, table, column, typ, nullable in rows:
        key = (schema, table)
        if key not in cols:
            order.append(key)
            cols[key] = []
        cols[key].append((column, str(typ).upper(), str(nullable).upper() in {"NO", "FALSE", "0"}))
    pks: dict[tuple[str, str], list[str]] = {}
    fks: dict[tuple[str, str], list[str]] = {}
    for schema, table, ctype, col_names, ref_table, ref_cols in cons:
        key = (schema, table)
        if ctype == "PRIMARY KEY":
            pks[key] = list(col_names)
        elif ctype == "FOREIGN KEY" and ref_table:
            fks.setdefault(key, []).append(
                "FOREIGN KEY ("
                + ", ".join(quote_ident(c) for c in col_names)
                + f") REFERENCES {quote_ident(ref_table)}("
                + ", ".join(quote_ident(c) for c in (ref_cols or []))
                + ")"
            )
    out = []
    for key in order:
        schema, table = key
        pk = pks.get(key, [])
        columns = [(n, t, nn and n not in pk) for n, t, nn in cols[key]]
        qualifier = None if schema == default_schema else schema
        out.append(_render_table(table, columns, pk, fks.get(key, []), schema=qualifier, compact=compact))
    return ("\n" if compact else "\n\n").join(out)


def _ddl_postgres(dsn: str, compact: bool = False) -> str:
    try:
        import psycopg
    except ImportError as exc:
        raise missing("psycopg", "postgres") from exc
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            rows = conn.execute(
                """SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
                   FROM pg_class c
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                   WHERE c.relkind IN ('r', 'p')
                     AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                     AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
                   ORDER BY n.nspname <> 'public', n.nspname, c.relname, a.attnum"""
            ).fetchall()
            cons = conn.execute(
                """SELECT n.nspname, c.relname, con.contype, con.oid,
                          ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)
                                JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num
                                ORDER BY k.ord),
                          rc.relname,
                          ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(num, ord)
                                JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num
                                ORDER BY k.ord)
                   FROM pg_constraint con
                   JOIN pg_class c ON c.oid = con.conrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   LEFT JOIN pg_class rc ON rc.oid = con.confrelid
                   WHERE con.contype IN ('p', 'f')
                     AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                   ORDER BY con.contype DESC, con.conname"""
            ).fetchall()
    except psycopg.Error as exc:
        raise DataError(f"cannot read the schema of PostgreSQL database {_redact(dsn)}: {exc}") from exc
    kinds = {"p": "PRIMARY KEY", "f": "FOREIGN KEY"}
    cons_rows = [(s, t, kinds[ct], list(cols or []), rt, list(rcols or [])) for s, t, ct, _oid, cols, rt, rcols in cons]
    return _render_introspected(
        [(s, t, c, typ, "NO" if nn else "YES") for s, t, c, typ, nn in rows], cons_rows, default_schema="public",
        compact=compact,
    )


def _redact(dsn: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", dsn)


# ------------------------------------------------------------------------------------ token budget


def approx_token_count(text: str) -> int:
    """Rough token count: words and individual punctuation marks (BPE tokenizers usually give more)."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def split_statements(ddl: str) -> list[str]:
    """Split SQL text at top-level semicolons, respecting quotes, brackets and comments.

    Each returned statement keeps its terminating ``;`` (if it had one) and any comment before it.
    """
    out: list[str] = []
    start = 0
    i = 0
    n = len(ddl)
    while i < n:
        ch = ddl[i]
        if ch in "'\"`":
            j = i + 1
            while j < n:
                if ddl[j] == ch:
                    if j + 1 < n and ddl[j + 1] == ch:
                        j += 2
                        continue
                    break
                j += 1
            i = j + 1
            continue
        if ch == "[":
            j = ddl.find("]", i + 1)
            i = n if j < 0 else j + 1
            continue
        if ddl.startswith("--", i):
            j = ddl.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if ddl.startswith("/*", i):
            j = ddl.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        if ch == ";":
            stmt = ddl[start : i + 1].strip()
            if stmt.strip(";").strip():
                out.append(stmt)
            start = i + 1
        i += 1
    tail = ddl[start:].strip()
    if tail and not _only_comments(tail):
        out.append(tail)
    return out


def _only_comments(text: str) -> bool:
    stripped = re.sub(r"--[^\n]*|/\*.*?\*/", "", text, flags=re.S)
    return not stripped.strip()


def _top_level_split(body: str) -> list[str]:
    """Split a parenthesized body at depth-0 commas, respecting quotes."""
    parts, depth, cur, i, n = [], 0, [], 0, len(body)
    while i < n:
        ch = body[i]
        if ch in "'\"`":
            j = i + 1
            while j < n and not (body[j] == ch and not (j + 1 < n and body[j + 1] == ch)):
                j += 2 if body[j] == ch else 1
            cur.append(body[i : j + 1])
            i = j + 1
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


_CREATE_RE = re.compile(
    r"^\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*CREATE\s+(?:(?:GLOBAL|LOCAL)\s+)?(?:TEMP(?:ORARY)?\s+|UNLOGGED\s+)?"
    r"TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    r"((?:(?:\"[^\"]*\"|`[^`]*`|\[[^\]]*\]|[\w$]+)\s*\.\s*)*(?:\"[^\"]*\"|`[^`]*`|\[[^\]]*\]|[\w$]+))",
    re.I | re.S,
)
_INSERT_RE = re.compile(
    r"^\s*(?:INSERT|REPLACE)\s+(?:OR\s+\w+\s+)?INTO\s+"
    r"((?:(?:\"[^\"]*\"|`[^`]*`|\[[^\]]*\]|[\w$]+)\s*\.\s*)*(?:\"[^\"]*\"|`[^`]*`|\[[^\]]*\]|[\w$]+))",
    re.I,
)
_CONSTRAINT_RE = re.compile(r"^(CONSTRAINT|PRIMARY\s+KEY|FOREIGN\s+KEY|UNIQUE|CHECK|INDEX|KEY)\b", re.I)
_IDENT_RE = re.compile(r'^\s*("(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\]|[\w$]+)')


def _unquote(name: str) -> str:
    name = name.strip()
    if len(name) >= 2 and name[0] in "\"`[" and name[-1] in "\"`]":
        return name[1:-1].replace('""', '"')
    return name


def _last_name_part(qualified: str) -> str:
    parts = re.findall(r"\"[^\"]*\"|`[^`]*`|\[[^\]]*\]|[\w$]+", qualified)
    return _unquote(parts[-1]) if parts else qualified


@dataclass
class _Table:
    name: str
    text: str
    position: int
    header: str = ""
    elements: list[str] = field(default_factory=list)
    suffix: str = ""
    columns: list[str] = field(default_factory=list)  # one per element; "" for table constraints
    related: list[str] = field(default_factory=list)  # INSERTs etc. for this table

    def render(self, keep: Sequence[int] | None = None) -> str:
        if keep is None or not self.elements:
            return self.text
        body = ",\n  ".join(self.elements[i] for i in keep)
        return f"{self.header}(\n  {body}\n){self.suffix}"


def _parse_table(stmt: str, position: int) -> _Table | None:
    m = _CREATE_RE.match(stmt)
    if not m:
        return None
    table = _Table(name=_last_name_part(m.group(1)), text=stmt, position=position)
    open_idx = stmt.find("(", m.end())
    if open_idx < 0 or stmt[m.end() : open_idx].strip().upper().startswith("AS"):
        return table
    depth, close_idx, i = 0, -1, open_idx
    quote = ""
    while i < len(stmt):
        ch = stmt[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                close_idx = i
                break
        i += 1
    if close_idx < 0:
        return table
    table.header = stmt[:open_idx].rstrip() + " "
    table.suffix = stmt[close_idx + 1 :]
    table.elements = _top_level_split(stmt[open_idx + 1 : close_idx])
    for el in table.elements:
        if _CONSTRAINT_RE.match(el.strip()):
            table.columns.append("")
        else:
            im = _IDENT_RE.match(el)
            table.columns.append(_unquote(im.group(1)) if im else "")
    return table


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _mentioned(name: str, question_lower: str, words: set[str]) -> bool:
    if not name:
        return False
    low = name.lower()
    spaced = re.sub(r"[_\s]+", " ", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)).lower().strip()
    if low in words or (len(spaced) > 2 and spaced in question_lower):
        return True
    for variant in (low.rstrip("s"), low + "s", low + "es", low[:-1] + "ies" if low.endswith("y") else ""):
        if len(variant) > 2 and variant in words:
            return True
    return False


def select_tables(ddl: str, tables: Sequence[str]) -> str:
    """The CREATE TABLE statements of ``ddl`` for ``tables`` (case-insensitive), in ``ddl``'s order.

    Raises :class:`DataError` naming the unknown tables and the known ones. The statements keep their
    text, so the result has the same style as ``ddl`` (one line per table for a compact schema).
    """
    parsed = [t for t in (_parse_table(stmt, i) for i, stmt in enumerate(split_statements(ddl))) if t]
    known = {t.name.lower(): t for t in parsed}
    wanted = {name.lower() for name in tables}
    unknown = sorted(name for name in tables if name.lower() not in known)
    if unknown:
        raise DataError(
            f"unknown table(s) {', '.join(map(repr, unknown))}; the database has: {', '.join(t.name for t in parsed)}"
        )
    joiner = "\n" if all("\n" not in t.text.strip() for t in parsed) else "\n\n"
    return joiner.join(t.text.strip() for t in parsed if t.name.lower() in wanted)


def fit_schema(
    ddl: str,
    *,
    max_tokens: int,
    count_tokens: Callable[[str], int] | None = None,
    question: str | None = None,
) -> str:
    """Shrink ``ddl`` to at most ``max_tokens`` tokens without cutting any statement in half.

    Within budget the text is returned unchanged. Otherwise tables are ranked by relevance (name
    mentioned in ``question`` first, then by how many words of their name, then how many of their
    columns are mentioned, then original order); non-CREATE statements (sample-row INSERTs) go first, then whole tables from the least
    relevant end, then columns of the last remaining table (unmentioned non-key columns last-first,
    then table constraints, then the rest), always dropping constraints that name a dropped column.
    Kept statements stay in their original order. Returns ``""`` when not even one column fits.
    ``count_tokens`` defaults to :func:`approx_token_count`; pass ``lambda s: len(tok(s).input_ids)``
    for a tokenizer's exact count.
    """
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    count = count_tokens or approx_token_count
    if count(ddl) <= max_tokens:
        return ddl
    statements = split_statements(ddl)
    tables: list[_Table] = []
    others: list[tuple[int, str]] = []
    for pos, stmt in enumerate(statements):
        parsed = _parse_table(stmt, pos)
        if parsed is not None:
            tables.append(parsed)
        else:
            others.append((pos, stmt))

    q_lower = (question or "").lower()
    q_words = _words(q_lower)

    def score(t: _Table) -> tuple[int, int, int, int]:
        name_hit = _mentioned(t.name, q_lower, q_words)
        parts = [p for p in re.split(r"[^A-Za-z0-9]+|(?<=[a-z])(?=[A-Z])", t.name) if len(p) > 2]
        part_hits = sum(1 for p in parts if _mentioned(p, q_lower, q_words))
        col_hits = sum(1 for c in t.columns if _mentioned(c, q_lower, q_words))
        return (-int(name_hit), -part_hits, -col_hits, t.position)

    ranked = sorted(tables, key=score) if question else list(tables)

    def join(parts: list[tuple[int, str]]) -> str:
        return "\n\n".join(s for _, s in sorted(parts))

    kept_tables = [(t.position, t.text) for t in ranked]
    kept_others = list(others)
    # 1. drop non-CREATE statements, last first
    while kept_others and count(join(kept_tables + kept_others)) > max_tokens:
        kept_others.pop()
    if count(join(kept_tables + kept_others)) <= max_tokens:
        return join(kept_tables + kept_others)
    # 2. drop whole tables from the least relevant end, keeping at least one
    while len(kept_tables) > 1 and count(join(kept_tables)) > max_tokens:
        kept_tables.pop()
    if count(join(kept_tables)) <= max_tokens:
        return join(kept_tables)
    if not ranked:
        return ""
    # 3. drop columns of the one remaining (most relevant) table
    table = ranked[0]
    if not table.elements:
        return ""
    keep = list(range(len(table.elements)))
    pk_cols = _pk_columns(table)
    removable_plain = [
        i for i in keep if table.columns[i] and not _mentioned(table.columns[i], q_lower, q_words)
        and table.columns[i].lower() not in pk_cols
    ]
    removable_constraints = [i for i in keep if not table.columns[i]]
    removable_rest = [i for i in keep if table.columns[i] and i not in removable_plain]
    order = list(reversed(removable_plain)) + list(reversed(removable_constraints)) + list(reversed(removable_rest))
    for idx in order:
        text = table.render(keep)
        if count(text) <= max_tokens:
            return text
        if idx not in keep:
            continue
        if table.columns[idx] and sum(1 for i in keep if table.columns[i]) <= 1:
            continue  # keep at least one column
        keep.remove(idx)
        if table.columns[idx]:
            dropped = table.columns[idx].lower()
            for j in list(keep):
                if not table.columns[j] and dropped in {w.lower() for w in _idents(table.elements[j])}:
                    keep.remove(j)
    text = table.render(keep)
    return text if count(text) <= max_tokens else ""


def _idents(text: str) -> list[str]:
    return [_unquote(x) for x in re.findall(r"\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|[\w$]+", text)]


def _pk_columns(table: _Table) -> set[str]:
    out: set[str] = set()
    for el, col in zip(table.elements, table.columns):
        if col and re.search(r"\bPRIMARY\s+KEY\b", el, re.I):
            out.add(col.lower())
        elif not col and re.match(r"^(CONSTRAINT\s+\S+\s+)?PRIMARY\s+KEY\b", el.strip(), re.I):
            inner = el[el.find("(") + 1 : el.rfind(")")] if "(" in el else ""
            out.update(c.lower() for c in _idents(inner))
    return out
