"""Dialect names and engine detection shared by the sqltune.sql modules."""

from __future__ import annotations

import os
from pathlib import Path

from sqltune.errors import SQLError

DIALECTS = ("sqlite", "duckdb", "postgres")
_ALIASES = {"postgresql": "postgres", "pg": "postgres", "sqlite3": "sqlite"}
_SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db", ".db3")
_DUCKDB_SUFFIXES = (".duckdb", ".ddb")


def canonical_dialect(name: str) -> str:
    """Return the canonical dialect name ("sqlite", "duckdb" or "postgres"); raise SQLError otherwise."""
    if not isinstance(name, str):
        raise SQLError(f"dialect must be a string, got {type(name).__name__}; valid: {', '.join(DIALECTS)}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DIALECTS:
        raise SQLError(
            f"unknown SQL dialect {name!r}; valid choices: {', '.join(DIALECTS)} ('postgresql' is an alias)"
        )
    return key


def is_postgres_dsn(db: object) -> bool:
    return isinstance(db, str) and db.startswith(("postgresql://", "postgres://"))


def engine_of(db: str | os.PathLike[str]) -> str:
    """Which engine serves ``db``: a ``postgresql://`` DSN, a SQLite file or a DuckDB file.

    Files are recognised by suffix first, then by their header. Raises SQLError when neither works.
    """
    if is_postgres_dsn(db):
        return "postgres"
    if isinstance(db, str) and ("=" in db and "dbname" in db):
        return "postgres"  # key=value conninfo
    path = Path(db)
    suffix = path.suffix.lower()
    if suffix in _DUCKDB_SUFFIXES:
        return "duckdb"
    if suffix in _SQLITE_SUFFIXES:
        return "sqlite"
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise SQLError(
            f"cannot tell the engine of {str(db)!r}: not a postgresql:// DSN and not a readable file ({exc})"
        ) from exc
    if head.startswith(b"SQLite format 3\x00"):
        return "sqlite"
    if head[8:12] == b"DUCK":
        return "duckdb"
    raise SQLError(
        f"cannot tell the engine of {str(db)!r}: use a .sqlite/.db, .duckdb file or a postgresql:// DSN"
    )
