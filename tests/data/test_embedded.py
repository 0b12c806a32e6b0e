"""The embedded dataset: size, balance, determinism, and every gold query agreeing on SQLite, DuckDB and
PostgreSQL (real engines, the local server started by scripts/postgres.sh)."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from sqltune.data.embedded import (
    CATEGORIES,
    TEMPLATES,
    build_embedded,
    embedded_examples,
    full_schema_ddl,
    load_examples,
    load_postgres,
    render,
    results_equal,
)
from sqltune.data.embedded.build import main as cli_main
from sqltune.data.embedded.questions import is_ordered, tables_of
from sqltune.data.record import Example
from sqltune.errors import ConfigError, DataError, SQLError

DETERMINISTIC_FILES = ("examples.jsonl", "schema.sql", "dataset.json", "warehouse.sqlite")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_embedded(tmp_path_factory.mktemp("embedded"), seed=0)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def test_files_and_metadata(built):
    root = built.root
    for name in ("warehouse.sqlite", "warehouse.duckdb", "examples.jsonl", "schema.sql", "dataset.json"):
        assert (root / name).is_file(), name
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["seed"] == 0 and meta["version"] and meta["n_examples"] == len(built.examples)
    assert sum(meta["categories"].values()) == len(built.examples)
    assert meta["tables"]["customers"] >= 300 and 2000 <= meta["tables"]["orders"] <= 3000
    assert load_examples(root / "examples.jsonl") == built.examples
    schema = (root / "schema.sql").read_text()
    for table in ("customers", "products", "orders", "order_items", "subscriptions", "churn_predictions",
                  "forecast_predictions"):
        assert f"CREATE TABLE {table} (" in schema
    assert "DATE" in full_schema_ddl("postgres") and "DOUBLE" in full_schema_ddl("duckdb")


def test_size_categories_difficulty(built):
    exs = built.examples
    assert len(exs) >= 1500
    counts = Counter(e.category for e in exs)
    assert set(CATEGORIES) <= set(counts) and len(counts) >= 10
    assert all(n >= 50 for n in counts.values()), counts
    assert {e.difficulty for e in exs} == {"easy", "medium", "hard"}
    assert 40 <= len(TEMPLATES) <= 70
    per_template = Counter(e.extra["template"] for e in exs)
    assert len(per_template) == len(TEMPLATES)


def test_no_duplicates_and_fields(built):
    exs = built.examples
    assert len({e.id for e in exs}) == len(exs)
    assert len({_norm(e.question) for e in exs}) == len(exs), "duplicate questions"
    assert len({_norm(e.sql) for e in exs}) == len(exs), "duplicate gold SQL"
    combos = {(e.extra["template"], json.dumps(e.extra["slots"], sort_keys=True)) for e in exs}
    assert len(combos) == len(exs), "a (template, slots) combination appears twice"
    empty = sum(e.extra["empty_result"] for e in exs)
    assert empty <= 0.05 * len(exs)
    for e in exs:
        assert isinstance(e, Example) and e.dialect == "sqlite" and e.db == "warehouse.sqlite"
        assert set(e.extra["sql_by_dialect"]) == {"sqlite", "duckdb", "postgres"}
        assert e.extra["sql_by_dialect"]["sqlite"] == e.sql and "@" not in e.sql
        # the prompt schema holds exactly the tables the gold query uses
        tables = tables_of(e.sql)
        assert [line.split(" ")[2] for line in e.schema.splitlines()] == tables
        # slot values are copied verbatim into question and SQL
        for value in e.extra["slots"].values():
            assert str(value) in e.question, (e.question, value)
            assert str(value) in e.sql, (e.sql, value)


def test_deterministic_and_cli(built, tmp_path):
    out = tmp_path / "again"
    assert cli_main(["build", "--out", str(out), "--seed", "0"]) == 0
    for name in DETERMINISTIC_FILES:
        assert (out / name).read_bytes() == (built.root / name).read_bytes(), name
    # DuckDB files embed storage details; compare their contents instead
    a, b = duckdb.connect(str(built.duckdb_path), read_only=True), duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    try:
        for table in ("customers", "orders", "order_items", "churn_predictions", "forecast_predictions"):
            q = f"SELECT * FROM {table} ORDER BY 1"
            assert a.execute(q).fetchall() == b.execute(q).fetchall()
    finally:
        a.close()
        b.close()
    in_memory = embedded_examples(seed=0, n=len(built.examples))
    assert in_memory == built.examples
    other = embedded_examples(seed=1, n=200)
    assert [e.question for e in other] != [e.question for e in built.examples[:200]]


def test_sqlite_and_duckdb_agree(built):
    lite = sqlite3.connect(built.sqlite_path)
    duck = duckdb.connect(str(built.duckdb_path), read_only=True)
    try:
        for e in built.examples:
            sql = e.extra["sql_by_dialect"]
            a = lite.execute(sql["sqlite"]).fetchall()
            b = duck.execute(sql["duckdb"]).fetchall()
            assert results_equal(a, b, ordered=e.extra["ordered"]), (e.id, e.sql, a[:5], b[:5])
            if not e.extra["empty_result"]:
                assert a, (e.id, e.sql)
    finally:
        lite.close()
        duck.close()


@pytest.mark.postgres
def test_postgres_agrees_with_sqlite(built, postgres_db):
    import psycopg

    admin, _, dbname = postgres_db.rpartition("/")
    dsn = load_postgres(f"{admin}/postgres", dbname, seed=0)
    assert dsn == postgres_db
    lite = sqlite3.connect(built.sqlite_path)
    failures = []
    try:
        with psycopg.connect(dsn, autocommit=True) as pg:
            for e in built.examples:
                a = lite.execute(e.sql).fetchall()
                try:
                    c = pg.execute(e.extra["sql_by_dialect"]["postgres"]).fetchall()
                except psycopg.Error as exc:
                    failures.append((e.id, e.extra["template"], str(exc).splitlines()[0]))
                    continue
                if not results_equal(a, c, ordered=e.extra["ordered"]):
                    failures.append((e.id, e.extra["template"], a[:3], c[:3]))
    finally:
        lite.close()
    assert not failures, failures[:10]


def test_render_macros_and_compare():
    sql = "SELECT @ROUND(AVG(@DAYS(end_date, start_date)), 1) FROM s WHERE @Y(d) = 2024 AND @YM(d) = '2024-01'"
    lite = render(sql, "sqlite")
    assert "julianday(end_date) - julianday(start_date)" in lite and "strftime('%Y', d)" in lite
    pg = render(sql, "postgres")
    assert "ROUND(CAST(AVG((end_date - start_date)) AS NUMERIC), 1)" in pg and "TO_CHAR(d, 'YYYY-MM')" in pg
    assert "strftime(d, '%Y-%m')" in render(sql, "duckdb")
    with pytest.raises(SQLError, match="unknown dialect 'mysql'"):
        render(sql, "mysql")
    with pytest.raises(SQLError, match="unknown macro @NOPE"):
        render("SELECT @NOPE(x)", "sqlite")
    assert results_equal([(1, "a"), (2.0000000001, None)], [(2, None), (1, "a")])
    assert not results_equal([(1,), (2,)], [(2,), (1,)], ordered=True)
    assert is_ordered("SELECT a FROM (SELECT a FROM t ORDER BY a) x ORDER BY a")
    assert not is_ordered("SELECT a FROM (SELECT a FROM t ORDER BY a LIMIT 1) x")


def test_templates_phrasings_share_slots():
    import string

    fmt = string.Formatter()
    for t in TEMPLATES:
        assert 2 <= len(t.phrasings) <= 4, t.id
        sql_slots = {f[1] for f in fmt.parse(t.sql) if f[1]}
        for phrasing in t.phrasings:
            assert {f[1] for f in fmt.parse(phrasing) if f[1]} == sql_slots, (t.id, phrasing)


def _one_per_template(examples: list[Example]) -> list[Example]:
    seen: dict[str, Example] = {}
    for e in examples:
        seen.setdefault(e.extra["template"], e)
    return list(seen.values())


@pytest.mark.postgres
def test_sandboxed_execute_accepts_every_template(built, postgres_db):
    """One example per template through sqltune.sql.execute (the sandbox evaluation uses) on all engines.

    The sandbox opens a fresh connection per query (about 0.1 s for DuckDB), so the full 1,600 x 3
    cross-engine check above uses plain connections and this test covers every query shape."""
    from sqltune.sql.execute import execute
    from sqltune.sql.postgres import ensure_readonly_role

    admin, _, dbname = postgres_db.rpartition("/")
    load_postgres(f"{admin}/postgres", dbname, seed=0)
    dbs = {"sqlite": str(built.sqlite_path), "duckdb": str(built.duckdb_path),
           "postgres": ensure_readonly_role(f"{admin}/postgres", dbname)}
    sample = _one_per_template(built.examples)
    assert len(sample) == len(TEMPLATES)
    for e in sample:
        results = {}
        for dialect, db in dbs.items():
            res = execute(e.extra["sql_by_dialect"][dialect], db=db, dialect=dialect)
            assert res.ok, (e.extra["template"], dialect, res.category, res.error)
            results[dialect] = res.rows
        ordered = e.extra["ordered"]
        assert results_equal(results["sqlite"], results["duckdb"], ordered=ordered), e.extra["template"]
        assert results_equal(results["sqlite"], results["postgres"], ordered=ordered), e.extra["template"]


def test_bad_arguments_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="n_questions must be a positive integer"):
        build_embedded(tmp_path / "x", n_questions=0)
    with pytest.raises(ConfigError, match="seed must be an integer"):
        embedded_examples(seed="zero", n=5)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        build_embedded(not_a_dir)
    with pytest.raises(DataError, match="no such file; build it with"):
        load_examples(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "q", "schema": "", "sql": "SELECT 1"}\nnot json\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not an Example"):
        load_examples(bad)
    with pytest.raises(ConfigError, match="database name"):
        load_postgres("postgresql://postgres@127.0.0.1:1/postgres", "bad-name;")
