"""In-memory databases built from CREATE/INSERT context (sql-create-context, gretel), and the sandbox on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from sql_helpers import run_bounded

from sqltune.errors import SQLError
from sqltune.sql.context_db import (
    build_context_db,
    context_execution_match,
    execute_in_context,
    has_context,
    match_anywhere,
)

FIXTURES = Path(__file__).parent / "fixtures"
DATA = Path(__file__).resolve().parents[1] / "data" / "fixtures"
HOSTILE = yaml.safe_load((FIXTURES / "context_hostile.yaml").read_text())


def test_gretel_contexts_build_with_their_rows():
    rows = [json.loads(line) for line in (DATA / "gretel.jsonl").read_text().splitlines()]
    for row in rows:
        db = build_context_db(row["sql_context"])
        assert db.tables and not db.skipped, (row["id"], db)
    res = execute_in_context("SELECT name FROM salesperson ORDER BY salesperson_id", context=rows[0]["sql_context"])
    assert res.ok and res.rows == [("John Doe",), ("Jane Smith",)] and res.engine == "sqlite-context"


def test_sql_create_context_gives_empty_tables():
    row = json.loads((DATA / "sql_create_context.jsonl").read_text().splitlines()[0])
    m = context_execution_match(row["answer"], row["answer"], context=row["context"])
    assert m.match and m.gold.rows == [(0,)]
    wrong = context_execution_match("SELECT COUNT(*) FROM head WHERE nope > 1", row["answer"], context=row["context"])
    assert not wrong.match and wrong.category == "unknown_identifier"


@pytest.mark.parametrize("case", HOSTILE["cases"], ids=lambda c: c["sql"][:40])
def test_hostile_queries_cost_the_query_only(case):
    res = run_bounded(lambda: execute_in_context(case["sql"], context=HOSTILE["context"], timeout_s=0.5), case["sql"])
    assert res.category == case["category"], res
    again = execute_in_context("SELECT COUNT(*) FROM ships", context=HOSTILE["context"])
    assert again.rows == [(2,)]  # each query runs on its own copy: nothing carries over
    assert not Path("/tmp/sqltune-context-attach.db").exists()


def test_context_statements_run_under_their_own_sandbox():
    ctx = ("CREATE TABLE t (a INT); ATTACH DATABASE '/tmp/sqltune-context-x.db' AS x; PRAGMA writable_schema = 1; "
           "INSERT INTO t VALUES (1), (2); CREATE VIRTUAL TABLE v USING fts5(body)")
    db = build_context_db(ctx)
    assert db.tables == ("t",) and db.statements == 5
    assert len(db.skipped) == 3 and all("not authorized" in s for s in db.skipped), db.skipped
    assert execute_in_context("SELECT SUM(a) FROM t", context=ctx).rows == [(3,)]
    assert not Path("/tmp/sqltune-context-x.db").exists()


def test_dialect_statements_are_transpiled_and_bad_contexts_are_results_not_crashes():
    ctx = "CREATE TABLE sales (id INT, amount DECIMAL(10,2), sold DATE); INSERT INTO sales VALUES (1, 9.5, DATE '2021-01-02')"
    assert execute_in_context("SELECT amount FROM sales", context=ctx, dialect="postgres").rows == [(9.5,)]
    with pytest.raises(SQLError, match="defines no table"):
        build_context_db("SELECT 1")
    res = execute_in_context("SELECT 1", context="INSERT INTO nowhere VALUES (1)")
    assert res.category == "runtime" and "no context database" in res.error
    assert not has_context("") and has_context("create  TABLE x (a int)")


def test_match_anywhere_prefers_the_database_file(tmp_path):
    import sqlite3

    path = tmp_path / "db.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE ships (id INT)")
        conn.execute("INSERT INTO ships VALUES (1), (2), (3)")
    q = "SELECT COUNT(*) FROM ships"
    on_file = match_anywhere(q, q, db=str(path), context=HOSTILE["context"])
    on_context = match_anywhere(q, q, db=None, context=HOSTILE["context"])
    assert on_file.gold.rows == [(3,)] and on_context.gold.rows == [(2,)]
    assert match_anywhere(q, q, db=None, context="no ddl here") is None
