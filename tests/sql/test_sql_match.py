"""sqltune.sql.execution_match: ordering, multisets, float tolerance, NULLs, failing pred/gold."""

from __future__ import annotations

from decimal import Decimal

import pytest

from sqltune.sql import execution_match, results_equal

ENGINES = ["sqlite", "duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]


def _db(request, engine):
    if engine == "postgres":
        return request.getfixturevalue("pg_dbs")[1]
    return str(request.getfixturevalue(f"{engine}_db"))


@pytest.mark.parametrize("engine", ENGINES)
def test_execution_match(request, engine):
    db = _db(request, engine)

    def m(pred, gold, **kw):
        return execution_match(pred, gold, db=db, **kw)

    # unordered gold: row order does not matter
    r = m("SELECT a FROM t ORDER BY a DESC", "SELECT a FROM t")
    assert r.match and not r.ordered and r.category is None
    # ordered gold: order matters
    r = m("SELECT a FROM t ORDER BY a DESC", "SELECT a FROM t ORDER BY a")
    assert not r.match and r.ordered and r.category == "mismatch"
    assert m("SELECT a FROM t ORDER BY a", "SELECT a FROM t ORDER BY a").match
    # column names do not matter, column order does
    assert m("SELECT a AS x, b AS y FROM t", "SELECT a, b FROM t").match
    assert not m("SELECT b, a FROM t", "SELECT a, b FROM t").match
    # multiset: duplicates count
    assert not m("SELECT DISTINCT grp FROM nums", "SELECT grp FROM nums").match
    assert m("SELECT grp FROM nums ORDER BY id DESC", "SELECT grp FROM nums").match
    # floats with tolerance; int vs float
    assert m("SELECT sum(val) FROM nums", "SELECT 0.1 + 0.2 + 0.3 + 1.0").match
    assert m("SELECT 2", "SELECT 2.0").match
    assert m("SELECT avg(qty) FROM nums", "SELECT 3").match
    assert not m("SELECT 2.001", "SELECT 2.0").match
    assert m("SELECT 2.0000001", "SELECT 2.0", float_tol=1e-6).match
    # NULLs equal NULLs
    assert m("SELECT val FROM nums WHERE id >= 4", "SELECT val FROM nums WHERE id IN (4, 5)").match
    assert m("SELECT b FROM t WHERE a = 3", "SELECT NULL").match
    # empty results match each other
    assert m("SELECT a FROM t WHERE a > 10", "SELECT a FROM t WHERE a < 0").match
    # UNION ... ORDER BY on the outermost query is ordered
    r = m("SELECT a FROM t UNION SELECT id FROM nums ORDER BY 1 DESC", "SELECT a FROM t UNION SELECT id FROM nums ORDER BY 1")
    assert r.ordered and not r.match


@pytest.mark.parametrize("engine", ENGINES)
def test_failures(request, engine):
    db = _db(request, engine)
    r = execution_match("SELECT nosuch FROM t", "SELECT a FROM t", db=db)
    assert not r.match and not r.gold_failed and r.category == "unknown_identifier"
    assert r.pred.category == "unknown_identifier" and r.gold.ok
    r = execution_match("DROP TABLE t", "SELECT a FROM t", db=db)
    assert r.category == "not_read_only"
    r = execution_match("SELECT a FROM t", "SELECT nosuch FROM t", db=db)
    assert not r.match and r.gold_failed and r.gold_error and r.category == "gold_failed"
    assert r.pred.ok  # the prediction still ran, for reporting
    r = execution_match("SELECT a FROM t", "SELECT a FROM t ORDER BY a", db=db, max_rows=2)
    assert r.gold_failed  # a truncated gold result cannot be compared


def test_gold_result_reuse(sqlite_db):
    first = execution_match("SELECT 1", "SELECT a FROM t WHERE a = 1", db=str(sqlite_db))
    again = execution_match("SELECT 1", "ignored", db=str(sqlite_db), gold_result=first.gold)
    assert first.match and again.match


def test_results_equal_unit():
    assert results_equal([(1, Decimal("2.50"))], [(1.0, 2.5)], ordered=True)[0]
    assert results_equal([(True,)], [(1,)], ordered=False)[0]
    assert results_equal([(None, "a"), (1, "b")], [(1.0, "b"), (None, "a")], ordered=False)[0]
    assert not results_equal([(1,), (1,), (2,)], [(1,), (2,), (2,)], ordered=False)[0]
    assert not results_equal([(1, 2)], [(1,)], ordered=False)[0]
    assert not results_equal([(None,)], [(0,)], ordered=False)[0]
    assert not results_equal([("1",)], [(1,)], ordered=False)[0]
    assert results_equal([(float("nan"),)], [(float("nan"),)], ordered=False)[0]
    # tolerance survives sorting: near-equal keys in different orders
    pred = [(1.0000000001, "b"), (1.0, "a")]
    gold = [(1.0, "b"), (1.0000000001, "a")]
    assert results_equal(pred, gold, ordered=False, float_tol=1e-6)[0]
    ok, why = results_equal([(1,)], [(1,), (2,)], ordered=False)
    assert not ok and "row count" in why


def test_big_integers_keep_precision():
    big = 2**60
    assert not results_equal([(big,)], [(big + 1,)], ordered=False)[0]
    assert results_equal([(big,)], [(Decimal(big),)], ordered=False)[0]
    assert results_equal([(2,), (3.5,)], [(3.5000000001,), (2.0,)], ordered=False)[0]
