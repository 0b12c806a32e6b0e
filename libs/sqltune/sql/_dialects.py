"""Dialect names, engine detection and the DuckDB connection settings shared by the sqltune.sql modules."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqltune.errors import SQLError

DIALECTS = ("sqlite", "duckdb", "postgres")
_ALIASES = {"postgresql": "postgres", "pg": "postgres", "sqlite3": "sqlite"}
_SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db", ".db3")
_DUCKDB_SUFFIXES = (".duckdb", ".ddb")

# Every DuckDB connection sqltune opens uses these settings: DuckDB allows one configuration per file
# per process, so the schema reader and the sandbox must agree.
DUCKDB_CONFIG: dict[str, Any] = {
    "enable_external_access": False,  # no files, COPY, ATTACH, INSTALL/LOAD, replacement scans
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "allow_persistent_secrets": False,
    "temp_directory": "",  # never spill to <db>.tmp next to the database
    "memory_limit": "2GB",
    "threads": 2,
    "lock_configuration": True,  # SET/RESET/PRAGMA cannot undo any of the above
}


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
    """A ``postgresql://`` URL or a ``key=value`` conninfo string naming a database."""
    if not isinstance(db, str):
        return False
    return db.startswith(("postgresql://", "postgres://")) or ("=" in db and "dbname" in db)


def engine_of(db: str | os.PathLike[str]) -> str:
    """Which engine serves ``db``: a ``postgresql://`` DSN, a SQLite file or a DuckDB file.

    Files are recognised by suffix first, then by their header. Raises SQLError when neither works.
    """
    if is_postgres_dsn(db):
        return "postgres"
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
