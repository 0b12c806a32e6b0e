"""Execution accuracy: run predicted and gold SQL and compare their results."""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqltune.sql._dialects import canonical_dialect, engine_of
from sqltune.sql.analyze import outermost_has_order_by, parse
from sqltune.sql.execute import ExecResult, execute


@dataclass
class MatchResult:
    """``match`` is True only when both queries ran and their results agree.

    ``category``: None on a match; the predicted query's failure category ("syntax",
    "unknown_identifier", "not_read_only", "runtime", "timeout", "too_many_rows"); "mismatch" when
    both ran but the results differ; "gold_failed" when the gold query itself failed (then
    ``gold_failed`` is True and callers should not count the example against the model).
    """

    match: bool
    category: str | None
    gold_failed: bool
    pred: ExecResult
    gold: ExecResult
    ordered: bool = False
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gold_error(self) -> bool:
        return self.gold_failed


def execution_match(
    pred_sql: str,
    gold_sql: str,
    *,
    db: str | os.PathLike[str],
    dialect: str | None = None,
    timeout_s: float = 5.0,
    float_tol: float = 1e-6,
    max_rows: int = 1000,
    gold_result: ExecResult | None = None,
    pool: Any = None,
) -> MatchResult:
    """Execute both queries on ``db`` and compare results.

    Comparison is order-sensitive only when the gold query's outermost SELECT (or set operation)
    has ORDER BY; otherwise rows are compared as multisets (duplicates count). Column names are
    ignored; column order matters. Numbers compare with ``float_tol`` (relative and absolute):
    2 == 2.0 == Decimal('2'); NULL equals NULL. Pass ``gold_result`` to reuse an earlier gold run.
    A gold result over ``max_rows`` rows counts as a gold failure (it cannot be compared reliably).
    ``pool``: run both in a :class:`~sqltune.sql.isolated.SandboxPool` (see :func:`execute`).
    """
    engine = engine_of(db)
    dialect = canonical_dialect(dialect) if dialect is not None else engine
    gold = gold_result if gold_result is not None else execute(
        gold_sql, db=db, dialect=dialect, timeout_s=timeout_s, max_rows=max_rows, pool=pool)
    ordered = gold_is_ordered(gold_sql, dialect)
    pred = execute(pred_sql, db=db, dialect=dialect, timeout_s=timeout_s, max_rows=max_rows, pool=pool)
    if not gold.ok:
        return MatchResult(False, "gold_failed", True, pred, gold, ordered,
                           reason=f"gold query failed ({gold.category}): {gold.error}")
    if not pred.ok:
        return MatchResult(False, pred.category, False, pred, gold, ordered,
                           reason=f"predicted query failed ({pred.category}): {pred.error}")
    same, why = results_equal(pred.rows, gold.rows, ordered=ordered, float_tol=float_tol)
    return MatchResult(same, None if same else "mismatch", False, pred, gold, ordered, reason=why)


def gold_is_ordered(gold_sql: str, dialect: str) -> bool:
    """Whether the outermost query of ``gold_sql`` has ORDER BY (False if it does not parse)."""
    try:
        statements = parse(gold_sql, canonical_dialect(dialect))
    except Exception:  # noqa: BLE001
        return False
    return bool(statements) and outermost_has_order_by(statements[0])


def results_equal(pred_rows: list[tuple], gold_rows: list[tuple], *, ordered: bool,
                  float_tol: float = 1e-6) -> tuple[bool, str]:
    """Compare two row lists; returns (equal, reason when not)."""
    if len(pred_rows) != len(gold_rows):
        return False, f"row count differs: predicted {len(pred_rows)}, gold {len(gold_rows)}"
    if not gold_rows:
        return True, ""
    pw = {len(r) for r in pred_rows}
    gw = {len(r) for r in gold_rows}
    if pw != gw:
        return False, f"column count differs: predicted {sorted(pw)}, gold {sorted(gw)}"
    p = [tuple(_norm(v) for v in r) for r in pred_rows]
    g = [tuple(_norm(v) for v in r) for r in gold_rows]
    if ordered:
        for i, (a, b) in enumerate(zip(p, g)):
            if not _row_equal(a, b, float_tol):
                return False, f"row {i} differs: predicted {a!r}, gold {b!r}"
        return True, ""
    # Multiset: first pair rows whose rounded keys agree, then match the rest with tolerance.
    keys_p = Counter(_row_key(r, float_tol) for r in p)
    keys_g = Counter(_row_key(r, float_tol) for r in g)
    common = keys_p & keys_g
    left_p = _without(p, common, float_tol)
    left_g = _without(g, common, float_tol)
    unused = list(left_g)
    for row in left_p:
        for j, cand in enumerate(unused):
            if _row_equal(row, cand, float_tol):
                del unused[j]
                break
        else:
            return False, f"predicted row {row!r} has no equal row left in the gold result"
    return True, ""


def _without(rows: list[tuple], counts: Counter, tol: float) -> list[tuple]:
    budget = Counter(counts)
    out = []
    for r in rows:
        k = _row_key(r, tol)
        if budget[k] > 0:
            budget[k] -= 1
        else:
            out.append(r)
    return out


def _norm(value: Any) -> Any:
    """Bring engine values onto comparable Python types."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat(sep=" ") if isinstance(value, _dt.datetime) else value.isoformat()
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_norm(v) for v in value)
    return str(value)


def _value_key(value: Any, tol: float) -> tuple:
    if value is None:
        return (0, 0)
    if isinstance(value, int):
        return (2, value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            return (2, int(value))
        if math.isnan(value):
            return (1, 0)
        if math.isinf(value):
            return (2, value)
        # a rounded key for the fast path; rows that differ only within tolerance but round
        # differently are still paired by the tolerant second pass
        digits = max(0, min(15, -math.floor(math.log10(max(tol, 1e-15)))))
        return (2, float(f"{value:.{digits}g}") if abs(value) >= 1 else round(value, digits))
    if isinstance(value, str):
        return (3, value)
    if isinstance(value, bytes):
        return (4, value)
    if isinstance(value, tuple):
        return (5, tuple(_value_key(v, tol) for v in value))
    return (6, str(value))


def _row_key(row: tuple, tol: float) -> tuple:
    return tuple(_value_key(v, tol) for v in row)


def _value_equal(a: Any, b: Any, tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if a == b:
            return True
        if isinstance(a, int) and isinstance(b, int):
            return False
        fa, fb = float(a), float(b)
        if math.isnan(fa) or math.isnan(fb):
            return math.isnan(fa) and math.isnan(fb)
        return math.isclose(fa, fb, rel_tol=tol, abs_tol=tol)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_value_equal(x, y, tol) for x, y in zip(a, b))
    return a == b


def _row_equal(a: tuple, b: tuple, tol: float) -> bool:
    return len(a) == len(b) and all(_value_equal(x, y, tol) for x, y in zip(a, b))
