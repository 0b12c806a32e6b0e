"""Killable execution: one long builtin call, which the engine's own interrupt cannot stop, ends at the
timeout in a worker process; the pool replaces the worker and goes on."""

from __future__ import annotations

import sqlite3

import duckdb
import pytest
from sql_helpers import run_bounded

from sqltune.errors import SQLError
from sqltune.sql import execute
from sqltune.sql.compile import compile_check
from sqltune.sql.isolated import SandboxPool

# One call of SQLite's instr() over a 40 MB string: minutes inside a single builtin, where the progress
# handler never runs.
LONG_BUILTIN = "SELECT instr(printf('%.*c', 40000000, 'a'), printf('%.*c', 100000, 'a') || 'b') FROM t"


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=2, grace_s=1.0) as p:
        yield p


@pytest.fixture()
def dbs(tmp_path):
    lite = tmp_path / "t.sqlite"
    with sqlite3.connect(lite) as conn:
        conn.execute("CREATE TABLE t (a INTEGER)")
        conn.execute("INSERT INTO t VALUES (1), (2), (3)")
    duck = tmp_path / "t.duckdb"
    conn = duckdb.connect(str(duck))
    conn.execute("CREATE TABLE t (a INTEGER)")
    conn.execute("INSERT INTO t VALUES (1), (2), (3)")
    conn.close()
    return str(lite), str(duck)


def test_long_builtin_call_is_killed_at_the_timeout(pool, dbs):
    lite, _ = dbs
    kills = pool.kills
    res = run_bounded(lambda: execute(LONG_BUILTIN, db=lite, timeout_s=1.0, pool=pool), "a long builtin call")
    assert res.category == "timeout" and "worker process was killed" in res.error
    assert pool.kills == kills + 1
    # The pool replaced the worker: the next queries run as before.
    for _ in range(3):
        assert execute("SELECT count(*) FROM t", db=lite, pool=pool).rows == [(3,)]


def test_results_and_refusals_match_in_process(pool, dbs):
    for db in dbs:
        for sql in ("SELECT a FROM t WHERE a > 1 ORDER BY a", "SELECT nope FROM t", "DROP TABLE t", "SELEC 1"):
            here, there = execute(sql, db=db), execute(sql, db=db, pool=pool)
            assert (there.rows, there.category) == (here.rows, here.category), (db, sql)


def test_engine_compile_refuses_what_sqlglot_accepts(pool, dbs):
    lite, duck = dbs
    bad = "SELECT a FROM t GROUP BY a WHERE a > 1"
    for db in dbs:
        assert compile_check(bad, db=db, pool=pool).category == "syntax", db
        assert compile_check("SELECT a FROM t WHERE a > 1 GROUP BY a", db=db, pool=pool).ok, db


def test_missing_file_is_a_result_and_closed_pool_refuses(tmp_path):
    p = SandboxPool(workers=1)
    try:
        # A generous timeout: the answer is immediate, but a fresh worker's start-up counts against it.
        res = p.run("SELECT 1", db=str(tmp_path / "none.sqlite"), engine="sqlite", timeout_s=60, max_rows=10)
        assert res.category == "runtime" and "database file not found" in res.error
    finally:
        p.close()
    with pytest.raises(SQLError, match="used after close"):
        p.run("SELECT 1", db="x.sqlite", engine="sqlite", timeout_s=1, max_rows=1)
    with pytest.raises(SQLError, match="workers must be >= 1, got 0"):
        SandboxPool(workers=0)
