"""Small real databases for the sqltune.sql tests (built in tmp_path; PostgreSQL via postgres_db)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sql_helpers import FIXTURES, ROWS_T  # noqa: F401 - re-exported for fixtures below
SETUP_SQL = [
    "CREATE TABLE t (a INTEGER, b TEXT)",
    "CREATE TABLE nums (id INTEGER, grp TEXT, val DOUBLE PRECISION, qty INTEGER)",
    "INSERT INTO t VALUES (1, 'x'), (2, 'y'), (3, NULL)",
    "INSERT INTO nums VALUES (1, 'a', 0.1, 2), (2, 'a', 0.2, 2), (3, 'b', 0.3, 5), (4, 'b', NULL, 5),"
    " (5, 'c', 1.0, 1)",
]


def build_sqlite(path: Path) -> Path:
    conn = sqlite3.connect(path)
    for stmt in SETUP_SQL:
        conn.execute(stmt.replace("DOUBLE PRECISION", "REAL"))
    conn.commit()
    conn.close()
    return path


def build_duckdb(path: Path) -> Path:
    import duckdb

    conn = duckdb.connect(str(path))
    for stmt in SETUP_SQL:
        conn.execute(stmt)
    conn.close()
    return path


def build_postgres(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        for stmt in SETUP_SQL:
            conn.execute(stmt)


@pytest.fixture()
def sqlite_db(tmp_path: Path) -> Path:
    d = tmp_path / "sqlite"
    d.mkdir()
    return build_sqlite(d / "test.sqlite")


@pytest.fixture()
def duckdb_db(tmp_path: Path) -> Path:
    d = tmp_path / "duckdb"
    d.mkdir()
    return build_duckdb(d / "test.duckdb")


@pytest.fixture()
def pg_dbs(postgres_admin_dsn: str, postgres_db: str) -> tuple[str, str]:
    """(admin DSN, read-only DSN) of a fresh database holding the test tables."""
    from sqltune.sql import postgres as pg

    build_postgres(postgres_db)
    name = postgres_db.rpartition("/")[2]
    return postgres_db, pg.ensure_readonly_role(postgres_admin_dsn, name)
