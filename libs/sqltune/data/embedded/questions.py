"""The seeded generator of question/gold-SQL pairs from the templates of :mod:`.templates`.

:func:`generate_examples` fills templates round-robin over categories, executes every candidate on SQLite
and keeps only those whose result is non-empty (templates about empty results allow a bounded share of
empty ones), and never emits the same SQL twice.
"""

from __future__ import annotations

import random
import re
import sqlite3
from typing import Any, Iterator

from sqltune.data.record import Example

from . import warehouse as W
from .dialects import render
from .templates import CATEGORIES, TEMPLATES, TEMPLATES_BY_ID, Context, Template

__all__ = ["CATEGORIES", "TEMPLATES", "TEMPLATES_BY_ID", "generate_examples", "is_ordered", "tables_of"]

_TABLE_RE = {name: re.compile(rf"\b{name}\b") for name in W.TABLE_NAMES}


def tables_of(sql: str) -> list[str]:
    """Warehouse tables that a gold query mentions, in canonical order."""
    return [name for name in W.TABLE_NAMES if _TABLE_RE[name].search(sql)]


def is_ordered(sql: str) -> bool:
    """True when the outermost query ends with ORDER BY (rows must then match in order)."""
    depth = 0
    last_top_order = -1
    upper = sql.upper()
    for i, ch in enumerate(upper):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and upper.startswith("ORDER BY", i) and (i == 0 or not upper[i - 1].isalnum()):
            last_top_order = i
    return last_top_order >= 0


def _normalize(text: str) -> str:
    return " ".join(text.lower().split())


def _candidates(template: Template, ctx: Context, rng: random.Random,
                conn: sqlite3.Connection) -> Iterator[tuple[dict[str, Any], str, bool]]:
    """Slot fills of one template in seeded random order, with their SQLite SQL and emptiness."""
    space = template.space(ctx)
    rng.shuffle(space)
    for slots in space:
        sql = render(template.fill_sql(slots), "sqlite")
        rows = conn.execute(sql).fetchall()
        empty = not rows or all(v is None for r in rows for v in r)
        yield slots, sql, empty


def generate_examples(wh: W.Warehouse, n: int = 1600, *, seed: int = 0, db: str = "warehouse.sqlite",
                      conn: sqlite3.Connection | None = None) -> list[Example]:
    """Generate ``n`` (or as many as the templates allow) examples, balanced over categories."""
    rng = random.Random(f"embedded-questions-{seed}")
    ctx = Context(wh)
    own = conn is None
    conn = conn or W.memory_sqlite(wh)
    try:
        by_cat: dict[str, list[Template]] = {c: [t for t in TEMPLATES if t.category == c] for c in CATEGORIES}
        iters = {t.id: _candidates(t, ctx, random.Random(f"{seed}-{t.id}"), conn) for t in TEMPLATES}
        taken = {t.id: 0 for t in TEMPLATES}
        empties = {t.id: 0 for t in TEMPLATES}
        cursor = {c: 0 for c in CATEGORIES}
        seen_sql: set[str] = set()
        seen_q: set[str] = set()
        out: list[Example] = []
        active = [c for c in CATEGORIES if by_cat[c]]
        while len(out) < n and active:
            for cat in list(active):
                if len(out) >= n:
                    break
                temps = by_cat[cat]
                if not temps:
                    active.remove(cat)
                    continue
                t = temps[cursor[cat] % len(temps)]
                cursor[cat] += 1
                picked = None
                for slots, sql, empty in iters[t.id]:
                    if empty and (empties[t.id] + 1) > t.max_empty * (taken[t.id] + 1):
                        continue
                    key = _normalize(sql)
                    if key in seen_sql:
                        continue
                    question = rng.choice(t.phrasings).format(**slots)
                    if _normalize(question) in seen_q:
                        continue
                    picked = (slots, sql, empty, question)
                    break
                if picked is None:
                    temps.remove(t)
                    continue
                slots, sql, empty, question = picked
                seen_sql.add(_normalize(sql))
                seen_q.add(_normalize(question))
                taken[t.id] += 1
                empties[t.id] += int(empty)
                gold = t.fill_sql(slots)
                tables = tables_of(sql)
                out.append(Example(
                    id=f"embedded-{len(out):05d}",
                    question=question,
                    schema=W.compact_schema(tables, "sqlite"),
                    sql=sql,
                    dialect="sqlite",
                    db=db,
                    category=t.category,
                    difficulty=t.difficulty,
                    extra={
                        "sql_by_dialect": {d: render(gold, d) for d in W.DIALECTS},
                        "template": t.id,
                        "slots": {k: slots[k] for k in sorted(slots) if "{" + k + "}" in t.sql},
                        "tables": tables,
                        "ordered": is_ordered(sql),
                        "empty_result": empty,
                    },
                ))
        return out
    finally:
        if own:
            conn.close()
