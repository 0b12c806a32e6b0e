"""Every database the scored examples need, checked before anything is generated.

An example needs a database when it names one (``db``: a file or a DSN) or when its dataset ties it to one
(``extra.db_id``: Spider, BIRD) but the loader found no file for it. A database that is missing, or that
the engine cannot read (not a database file, an empty file, a server that refuses the connection), would
otherwise make its examples fall back to AST comparison or count as gold failures: either way they would
leave the execution accuracy's denominator without a word. So :func:`resolve_databases` lists them and
raises :class:`~sqltune.errors.MissingDatabaseError`, or, with ``dataset.exclude_missing_databases=true``,
drops their examples and says how many (the report's headline repeats it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from sqltune.errors import MissingDatabaseError, SQLError
from sqltune.evaluation.config import DatasetConfig

__all__ = ["MissingDatabase", "database_problem", "resolve_databases"]

# A query every engine answers only after reading the database itself (a header, a catalog).
_PROBE = {
    "sqlite": "SELECT count(*) FROM sqlite_master",
    "duckdb": "SELECT count(*) FROM information_schema.tables",
    "postgres": "SELECT 1",
}


@dataclass
class MissingDatabase:
    """A database some examples need and cannot have."""

    name: str  # the db_id, or the path / redacted DSN
    reason: str
    example_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"database": self.name, "reason": self.reason, "n_examples": len(self.example_ids)}


def database_problem(db: str, *, timeout_s: float = 10.0) -> str | None:
    """Why ``db`` cannot be used (missing, empty, unreadable, unreachable), or None when it answers."""
    from sqltune.sql import engine_of, execute

    try:
        engine = engine_of(db)
    except SQLError as exc:
        return str(exc)
    if engine != "postgres":
        if not os.path.exists(db):
            return "no such file"
        if not os.path.isfile(db):
            return "not a file"
        if os.path.getsize(db) == 0:
            return "empty file (0 bytes)"
        if not os.access(db, os.R_OK):
            return "not readable (permissions)"
    try:
        res = execute(_PROBE[engine], db=db, timeout_s=timeout_s, max_rows=10, precheck=False)
    except Exception as exc:  # noqa: BLE001 - whatever stops the engine from opening it is the reason
        return f"{type(exc).__name__}: {exc}"
    return None if res.ok else f"{res.category}: {res.error}"


def _missing_reason(ex: Any, d: DatasetConfig) -> tuple[str, str] | None:
    """(name, reason) when ``ex`` needs a database it does not have; None otherwise."""
    db_id = ex.extra.get("db_id")
    if not ex.db:
        if not db_id:
            return None  # no database by design (sql-create-context, gretel: context or AST only)
        where = d.databases_dir or "the dataset's own database folder (<source>/database, <source>/dev_databases)"
        return str(db_id), f"no {db_id}/{db_id}.sqlite under {where}"
    return None


def resolve_databases(examples: list[Any], d: DatasetConfig) -> tuple[list[Any], dict[str, Any]]:
    """The examples whose databases are there, and a summary of those left out.

    Raises :class:`MissingDatabaseError` listing every missing/unreadable database unless
    ``d.exclude_missing_databases``; the summary is ``{"n_examples", "databases": [...]}`` (empty when none).
    """
    from sqltune.evaluation.report import redact

    problems: dict[str, MissingDatabase] = {}
    checked: dict[str, str | None] = {}
    keep = []
    for ex in examples:
        found = _missing_reason(ex, d)
        if found is None and ex.db:
            if ex.db not in checked:
                checked[ex.db] = database_problem(ex.db)
            if checked[ex.db] is not None:
                found = (str(ex.extra.get("db_id") or redact(ex.db)), f"{redact(ex.db)}: {checked[ex.db]}")
        if found is None:
            keep.append(ex)
            continue
        name, reason = found
        problems.setdefault(name, MissingDatabase(name, reason)).example_ids.append(ex.id)
    if not problems:
        return examples, {"n_examples": 0, "databases": []}
    listed = sorted(problems.values(), key=lambda m: m.name)
    n = sum(len(m.example_ids) for m in listed)
    if not d.exclude_missing_databases:
        lines = "\n".join(f"  - {m.name} ({len(m.example_ids)} examples): {m.reason}" for m in listed[:50])
        more = f"\n  ... and {len(listed) - 50} more" if len(listed) > 50 else ""
        raise MissingDatabaseError(
            f"dataset: {len(listed)} database(s) needed by {n} of {len(examples)} examples are missing or "
            f"unreadable:\n{lines}{more}\nPut the database files in place, point dataset.databases_dir at the "
            "folder holding <db_id>/<db_id>.sqlite, or set dataset.exclude_missing_databases=true to score "
            "without these examples (the report then says how many were left out)."
        )
    return keep, {"n_examples": n, "databases": [m.to_dict() for m in listed]}
