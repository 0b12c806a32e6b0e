"""normalize / exact_match / ast_equivalent / transpile."""

from __future__ import annotations

import pytest

from sqltune.errors import SQLError
from sqltune.sql import ast_equivalent, exact_match, normalize, transpile


def test_normalize_canonical():
    a = normalize('select  "Name" from Singer where age>3;', "sqlite")
    b = normalize("SELECT name\nFROM singer\nWHERE age > 3", "sqlite")
    assert a == b == "SELECT name FROM singer WHERE age > 3"


def test_normalize_fallback_for_unparseable():
    assert normalize("SELEC  Name\n FROM x ;", "sqlite") == "selec name from x"


def test_exact_match():
    assert exact_match("select count(*) from singer;", "SELECT COUNT(*) FROM singer", "sqlite")
    assert not exact_match("SELECT count(*) FROM singer", "SELECT count(*) FROM concert", "sqlite")
    assert exact_match("SELECT 'A'", "SELECT 'A'", "postgres")
    assert not exact_match("SELECT 'A'", "SELECT 'a'", "postgres")  # string literals keep their case


@pytest.mark.parametrize("pred,gold,want", [
    ("SELECT T1.name FROM singer AS T1 WHERE T1.age > 3 AND T1.country = 'x'",
     "select s.name from singer s where s.country='x' and s.age>3", True),
    ("SELECT name FROM singer WHERE age > 3", "SELECT singer.name FROM singer WHERE singer.age > 3", True),
    ("SELECT count(*) AS c FROM t ORDER BY c", "SELECT COUNT(*) FROM t ORDER BY COUNT(*)", True),
    ("SELECT a FROM t WHERE 1 = a", "SELECT a FROM t WHERE a = 1", True),
    ("SELECT x.a, y.a FROM t x JOIN t y ON x.id = y.pid", "SELECT p.a, q.a FROM t p JOIN t q ON p.id = q.pid", True),
    ("SELECT x.a, y.a FROM t x JOIN t y ON x.id = y.pid", "SELECT q.a, p.a FROM t p JOIN t q ON p.id = q.pid", False),
    ("SELECT a FROM t WHERE (a = 1 OR b = 2) AND c = 3", "SELECT a FROM t WHERE a = 1 OR b = 2 AND c = 3", False),
    ("SELECT a FROM t WHERE a > 1", "SELECT a FROM t WHERE a < 1", False),
    ("SELECT a FROM t", "SELECT b FROM t", False),
])
def test_ast_equivalent(pred, gold, want):
    assert ast_equivalent(pred, gold, "sqlite") is want


def test_ast_equivalent_never_raises():
    assert ast_equivalent("SELEC x", "SELECT 1", "sqlite") is False
    assert ast_equivalent("", "", "sqlite") is False
    assert ast_equivalent("garbage", "garbage", "sqlite") is False
    assert ast_equivalent(None, "SELECT 1", "sqlite") is False  # type: ignore[arg-type]
    assert ast_equivalent("SELECT 1", "SELECT 1", "nope") is False


def test_transpile():
    out = transpile("SELECT strftime('%Y', d) FROM t LIMIT 3", "sqlite", "postgres")
    assert "TO_CHAR" in out.upper()
    assert transpile("SELECT 1; SELECT 2", "sqlite", "duckdb") == "SELECT 1;\nSELECT 2"
    with pytest.raises(SQLError):
        transpile("SELECT (", "sqlite", "duckdb")
    with pytest.raises(SQLError, match="valid choices"):
        transpile("SELECT 1", "sqlite", "oracle")


def test_transpile_sqlite_double_quoted_strings():
    sql = 'SELECT name FROM singer WHERE country = "France" AND name IN ("A", "B") AND "age" > 3'
    out = transpile(sql, "sqlite", "postgres")
    assert "country = 'France'" in out and "IN ('A', 'B')" in out and '"age" > 3' in out
    ddl = "CREATE TABLE singer (name TEXT, country TEXT, age INT)"
    out = transpile('SELECT "name" FROM singer WHERE "Bob" = name', "sqlite", "duckdb", schema=ddl)
    assert out == "SELECT \"name\" FROM singer WHERE 'Bob' = name"


def test_execute_transpiles_sqlite_strings_on_duckdb(duckdb_db):
    from sqltune.sql import execute

    res = execute('SELECT a FROM t WHERE b = "y"', db=str(duckdb_db), dialect="sqlite")
    assert res.ok and res.rows == [(2,)]
