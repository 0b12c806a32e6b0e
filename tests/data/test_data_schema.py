"""Schema rendering: tables.json -> DDL, live SQLite/DuckDB/PostgreSQL introspection, token budgets."""

from __future__ import annotations

import json
import sqlite3

import pytest
import sqlglot

from sqltune.data import ddl_from_database, ddl_from_tables_json, fit_schema
from sqltune.data.schema import approx_token_count, select_tables
from sqltune.errors import DataError


def test_every_spider_schema_parses_and_executes(spider_dir):
    entries = json.loads((spider_dir / "tables.json").read_text())
    assert len(entries) == 166
    for entry in entries:
        ddl = ddl_from_tables_json(entry)
        parsed = sqlglot.parse(ddl, read="sqlite")
        tables = {t for t in entry["table_names_original"] if not t.lower().startswith("sqlite_")}
        assert len(parsed) == len(tables), entry["db_id"]
        conn = sqlite3.connect(":memory:")
        conn.executescript(ddl)  # valid SQLite, not just parseable
        created = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {t.lower() for t in created} == {t.lower() for t in tables}, entry["db_id"]


def test_tables_json_keys_and_quoting():
    entry = {
        "db_id": "x",
        "table_names_original": ["order", "Line Items"],
        "column_names_original": [[-1, "*"], [0, "id"], [0, "group"], [1, "order_id"], [1, "line no"], [1, "qty"]],
        "column_types": ["text", "number", "text", "number", "number", "number"],
        "primary_keys": [1, [3, 4]],  # BIRD nests composite keys
        "foreign_keys": [[3, 1]],
    }
    ddl = ddl_from_tables_json(entry)
    assert 'CREATE TABLE "order" (' in ddl and '"group" TEXT' in ddl
    assert 'CREATE TABLE "Line Items" (' in ddl
    assert 'PRIMARY KEY (order_id, "line no")' in ddl
    assert 'FOREIGN KEY (order_id) REFERENCES "order"(id)' in ddl
    sqlite3.connect(":memory:").executescript(ddl)


def test_compact_ddl_of_the_warehouse_is_the_embedded_prompt_schema(tmp_path):
    """What the server puts in a prompt for the built warehouse is the text the examples were made with."""
    from sqltune.data.embedded import build_embedded, warehouse

    built = build_embedded(tmp_path / "embedded")
    live = ddl_from_database(built.root / "warehouse.sqlite", style="compact")
    assert live == warehouse.compact_schema(warehouse.TABLE_NAMES, "sqlite")
    for ex in built.examples[:50]:
        assert select_tables(live, ex.extra["tables"]) == ex.schema


def test_select_tables(tmp_path):
    ddl = "CREATE TABLE a (x INTEGER);\nCREATE TABLE b (y TEXT);\nCREATE TABLE c (z REAL);"
    assert select_tables(ddl, ["C", "a"]) == "CREATE TABLE a (x INTEGER);\nCREATE TABLE c (z REAL);"
    with pytest.raises(DataError, match="unknown table.*'d'.*has: a, b, c"):
        select_tables(ddl, ["a", "d"])


def test_ddl_from_database_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ddl_from_database(tmp_path / "missing.sqlite")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a database at all")
    with pytest.raises(DataError, match="neither a SQLite nor a DuckDB file"):
        ddl_from_database(junk)


# -------------------------------------------------------------------------------------- fit_schema


def _spider_schema(spider_dir, db_id):
    entries = {e["db_id"]: e for e in json.loads((spider_dir / "tables.json").read_text())}
    return ddl_from_tables_json(entries[db_id])


def test_fit_schema_within_budget_is_unchanged(spider_dir):
    ddl = _spider_schema(spider_dir, "concert_singer")
    assert fit_schema(ddl, max_tokens=10_000) == ddl


@pytest.mark.parametrize("budget", [5, 20, 40, 60, 90, 120, 200])
def test_fit_schema_respects_budget_and_whole_statements(spider_dir, budget):
    ddl = _spider_schema(spider_dir, "concert_singer")
    out = fit_schema(ddl, max_tokens=budget, question="How many singers are there in each concert?")
    assert approx_token_count(out) <= budget
    if out:
        parsed = sqlglot.parse(out, read="sqlite")
        assert all(p is not None for p in parsed)
        sqlite3.connect(":memory:").executescript(out)


def test_fit_schema_keeps_relevant_tables(spider_dir):
    ddl = _spider_schema(spider_dir, "concert_singer")
    out = fit_schema(ddl, max_tokens=70, question="Show the age of every singer.")
    assert "CREATE TABLE singer (" in out
    assert "CREATE TABLE stadium (" not in out  # dropped: not mentioned, first in the file
    # whole tables first, then columns: a tight budget keeps the mentioned column 'Age'
    tight = fit_schema(ddl, max_tokens=22, question="Show the age of every singer.")
    assert tight.startswith("CREATE TABLE singer (") and "Age" in tight and "Song_release_year" not in tight
    assert approx_token_count(tight) <= 22
    sqlite3.connect(":memory:").executescript(tight)


def test_fit_schema_with_tokenizer_length_and_inserts():
    ddl = (
        "CREATE TABLE salesperson (salesperson_id INT, name TEXT, region TEXT); "
        "INSERT INTO salesperson VALUES (1, 'John; Doe', 'North'); "
        "CREATE TABLE timber_sales (sales_id INT, salesperson_id INT, volume REAL);"
    )
    count_chars = len  # any length function works, e.g. a tokenizer's
    out = fit_schema(ddl, max_tokens=160, count_tokens=count_chars, question="total timber volume")
    assert "INSERT" not in out and "CREATE TABLE salesperson" in out and "CREATE TABLE timber_sales" in out
    assert len(out) <= 160
    out = fit_schema(ddl, max_tokens=80, count_tokens=count_chars, question="total timber volume per sale")
    assert out.startswith("CREATE TABLE timber_sales") and len(out) <= 80
    assert fit_schema(ddl, max_tokens=3) == ""
