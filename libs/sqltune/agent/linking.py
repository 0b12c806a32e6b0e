"""Schema linking: pick the tables (and, if needed, columns) a question is about, so a large schema fits
the prompt.

Each table is scored against the question by

- **lexical matching** of its name and its columns' names (snake_case and camelCase split into words,
  singular/plural variants, a word's stem): a table named in the question scores most, then one whose
  columns are;
- **value matching**: words and phrases of the question that are values sampled from the database's text
  columns (``'Germany'`` links ``customers.country``), when a :class:`ValueIndex` is given;
- an optional **embedding hook** (:class:`Embedder`): cosine similarity of the question and a table's
  description, added with a weight. No embedding model ships with sqltune; plug one in where available.

Tables that score are kept, best first, and tables that join two kept tables (a foreign key, or an
``<table>_id`` column) are added, so a join path is not cut. Within a token budget the ranked tables are
added while they fit, and :func:`~sqltune.data.schema.fit_schema` trims the last one's columns when even
the first alone is too long. A question that matches nothing keeps every table (up to the budget), so
linking never leaves the model with less than the plain budget cut would.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "Embedder",
    "LinkResult",
    "TableInfo",
    "ValueIndex",
    "gold_tables",
    "link_schema",
    "parse_tables",
    "sample_values",
]


class Embedder(Protocol):
    """The hook for an embedding model: one vector per text (any dimension, same for all)."""

    def __call__(self, texts: Sequence[str]) -> Sequence[Sequence[float]]: ...


@dataclass
class TableInfo:
    """One CREATE TABLE statement of the schema text, as linking sees it."""

    name: str
    text: str
    columns: list[str]
    references: list[str] = field(default_factory=list)
    """Tables its foreign keys point at (from REFERENCES clauses)."""


@dataclass
class LinkResult:
    """The linked schema and how it was chosen."""

    schema: str
    tables: list[str]
    """The kept tables, in the schema's order."""
    total_tables: int
    scores: dict[str, float]
    reason: str
    """requested | budget | fits (nothing dropped)"""
    value_matches: dict[str, list[str]] = field(default_factory=dict)
    """table -> the columns whose sampled values the question mentions."""

    def to_dict(self) -> dict[str, Any]:
        return {"tables": self.tables, "total_tables": self.total_tables, "reason": self.reason,
                "scores": {k: round(v, 3) for k, v in self.scores.items()},
                **({"value_matches": self.value_matches} if self.value_matches else {})}


# ------------------------------------------------------------------------------------------ parsing

_REFERENCES = re.compile(r"\bREFERENCES\s+((?:\"[^\"]+\"|`[^`]+`|\[[^\]]+\]|[\w$.]+))", re.I)


def parse_tables(ddl: str) -> list[TableInfo]:
    """The CREATE TABLE statements of ``ddl`` with their columns and referenced tables, in order.

    Read with the schema model's text layer (:func:`~sqltune.sql.schema.parse_table_text`), so a
    statement no parser accepts still links. Cached: a server links many questions against the same
    few schemas.
    """
    return [dataclasses.replace(t, columns=list(t.columns), references=list(t.references))
            for t in _parse_tables_cached(ddl)]


@functools.lru_cache(maxsize=64)
def _parse_tables_cached(ddl: str) -> tuple[TableInfo, ...]:
    from sqltune.sql.schema import parse_table_text, split_statements
    from sqltune.sql.schema.text import idents

    out: list[TableInfo] = []
    for position, stmt in enumerate(split_statements(ddl)):
        table = parse_table_text(stmt, position)
        if table is None:
            continue
        refs: list[str] = []
        for ref in _REFERENCES.findall(stmt):
            parts = idents(ref)
            r = parts[-1] if parts else ref
            if r.lower() != table.name.lower() and r not in refs:
                refs.append(r)
        out.append(TableInfo(name=table.name, text=stmt.strip(), columns=[c for c in table.columns if c],
                             references=refs))
    return tuple(out)


# ------------------------------------------------------------------------------------------ words

_STOP = frozenset(
    "a an the of in on at to for by with from and or not is are was were be been what which who whom whose "
    "how many much list show give find return all each every per that this these those there their its "
    "do does did have has had as than then into id ids name names number count total".split()
)


def _split_name(name: str) -> list[str]:
    """``OrderItems`` / ``order_items`` / ``order-items`` -> ["order", "items"]."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def _stem(word: str) -> str:
    """A light stemmer: enough for plural/singular and -ing/-ed variants of schema words."""
    w = word.lower()
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ses", "s"), ("s", ""), ("ing", ""), ("ed", "")):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            return w[: len(w) - len(suffix)] + repl
    return w


def _question_words(question: str) -> tuple[set[str], set[str]]:
    words = [w for w in re.findall(r"[a-z0-9]+", question.lower())]
    return set(words), {_stem(w) for w in words if w not in _STOP}


def _name_score(name: str, q_lower: str, q_words: set[str], q_stems: set[str]) -> float:
    """1.0 when the whole name is in the question (as written or as words), else the share of its
    meaningful words that are."""
    low = name.lower()
    parts = _split_name(name)
    phrase = " ".join(parts)
    if all(p in _STOP for p in parts):
        # "name", "id", "count": in too many questions to link a table alone; half weight
        return 0.5 if low in q_words or phrase in q_words else 0.0
    if low in q_words or (len(phrase) > 2 and re.search(rf"\b{re.escape(phrase)}", q_lower)):
        return 1.0
    if parts and " ".join(_stem(p) for p in parts) in {_stem(w) for w in q_words} and len(parts) == 1:
        return 1.0
    meaningful = [p for p in parts if p not in _STOP and len(p) > 1]
    if not meaningful:
        return 0.0
    hits = sum(1 for p in meaningful if _stem(p) in q_stems)
    return hits / len(meaningful)


# ------------------------------------------------------------------------------------------ values


@dataclass
class ValueIndex:
    """Sampled text values of a database's columns: normalised value -> [(table, column)]."""

    values: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    max_words: int = 1

    def add(self, table: str, column: str, value: Any) -> None:
        if not isinstance(value, str):
            return
        key = " ".join(re.findall(r"[a-z0-9]+", value.lower()))
        if len(key) < 3 or key.isdigit() or len(key) > 64:
            return
        slots = self.values.setdefault(key, [])
        if (table, column) not in slots:
            slots.append((table, column))
        self.max_words = max(self.max_words, min(4, len(key.split())))

    def matches(self, question: str) -> dict[str, list[str]]:
        """table -> columns holding a value the question mentions (word n-grams up to 4 words)."""
        words = re.findall(r"[a-z0-9]+", question.lower())
        found: dict[str, list[str]] = {}
        for n in range(1, self.max_words + 1):
            for i in range(len(words) - n + 1):
                gram = " ".join(words[i:i + n])
                if n == 1 and gram in _STOP:
                    continue
                for table, column in self.values.get(gram, []):
                    cols = found.setdefault(table, [])
                    if column not in cols:
                        cols.append(column)
        return found


def sample_values(db: str, *, per_column: int = 500, timeout_s: float = 5.0,
                  tables: Sequence[TableInfo] | None = None) -> ValueIndex:
    """Distinct values of every column of ``db`` (at most ``per_column`` each; text values are indexed),
    read through the read-only sandbox of :func:`~sqltune.sql.execute`. Columns that fail to read are
    skipped; a database that cannot be opened raises :class:`~sqltune.errors.SQLError`."""
    from sqlglot import exp

    from sqltune.sql import Schema, engine_of, execute

    engine = engine_of(db)
    if tables is None:
        schema = Schema.from_db(db, timeout_s=timeout_s)
        infos = [TableInfo(name=t, text="", columns=list(cols)) for t, cols in schema.tables.items()]
    else:
        infos = list(tables)
    index = ValueIndex()
    for info in infos:
        for col in info.columns:
            c = exp.to_identifier(col, quoted=True).sql(dialect=engine)
            t = exp.to_identifier(info.name, quoted=True).sql(dialect=engine)
            sql = (f"SELECT DISTINCT {c} FROM {t} WHERE {c} IS NOT NULL AND "
                   f"CAST({c} AS TEXT) <> '' LIMIT {int(per_column)}")
            res = execute(sql, db=db, dialect=engine, timeout_s=timeout_s, max_rows=per_column)
            if not res.ok:
                continue
            for (value,) in res.rows:
                index.add(info.name, col, value)
    return index


# ------------------------------------------------------------------------------------------ linking


def _join_key_targets(info: TableInfo, by_name: dict[str, TableInfo]) -> set[str]:
    """Tables ``info`` can join to: its REFERENCES, and ``<table>_id``-style columns naming a table."""
    out = {r.lower() for r in info.references if r.lower() in by_name}
    for col in info.columns:
        low = col.lower()
        for suffix in ("_id", "id"):
            if low.endswith(suffix) and len(low) > len(suffix):
                stem = low[: -len(suffix)].rstrip("_")
                for cand in (stem, stem + "s", stem + "es", stem[:-1] + "ies" if stem.endswith("y") else ""):
                    if cand and cand in by_name and cand != info.name.lower():
                        out.add(cand)
    return out


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def score_tables(
    question: str,
    tables: Sequence[TableInfo],
    *,
    values: ValueIndex | None = None,
    embedder: Embedder | None = None,
    embed_weight: float = 1.0,
) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Relevance of each table to ``question`` (0: nothing matched) and the value matches."""
    q_lower = question.lower()
    q_words, q_stems = _question_words(question)
    value_hits = values.matches(question) if values is not None else {}
    value_hits_ci = {k.lower(): v for k, v in value_hits.items()}
    scores: dict[str, float] = {}
    for t in tables:
        s = 3.0 * _name_score(t.name, q_lower, q_words, q_stems)
        # Key columns (customer_id) name the table they join to, not what this table is about.
        content = [c for c in t.columns if _split_name(c)[-1:] != ["id"]] or t.columns
        col_scores = sorted((_name_score(c, q_lower, q_words, q_stems) for c in content), reverse=True)
        # the best few columns count; a wide table does not win by size alone
        s += sum(col_scores[:3])
        s += 2.0 * min(2, len(value_hits_ci.get(t.name.lower(), [])))
        scores[t.name] = s
    if embedder is not None and tables:
        descriptions = [f"{t.name}: {', '.join(t.columns)}" for t in tables]
        vectors = list(embedder([question, *descriptions]))
        if len(vectors) != len(tables) + 1:
            raise ValueError(f"the embedder returned {len(vectors)} vectors for {len(tables) + 1} texts")
        for t, vec in zip(tables, vectors[1:]):
            scores[t.name] += embed_weight * max(0.0, _cosine(vectors[0], vec))
    return scores, {t.name: value_hits_ci[t.name.lower()] for t in tables if t.name.lower() in value_hits_ci}


def link_schema(
    question: str,
    ddl: str,
    *,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    values: ValueIndex | None = None,
    embedder: Embedder | None = None,
    reason: str = "requested",
    min_score: float = 1.0,
    fill: bool | None = None,
) -> LinkResult:
    """The part of ``ddl`` relevant to ``question``, within ``max_tokens`` when given.

    The tables scoring at least ``min_score`` (a name in the question, a whole column name, or a value:
    half a column name is not enough) plus the tables that join them, best first while they fit
    ``max_tokens``. With ``fill`` (the default when ``reason="budget"``: the schema was only too long,
    nobody asked for less), the other tables follow by score while they fit. The result keeps the
    statements' own text and order. ``count_tokens`` defaults to the approximate count of
    :func:`~sqltune.data.schema.approx_token_count` (pass a tokenizer's count for an exact budget).
    """
    from sqltune.data.schema import approx_token_count, fit_schema

    count = count_tokens or approx_token_count
    tables = parse_tables(ddl)
    if not tables:
        text = fit_schema(ddl, max_tokens=max_tokens, count_tokens=count, question=question) if max_tokens else ddl
        return LinkResult(schema=text, tables=[], total_tables=0, scores={}, reason=reason)
    scores, value_matches = score_tables(question, tables, values=values, embedder=embedder)
    by_name = {t.name.lower(): t for t in tables}
    order = {t.name.lower(): i for i, t in enumerate(tables)}
    ranked = sorted(tables, key=lambda t: (-scores[t.name], order[t.name.lower()]))
    linked = [t.name.lower() for t in ranked if scores[t.name] >= min_score]
    linked = _with_bridges(linked, by_name)
    if not linked:
        linked = [t.name.lower() for t in ranked]  # nothing matched: every table, best-effort order
    if max_tokens is None:
        keep = linked
    else:
        keep = []
        fill = reason == "budget" if fill is None else fill
        rest = [t.name.lower() for t in ranked if t.name.lower() not in linked] if fill else []
        for name in linked + rest:
            trial = keep + [name]
            if count(_render(trial, by_name, order)) <= max_tokens:
                keep = trial
            elif not keep:
                keep = trial  # even the best table alone is too long: fit_schema trims its columns below
                break
            # else: this one does not fit; the next (smaller) ones may
    text = _render(keep, by_name, order)
    if max_tokens is not None and count(text) > max_tokens:
        text = fit_schema(text, max_tokens=max_tokens, count_tokens=count, question=question)
    kept = [t.name for t in tables if t.name.lower() in set(keep)]
    return LinkResult(schema=text, tables=kept, total_tables=len(tables), scores=scores, reason=reason,
                      value_matches={k: v for k, v in value_matches.items() if k in kept})


def _with_bridges(linked: list[str], by_name: dict[str, TableInfo]) -> list[str]:
    """``linked`` plus the tables on the shortest join paths (foreign keys, ``<table>_id`` columns) that
    connect each linked table to the ones before it, so a join is never cut in the middle."""
    if len(linked) < 2:
        return linked
    neighbours: dict[str, set[str]] = {n: set() for n in by_name}
    for a, info in by_name.items():
        for b in _join_key_targets(info, by_name):
            neighbours[a].add(b)
            neighbours[b].add(a)
    chosen = [linked[0]]
    for target in linked[1:]:
        if target in chosen:
            continue
        path = _shortest_path(set(chosen), target, neighbours)
        for name in path or [target]:
            if name not in chosen:
                chosen.append(name)
    return chosen


def _shortest_path(sources: set[str], target: str, neighbours: dict[str, set[str]]) -> list[str] | None:
    """Tables from (excluding) ``sources`` to (including) ``target`` along the fewest joins; None if unjoined."""
    prev: dict[str, str | None] = {s: None for s in sources}
    frontier = sorted(sources)
    while frontier:
        nxt = []
        for node in frontier:
            for nb in sorted(neighbours.get(node, ())):
                if nb in prev:
                    continue
                prev[nb] = node
                if nb == target:
                    path = [nb]
                    while prev[path[-1]] is not None and prev[path[-1]] not in sources:
                        path.append(prev[path[-1]])  # type: ignore[arg-type]
                    return list(reversed(path))
                nxt.append(nb)
        frontier = nxt
    return None


def _render(names: Sequence[str], by_name: dict[str, TableInfo], order: dict[str, int]) -> str:
    stmts = [by_name[n] for n in sorted(set(names), key=lambda n: order[n])]
    joiner = "\n" if all("\n" not in t.text for t in stmts) else "\n\n"
    return joiner.join(t.text.rstrip().rstrip(";") + ";" for t in stmts)


# ------------------------------------------------------------------------------------------ scoring


def gold_tables(sql: str, dialect: str = "sqlite") -> list[str]:
    """The tables a (gold) query reads, CTE names excluded, lower-cased and sorted."""
    from sqlglot import exp

    from sqltune.sql.analyze import parse

    try:
        statements = parse(sql, dialect)
    except Exception:  # noqa: BLE001 - an unparseable gold query has no tables to score
        return []
    out: set[str] = set()
    for stmt in statements:
        ctes = {c.alias_or_name.lower() for c in stmt.find_all(exp.CTE)}
        for t in stmt.find_all(exp.Table):
            if isinstance(t.this, exp.Identifier) and t.name and t.name.lower() not in ctes:
                out.add(t.name.lower())
    return sorted(out)
