"""Schema text for prompts: DDL rebuilt from Spider/BIRD ``tables.json``, read from a live database, and
fitted to a token budget.

The schema model itself (introspection, CREATE TABLE parsing, rendering styles, statement splitting) is
:mod:`sqltune.sql.schema`; this module holds what is about datasets and prompts. Every function returns
plain ``CREATE TABLE`` statements, one per table, so the text can be shown to a model, parsed with
sqlglot, or executed to recreate an empty copy.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqltune.errors import DataError, SQLError
from sqltune.sql import schema as sql_schema
from sqltune.sql.schema import Column, ForeignKey, SchemaStyle, Table, TableText, parse_table_text, split_statements
from sqltune.sql.schema.text import idents

__all__ = [
    "ddl_from_tables_json",
    "ddl_from_database",
    "fit_schema",
    "select_tables",
    "approx_token_count",
]


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
            Table(
                name=str(table),
                columns=[Column(name, typ) for _, name, typ in cols],
                primary_key=pks.get(t_idx, []),
                foreign_keys=[ForeignKey([col], ref_table, [ref_col]) for col, ref_table, ref_col in fks.get(t_idx, [])],
            ).render("full")
        )
    return "\n\n".join(statements)


# ---------------------------------------------------------------------------------- live databases


def ddl_from_database(db: str | os.PathLike[str], *, style: SchemaStyle = "full") -> str:
    """A live database's tables as CREATE TABLE statements (types, NOT NULL, keys); see
    :func:`sqltune.sql.schema.ddl_from_database`. ``style="compact"`` gives one line per table, the form
    the embedded dataset's prompts use. A database that is missing or unreadable raises DataError.
    """
    try:
        return sql_schema.ddl_from_database(db, style=style)
    except SQLError as exc:
        raise DataError(str(exc)) from exc


# ------------------------------------------------------------------------------------ token budget


def approx_token_count(text: str) -> int:
    """Rough token count: words and individual punctuation marks (BPE tokenizers usually give more)."""
    return len(re.findall(r"\w+|[^\w\s]", text))


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
    parsed = [t for t in (parse_table_text(stmt, i) for i, stmt in enumerate(split_statements(ddl, keep_terminators=True))) if t]
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
        raise DataError(f"max_tokens must be >= 0, got {max_tokens}")
    count = count_tokens or approx_token_count
    if count(ddl) <= max_tokens:
        return ddl
    statements = split_statements(ddl, keep_terminators=True)
    tables: list[TableText] = []
    others: list[tuple[int, str]] = []
    for pos, stmt in enumerate(statements):
        parsed = parse_table_text(stmt, pos)
        if parsed is not None:
            tables.append(parsed)
        else:
            others.append((pos, stmt))

    q_lower = (question or "").lower()
    q_words = _words(q_lower)

    def score(t: TableText) -> tuple[int, int, int, int]:
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
    pk_cols = table.primary_key()
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
                if not table.columns[j] and dropped in {w.lower() for w in idents(table.elements[j])}:
                    keep.remove(j)
    text = table.render(keep)
    return text if count(text) <= max_tokens else ""
