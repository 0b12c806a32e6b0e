"""sqltune.sql.analyze: parse failures, statement kinds, read-only allow-list, grounding."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from sql_helpers import FIXTURES

from sqltune.errors import SQLError
from sqltune.sql import Schema, analyze

SCHEMAS = {
    "spider": """
        CREATE TABLE singer (singer_id INT PRIMARY KEY, name TEXT, age INT, country TEXT);
        CREATE TABLE concert (concert_id INT, singer_id INT REFERENCES singer(singer_id), year INT,
                              stadium_id INT);
        CREATE TABLE "stadium" ("stadium_id" INT, "name" VARCHAR(40), capacity INT);
    """,
}
CASES = yaml.safe_load((FIXTURES / "analyze.yaml").read_text())


@pytest.mark.parametrize("case", CASES, ids=[f"{i}:{c['sql'][:40]}" for i, c in enumerate(CASES)])
def test_analyze_cases(case):
    dialect = case.get("dialect", "sqlite")
    schema = SCHEMAS[case["schema"]] if case.get("schema") else None
    result = analyze(case["sql"], dialect=dialect, schema=schema)
    for key, want in case["expect"].items():
        assert getattr(result, key) == want, f"{key}: got {getattr(result, key)!r}, want {want!r} ({result})"
    if case.get("error"):
        assert result.error
    elif result.parseable:
        assert result.error is None
    if not result.read_only:
        assert result.reasons or not result.parseable


def test_unknown_dialect_names_choices():
    with pytest.raises(SQLError, match="sqlite, duckdb, postgres"):
        analyze("SELECT 1", dialect="oracle")


def test_postgresql_alias_accepted():
    assert analyze("SELECT 1", dialect="postgresql").dialect == "postgres"


def test_schema_object_and_mapping():
    schema = Schema.from_ddl(SCHEMAS["spider"], "sqlite")
    assert list(schema.tables) == ["singer", "concert", "stadium"]
    assert schema.tables["stadium"]["name"].upper().startswith("VARCHAR")
    assert schema.has_column("SINGER", "Name")
    a = analyze("SELECT bogus FROM singer", dialect="sqlite", schema=schema)
    assert a.unknown_columns == ["bogus"]
    b = analyze("SELECT bogus FROM singer", dialect="sqlite", schema={"singer": ["name"]})
    assert b.unknown_columns == ["bogus"]


def test_import_does_not_pull_heavy_modules():
    code = ("import sqltune.sql, sys; "
            "assert 'torch' not in sys.modules and 'ray' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True)
