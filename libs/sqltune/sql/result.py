"""The outcome of running one query: :class:`ExecResult`, its failure categories, and the row cap.

Every engine runner (SQLite, DuckDB, PostgreSQL) builds its result here, so a truncated result looks
the same whichever engine produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

Category = Literal["syntax", "unknown_identifier", "not_read_only", "runtime", "timeout", "too_many_rows"]
CATEGORIES: tuple[Category, ...] = get_args(Category)


@dataclass
class ExecResult:
    """The outcome of one execution. ``category`` is None on success."""

    rows: list[tuple] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    error: str | None = None
    category: Category | None = None
    elapsed_s: float = 0.0
    engine: str = ""
    truncated: bool = False  # more than max_rows rows existed; ``rows`` holds the first max_rows

    @property
    def ok(self) -> bool:
        return self.category is None


def capped_result(rows: list[tuple], columns: list[str], max_rows: int) -> ExecResult:
    """The result of ``rows`` fetched with a cap of ``max_rows`` (callers fetch ``max_rows + 1`` rows, so
    one row more than the cap means the query had more): truncated and categorised ``too_many_rows``."""
    if len(rows) > max_rows:
        return ExecResult(
            rows=rows[:max_rows],
            columns=columns,
            truncated=True,
            category="too_many_rows",
            error=f"the query returned more than max_rows={max_rows} rows",
        )
    return ExecResult(rows=rows, columns=columns)


def error_message(exc: BaseException) -> str:
    """One-line error text: the exception type plus its message without DuckDB's caret excerpt."""
    text = str(exc).strip() or type(exc).__name__
    text = text.split("\nLINE ")[0]
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}"
