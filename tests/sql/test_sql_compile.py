"""The engine's compile step without running (EXPLAIN / PREPARE) and scratch databases from DDL."""

from __future__ import annotations

import sqlite3

import pytest

from sqltune.errors import SQLError
from sqltune.sql.compile import compile_check, scratch_database

CASES = [
    ("SELECT a, b FROM t WHERE a > 1", None),
    ("SELECT nope FROM t", "unknown_identifier"),
    ("SELECT a FROM missing_table", "unknown_identifier"),
    ("SELECT FROM WHERE", "syntax"),
    ("DELETE FROM t", "not_read_only"),
    ("SELECT a FROM t; DROP TABLE t", "not_read_only"),
]


@pytest.mark.parametrize(("sql", "category"), CASES)
@pytest.mark.parametrize("db_fixture", ["sqlite_db", "duckdb_db"])
def test_compile_check_on_files(request, db_fixture, sql, category):
    db = request.getfixturevalue(db_fixture)
    res = compile_check(sql, db=db)
    assert res.category == category, res.error
    assert res.rows == [] and res.columns == []


def test_compile_check_never_runs_the_query(sqlite_db):
    endless = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT COUNT(*) FROM r"
    assert compile_check(endless, db=sqlite_db, timeout_s=1).ok  # planned, not run: no timeout


def test_compile_check_leaves_the_file_untouched(sqlite_db):
    before = sqlite_db.read_bytes()
    compile_check("SELECT a FROM t", db=sqlite_db)
    assert sqlite_db.read_bytes() == before


@pytest.mark.postgres
@pytest.mark.parametrize(("sql", "category"), CASES)
def test_compile_check_on_postgres(pg_dbs, sql, category):
    _, ro_dsn = pg_dbs
    res = compile_check(sql, db=ro_dsn)
    assert res.category == category, res.error


@pytest.mark.postgres
def test_prepare_is_rolled_back(pg_dbs):
    _, ro_dsn = pg_dbs
    assert compile_check("SELECT a FROM t", db=ro_dsn).ok
    assert compile_check("SELECT a FROM t", db=ro_dsn).ok  # the prepared name is free again


def test_compile_check_on_an_unreachable_postgres_is_an_error():
    with pytest.raises(SQLError, match="cannot connect to PostgreSQL"):
        compile_check("SELECT 1", db="postgresql://nobody@127.0.0.1:1/none", timeout_s=1)


@pytest.mark.parametrize("dialect", ["sqlite", "duckdb", "postgres"])
def test_scratch_database_has_the_tables_and_no_rows(tmp_path, dialect):
    ddl = ('CREATE TABLE "order items" (id INTEGER PRIMARY KEY, price NUMERIC(10, 2), at TIMESTAMP);\n'
           "CREATE INDEX i ON x (y);\nINSERT INTO x VALUES (1);\nCREATE TABLE t (a INT, b VARCHAR(20));")
    path = scratch_database(ddl, dialect=dialect, directory=tmp_path)
    assert compile_check('SELECT "price", "at" FROM "order items" JOIN t ON t.a = id', db=path,
                         dialect="duckdb" if dialect == "postgres" else dialect).ok
    if path.suffix == ".sqlite":
        conn = sqlite3.connect(path)
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master ORDER BY name")] == ["order items", "t"]
        conn.close()


def test_scratch_database_needs_a_table(tmp_path):
    with pytest.raises(SQLError, match="no CREATE TABLE statement"):
        scratch_database("SELECT 1;", directory=tmp_path)
