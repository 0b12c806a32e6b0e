"""Per-dialect rendering of gold SQL, and engine-neutral result comparison.

Gold SQL templates are written once, in SQLite syntax, with a few macros where the engines differ:

``@Y(x)``       year of a date as INTEGER
``@M(x)``       month number as INTEGER
``@YM(x)``      ``'YYYY-MM'`` text of a date
``@Q(x)``       quarter (1-4) as INTEGER
``@DAYS(a, b)`` whole days from ``b`` to ``a`` as INTEGER
``@ROUND(x, n)`` ROUND that also works on PostgreSQL's double precision (cast to NUMERIC there)

:func:`render` expands them for ``sqlite``, ``duckdb`` or ``postgres``. Everything else in a template
(comparisons of dates with ``'YYYY-MM-DD'`` literals, ``BETWEEN``, ``COALESCE``, window functions, CTEs)
is portable as written.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
from typing import Any, Callable, Iterable, Sequence

from sqltune.errors import SQLError

_MACRO = re.compile(r"@([A-Z]+)\(")


def _y(d: str, x: str) -> str:
    return f"CAST(strftime('%Y', {x}) AS INTEGER)" if d == "sqlite" else f"CAST(EXTRACT(YEAR FROM {x}) AS INTEGER)"


def _m(d: str, x: str) -> str:
    return f"CAST(strftime('%m', {x}) AS INTEGER)" if d == "sqlite" else f"CAST(EXTRACT(MONTH FROM {x}) AS INTEGER)"


def _ym(d: str, x: str) -> str:
    if d == "sqlite":
        return f"strftime('%Y-%m', {x})"
    if d == "postgres":
        return f"TO_CHAR({x}, 'YYYY-MM')"
    return f"strftime({x}, '%Y-%m')"


def _q(d: str, x: str) -> str:
    if d == "sqlite":
        return f"((CAST(strftime('%m', {x}) AS INTEGER) + 2) / 3)"
    return f"CAST(EXTRACT(QUARTER FROM {x}) AS INTEGER)"


def _days(d: str, a: str, b: str) -> str:
    if d == "sqlite":
        return f"CAST(julianday({a}) - julianday({b}) AS INTEGER)"
    return f"({a} - {b})"


def _round(d: str, x: str, n: str) -> str:
    return f"ROUND(CAST({x} AS NUMERIC), {n})" if d == "postgres" else f"ROUND({x}, {n})"


MACROS: dict[str, Callable[..., str]] = {"Y": _y, "M": _m, "YM": _ym, "Q": _q, "DAYS": _days, "ROUND": _round}


def render(sql: str, dialect: str) -> str:
    """Expand the ``@MACRO(...)`` calls of a gold template for ``dialect``."""
    if dialect not in ("sqlite", "duckdb", "postgres"):
        raise SQLError(f"unknown dialect {dialect!r}; expected sqlite, duckdb or postgres")
    out: list[str] = []
    i = 0
    while True:
        m = _MACRO.search(sql, i)
        if not m:
            out.append(sql[i:])
            return "".join(out)
        out.append(sql[i:m.start()])
        name = m.group(1)
        if name not in MACROS:
            raise SQLError(f"unknown macro @{name} in {sql!r}")
        j, depth, start, args = m.end(), 1, m.end(), []
        in_str = False
        while depth:
            if j >= len(sql):
                raise SQLError(f"unbalanced parentheses after @{name} in {sql!r}")
            ch = sql[j]
            if ch == "'":
                in_str = not in_str
            elif not in_str:
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                elif ch == "," and depth == 1:
                    args.append(sql[start:j])
                    start = j + 1
            j += 1
        args.append(sql[start:j - 1])
        out.append(MACROS[name](dialect, *(render(a.strip(), dialect) for a in args)))
        i = j


# ------------------------------------------------------------------------------- result comparison

def normalize_value(value: Any) -> Any:
    """Engine-neutral form of one result value (dates as ISO text, Decimal as float, bool as int)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (int, float)):
        return value
    return str(value)


def normalize_rows(rows: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    return [tuple(normalize_value(v) for v in row) for row in rows]


def _sort_key(row: tuple[Any, ...]) -> tuple:
    key = []
    for v in row:
        if v is None:
            key.append((0, 0.0, ""))
        elif isinstance(v, (int, float)):
            key.append((1, round(float(v), 4), ""))
        else:
            key.append((2, 0.0, str(v)))
    return tuple(key)


def _value_equal(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6)
    return a == b


def results_equal(a: Iterable[Sequence[Any]], b: Iterable[Sequence[Any]], *, ordered: bool = False) -> bool:
    """True when two result sets match: values compared with float tolerance, rows order-insensitively
    unless ``ordered``."""
    ra, rb = normalize_rows(a), normalize_rows(b)
    if len(ra) != len(rb):
        return False
    if not ordered:
        ra, rb = sorted(ra, key=_sort_key), sorted(rb, key=_sort_key)
    for x, y in zip(ra, rb):
        if len(x) != len(y) or not all(_value_equal(u, v) for u, v in zip(x, y)):
            return False
    return True
