"""Schema linking: lexical and value matching, join bridges, the token budget, the embedding hook."""

from __future__ import annotations

import pytest

from sqltune.agent.linking import ValueIndex, gold_tables, link_schema, parse_tables, sample_values
from sqltune.data.schema import approx_token_count

SCHEMA = """
CREATE TABLE Student (StuID INTEGER PRIMARY KEY, LName TEXT, Fname TEXT, Age INTEGER, city_code TEXT);
CREATE TABLE Has_Pet (StuID INTEGER REFERENCES Student(StuID), PetID INTEGER REFERENCES Pets(PetID));
CREATE TABLE Pets (PetID INTEGER PRIMARY KEY, PetType TEXT, pet_age INTEGER, weight REAL);
CREATE TABLE Dorm (dormid INTEGER PRIMARY KEY, dorm_name TEXT, student_capacity INTEGER, gender TEXT);
CREATE TABLE Amenity (amenid INTEGER PRIMARY KEY, amenity_name TEXT);
"""


def test_parse_tables_reads_names_columns_and_references():
    tables = parse_tables(SCHEMA)
    assert [t.name for t in tables] == ["Student", "Has_Pet", "Pets", "Dorm", "Amenity"]
    assert tables[0].columns == ["StuID", "LName", "Fname", "Age", "city_code"]
    assert tables[1].references == ["Student", "Pets"]


def test_tables_named_in_the_question_are_kept_with_the_table_joining_them():
    res = link_schema("What is the average age of students who have pets?", SCHEMA)
    assert res.tables == ["Student", "Has_Pet", "Pets"]
    assert res.total_tables == 5 and res.reason == "requested"
    # the statements keep their own text and order
    assert res.schema.splitlines()[0].startswith("CREATE TABLE Student (StuID INTEGER PRIMARY KEY")


def test_values_link_a_table_the_question_only_names_by_a_value():
    values = ValueIndex()
    for v in ("dog", "cat"):
        values.add("Pets", "PetType", v)
    without = link_schema("Which students own a dog?", SCHEMA)
    with_values = link_schema("Which students own a dog?", SCHEMA, values=values)
    assert "Pets" not in without.tables
    assert with_values.tables == ["Student", "Has_Pet", "Pets"]
    assert with_values.value_matches == {"Pets": ["PetType"]}


def test_budget_keeps_the_best_tables_that_fit():
    one = next(s for s in SCHEMA.strip().splitlines() if s.startswith("CREATE TABLE Dorm"))
    budget = approx_token_count(one) + 2
    res = link_schema("Which dorm has the largest student capacity?", SCHEMA, max_tokens=budget, reason="budget")
    assert res.tables == ["Dorm"] and res.reason == "budget"
    assert approx_token_count(res.schema) <= budget


def test_budget_smaller_than_one_table_trims_its_columns():
    res = link_schema("Names of dorms?", SCHEMA, max_tokens=12)
    assert res.tables == ["Dorm"]
    assert "dormid INTEGER PRIMARY KEY" in res.schema and approx_token_count(res.schema) <= 12


def test_a_question_matching_nothing_keeps_every_table():
    res = link_schema("Tell me something interesting.", SCHEMA)
    assert len(res.tables) == 5


def test_embedding_hook_adds_its_similarity():
    calls = []

    def embed(texts):  # a stand-in embedding model: one dimension per table, the question points at Amenity
        calls.append(list(texts))
        return [[1.0 if "Amenity" in t or i == 0 else 0.0] for i, t in enumerate(texts)]

    res = link_schema("Which facilities are there?", SCHEMA, embedder=embed)
    assert res.tables == ["Amenity"]
    assert calls[0][0] == "Which facilities are there?" and len(calls[0]) == 6

    with pytest.raises(ValueError, match="returned 1 vectors for 6 texts"):
        link_schema("x", SCHEMA, embedder=lambda texts: [[1.0]])


def test_sample_values_reads_text_columns_read_only(warehouse):
    index = sample_values(str(warehouse.sqlite_path), per_column=20)
    hits = index.matches("How many customers are in the Enterprise segment?")
    assert "segment" in hits.get("customers", [])


@pytest.mark.parametrize(
    ("sql", "tables"),
    [
        ("SELECT a FROM t JOIN u ON t.id = u.id", ["t", "u"]),
        ("WITH x AS (SELECT * FROM Orders) SELECT * FROM x", ["orders"]),
        ("SELECT FROM", []),
    ],
)
def test_gold_tables(sql, tables):
    assert gold_tables(sql) == tables


def test_embedded_examples_keep_their_gold_tables_mostly(warehouse):
    """The recall figure in docs/benchmarks.md comes from benchmarks/bench_linking.py; here a floor on a
    slice of the embedded set, so a regression in matching shows up in CI."""
    from sqltune.data.schema import ddl_from_database

    ddl = ddl_from_database(warehouse.sqlite_path, style="compact")
    values = sample_values(str(warehouse.sqlite_path))
    examples = warehouse.examples[:200]
    gold = sum(len(ex.extra["tables"]) for ex in examples)
    hit = 0
    for ex in examples:
        kept = {t.lower() for t in link_schema(ex.question, ddl, values=values).tables}
        hit += len(kept & {t.lower() for t in ex.extra["tables"]})
    assert hit / gold >= 0.85
