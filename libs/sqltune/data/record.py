"""The one example record every loader produces and every job consumes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    """One text-to-SQL example.

    ``schema`` is CREATE TABLE DDL text (what the prompt shows); ``db`` names where gold and
    predicted SQL can be executed: a SQLite/DuckDB file path, a ``postgresql://`` DSN, or a database
    id that the dataset resolves against its database folder. ``None`` when execution is impossible.
    """

    id: str
    question: str
    schema: str
    sql: str
    dialect: str = "sqlite"
    db: str | None = None
    evidence: str | None = None
    category: str | None = None
    difficulty: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Example":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
