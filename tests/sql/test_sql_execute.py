"""sqltune.sql.execute on real SQLite/DuckDB files and PostgreSQL: results, categories, row cap."""

from __future__ import annotations

import pytest
from sql_helpers import ROWS_T, run_bounded

from sqltune.errors import SQLError
from sqltune.sql import execute


def _db(request, engine):
    if engine == "postgres":
        return request.getfixturevalue("pg_dbs")[1]
    return str(request.getfixturevalue(f"{engine}_db"))


ENGINES = ["sqlite", "duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("engine", ENGINES)
def test_select_and_categories(request, engine):
    db = _db(request, engine)
    ok = execute("select a, b from t order by a;", db=db)
    assert ok.ok and ok.error is None and ok.engine == engine
    assert ok.rows == ROWS_T and [c.lower() for c in ok.columns] == ["a", "b"]

    cases = {
        "SELECT nosuch FROM t": "unknown_identifier",
        "SELECT * FROM nosuch": "unknown_identifier",
        "SELECT t.nosuch FROM t": "unknown_identifier",
        "SELEC a FROM t": "syntax",
        "SELECT a FROM t WHERE": "syntax",
        "DELETE FROM t": "not_read_only",
        "SELECT 1; SELECT 2": "not_read_only",
    }
    for sql, want in cases.items():
        res = execute(sql, db=db)
        assert res.category == want, (sql, res)
        assert res.error and res.rows == []


@pytest.mark.parametrize("engine", ENGINES)
def test_engine_errors_without_precheck(request, engine):
    db = _db(request, engine)
    assert execute("SELEC 1", db=db, precheck=False).category == "syntax"
    assert execute("SELECT nosuch FROM t", db=db, precheck=False).category == "unknown_identifier"
    assert execute("SELECT * FROM nosuch", db=db, precheck=False).category == "unknown_identifier"
    assert execute("DELETE FROM t", db=db, precheck=False).category in {"not_read_only", "syntax"}


@pytest.mark.parametrize("engine", ENGINES)
def test_runtime_error(request, engine):
    db = _db(request, engine)
    sql = {"sqlite": "SELECT abs(-9223372036854775807 - 1)", "duckdb": "SELECT 'x'::INTEGER",
           "postgres": "SELECT 1 / 0"}[engine]
    res = execute(sql, db=db)
    assert res.category == "runtime", res


@pytest.mark.parametrize("engine", ENGINES)
def test_too_many_rows_returns_first_rows(request, engine):
    db = _db(request, engine)
    res = execute("SELECT a FROM t ORDER BY a", db=db, max_rows=2)
    assert res.category == "too_many_rows" and res.truncated
    assert res.rows == [(1,), (2,)]
    exact = execute("SELECT a FROM t ORDER BY a", db=db, max_rows=3)
    assert exact.ok and not exact.truncated and len(exact.rows) == 3


@pytest.mark.parametrize("engine", ENGINES)
def test_timeout(request, engine):
    db = _db(request, engine)
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    res = run_bounded(lambda: execute(sql, db=db, timeout_s=0.5), f"an endless query on {engine}")
    assert res.category == "timeout", res
    assert res.error.startswith("timed out after 0.5s") or "interrupted" in res.error.lower(), res
    assert res.rows == []


def test_dialect_inference_and_transpile(sqlite_db, duckdb_db):
    assert execute("SELECT 1", db=str(sqlite_db)).engine == "sqlite"
    assert execute("SELECT 1", db=str(duckdb_db)).engine == "duckdb"
    # written for SQLite, run on DuckDB: transpiled first
    res = execute("SELECT a || b FROM t WHERE b IS NOT NULL ORDER BY a", db=str(duckdb_db), dialect="sqlite")
    assert res.ok and res.rows == [("1x",), ("2y",)]


def test_engine_from_header_without_suffix(tmp_path, sqlite_db):
    copy = tmp_path / "plain_file"
    copy.write_bytes(sqlite_db.read_bytes())
    assert execute("SELECT count(*) FROM t", db=str(copy)).rows == [(3,)]


def test_bad_arguments_raise(sqlite_db, tmp_path):
    with pytest.raises(SQLError, match="valid choices"):
        execute("SELECT 1", db=str(sqlite_db), dialect="mysql")
    with pytest.raises(SQLError):
        execute("SELECT 1", db=str(tmp_path / "unknown.bin"))


def test_empty_sql(sqlite_db):
    assert execute("", db=str(sqlite_db)).category == "syntax"
    assert execute("  ;  ", db=str(sqlite_db)).category == "syntax"


def test_sqlite_wal_database_gets_no_side_files(tmp_path):
    import sqlite3

    d = tmp_path / "wal"
    d.mkdir()
    path = d / "w.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (a INTEGER)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()
    assert sorted(p.name for p in d.iterdir()) == ["w.sqlite"]
    assert execute("SELECT a FROM t", db=str(path)).rows == [(1,)]
    assert execute("DELETE FROM t", db=str(path), precheck=False).category == "not_read_only"
    assert sorted(p.name for p in d.iterdir()) == ["w.sqlite"]


def test_duckdb_file_open_elsewhere_in_process_is_a_clear_error(duckdb_db):
    import duckdb

    other = duckdb.connect(str(duckdb_db))
    try:
        with pytest.raises(SQLError, match="already open in this process"):
            execute("SELECT 1", db=str(duckdb_db))
    finally:
        other.close()
    assert execute("SELECT count(*) FROM t", db=str(duckdb_db)).rows == [(3,)]


@pytest.mark.parametrize("engine", ["sqlite", "duckdb"])
def test_concurrent_threads(request, engine):
    from concurrent.futures import ThreadPoolExecutor

    db = _db(request, engine)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: execute(f"SELECT count(*) + {i} FROM t", db=db), range(32)))
    assert [r.rows for r in results] == [[(3 + i,)] for i in range(32)]


def test_unreachable_postgres_raises():
    with pytest.raises(SQLError, match="cannot connect to PostgreSQL"):
        execute("SELECT 1", db="postgresql://nobody:secret@127.0.0.1:1/none", timeout_s=1.0)
