"""sqltune.sql.schema: the schema model, live-database introspection, rendering styles, splitting."""

from __future__ import annotations

import sqlite3

import duckdb
import pytest
import sqlglot
from sqltune.errors import SQLError
from sqltune.sql import Schema, split_statements
from sqltune.sql.schema import ddl_from_database, parse_table_text, quote_ident
from sqltune.sql.schema.text import column_type

SPIDER_DDL = """
    CREATE TABLE singer (singer_id INT PRIMARY KEY, name TEXT, age INT, country TEXT);
    CREATE TABLE concert (concert_id INT, singer_id INT REFERENCES singer(singer_id), year INT,
                          stadium_id INT);
    CREATE TABLE "stadium" ("stadium_id" INT, "name" VARCHAR(40), capacity INT);
"""


# ------------------------------------------------------------------------------------- the model


def test_schema_from_ddl_skips_broken_statements():
    ddl = "CREATE TABLE a (x INT); CREATE TABLE ((( broken; CREATE TABLE b (y TEXT);"
    schema = Schema.from_ddl(ddl, "sqlite")
    assert set(schema.tables) == {"a", "b"}


def test_schema_roundtrip_ddl():
    schema = Schema.from_ddl(SPIDER_DDL, "sqlite")
    again = Schema.from_ddl(schema.to_ddl("sqlite"), "sqlite")
    assert {t: list(c) for t, c in again.tables.items()} == {t: list(c) for t, c in schema.tables.items()}
    assert again == Schema.from_ddl(again.to_ddl("sqlite"), "sqlite")


def test_schema_from_db(sqlite_db, duckdb_db):
    for db in (sqlite_db, duckdb_db):
        schema = Schema.from_db(str(db))
        assert list(schema.columns("t")) == ["a", "b"]
        assert "val" in schema.columns("nums")


def test_from_db_names_what_a_query_can_name(tmp_path):
    """Views count for grounding a query; the DDL that recreates a database leaves them out."""
    path = tmp_path / "v.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT NOT NULL); CREATE VIEW v AS SELECT a FROM t;"
        )
    assert list(Schema.from_db(path).tables) == ["t", "v"]
    assert list(Schema.from_db(path, everything=True).tables) == ["t"]
    assert (
        ddl_from_database(path) == "CREATE TABLE t (\n  a INTEGER,\n  b TEXT NOT NULL,\n  PRIMARY KEY (a)\n);"
    )


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("plain", 'CREATE TABLE "order" (id INTEGER, "line no" INTEGER, qty);'),
        ("compact", 'CREATE TABLE "order" (id INTEGER PRIMARY KEY, "line no" INTEGER, qty TEXT);'),
        (
            "full",
            'CREATE TABLE "order" (\n  id INTEGER,\n  "line no" INTEGER NOT NULL,\n  qty TEXT,\n'
            "  PRIMARY KEY (id),\n  FOREIGN KEY (qty) REFERENCES q(id)\n);",
        ),
    ],
)
def test_rendering_styles(tmp_path, style, expected):
    path = tmp_path / "o.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            'CREATE TABLE q (id INTEGER PRIMARY KEY); CREATE TABLE "order" (id INTEGER PRIMARY KEY, '
            '"line no" INTEGER NOT NULL, qty REFERENCES q);'
        )
    schema = Schema.from_db(path)
    assert schema.defs[1].render(style) == expected
    joiner = "\n\n" if style == "full" else "\n"
    assert schema.to_ddl(style=style) == schema.defs[0].render(style) + joiner + expected
    with pytest.raises(SQLError, match="schema style 'wide' is not one of 'full', 'compact', 'plain'"):
        schema.to_ddl(style="wide")


def test_quote_ident():
    assert quote_ident("name") == "name"
    assert quote_ident("order") == '"order"' and quote_ident('a "b"') == '"a ""b"""'


# -------------------------------------------------------------------------------- introspection


def _check_introspected(ddl: str) -> None:
    assert "CREATE TABLE customers (" in ddl
    assert "CREATE TABLE orders (" in ddl
    assert "PRIMARY KEY (id)" in ddl
    assert "FOREIGN KEY (customer_id) REFERENCES customers(id)" in ddl
    assert '"order" ' in ddl  # reserved word quoted
    assert len(split_statements(ddl)) == 2


def test_ddl_from_sqlite(tmp_path):
    path = tmp_path / "shop.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
            CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT,
                                 customer_id INTEGER REFERENCES customers(id),
                                 "order" TEXT, total REAL);
            """
        )
    ddl = ddl_from_database(path)
    _check_introspected(ddl)
    assert "name TEXT NOT NULL" in ddl
    assert "sqlite_sequence" not in ddl
    sqlite3.connect(":memory:").executescript(ddl)
    sqlglot.parse(ddl, read="sqlite")


def test_ddl_from_duckdb(tmp_path):
    path = tmp_path / "shop.duckdb"
    conn = duckdb.connect(str(path))
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL)")
    conn.execute(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id), "
        '"order" VARCHAR, total DOUBLE)'
    )
    conn.close()
    ddl = ddl_from_database(str(path))
    _check_introspected(ddl)
    assert "name VARCHAR NOT NULL" in ddl and "total DOUBLE" in ddl
    fresh = duckdb.connect(":memory:")
    for stmt in split_statements(ddl):
        fresh.execute(stmt)
    sqlglot.parse(ddl, read="duckdb")


@pytest.mark.postgres
def test_ddl_from_postgres(postgres_db):
    import psycopg

    with psycopg.connect(postgres_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id serial PRIMARY KEY, name varchar(80) NOT NULL)")
        conn.execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id integer REFERENCES customers(id), "
            '"order" text, total numeric(10,2))'
        )
        conn.execute("CREATE SCHEMA sales")
        conn.execute("CREATE TABLE sales.regions (code text PRIMARY KEY)")
    ddl = ddl_from_database(postgres_db)
    assert "CREATE TABLE customers (" in ddl and "name CHARACTER VARYING(80) NOT NULL" in ddl
    assert "total NUMERIC(10,2)" in ddl
    assert "FOREIGN KEY (customer_id) REFERENCES customers(id)" in ddl
    assert "CREATE TABLE sales.regions (" in ddl
    sqlglot.parse(ddl, read="postgres")
    # the DDL recreates the tables on an empty database
    with psycopg.connect(postgres_db, autocommit=True) as conn:
        conn.execute("DROP TABLE orders, customers, sales.regions")
        for stmt in split_statements(ddl):
            conn.execute(stmt)


def test_compact_ddl_from_database(tmp_path):
    """The compact style is one line per table, no NOT NULL/foreign keys, composite keys kept."""
    path = tmp_path / "shop.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
            CREATE TABLE lines (order_id INTEGER, line INTEGER, customer_id INTEGER REFERENCES customers(id),
                                "order" TEXT, PRIMARY KEY (order_id, line));
            """
        )
    ddl = ddl_from_database(path, style="compact")
    assert ddl.splitlines() == [
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);",
        'CREATE TABLE lines (order_id INTEGER, line INTEGER, customer_id INTEGER, "order" TEXT, '
        "PRIMARY KEY (order_id, line));",
    ]
    sqlite3.connect(":memory:").executescript(ddl)
    with pytest.raises(SQLError, match="schema style 'tiny'"):
        ddl_from_database(path, style="tiny")


# ---------------------------------------------------------------------------------------- text


def test_split_statements():
    assert split_statements("SELECT ';'; SELECT 2;; -- c;\n /* x; */") == ["SELECT ';'", "SELECT 2"]
    assert split_statements("") == []
    assert split_statements("SELECT 'a;b' AS [x;y], `c;d`; /* only a comment */;") == [
        "SELECT 'a;b' AS [x;y], `c;d`"
    ]


def test_split_statements_keeps_terminators_and_comments():
    text = (
        "-- header; comment\nCREATE TABLE a (x TEXT DEFAULT ';');\n/* ; */ INSERT INTO a VALUES ('a;b');\n"
        "SELECT 1"
    )
    stmts = split_statements(text, keep_terminators=True)
    assert len(stmts) == 3
    assert stmts[0].startswith("-- header; comment") and stmts[0].endswith("DEFAULT ';');")
    assert stmts[2] == "SELECT 1"
    assert [s.rstrip(";") for s in stmts] == split_statements(text)


def test_split_statements_on_broken_input():
    assert split_statements("SELECT 'unterminated; SELECT 2") == ["SELECT 'unterminated", "SELECT 2"]


def test_parse_table_text_keeps_the_text():
    stmt = (
        'CREATE TABLE IF NOT EXISTS main."Line Items" (\n'
        "  id INT PRIMARY KEY,\n  note TEXT DEFAULT 'a, b',\n  CHECK (id > 0)\n);"
    )
    table = parse_table_text(stmt)
    assert table.name == "Line Items"
    assert table.columns == ["id", "note", ""]
    assert table.elements[1] == "note TEXT DEFAULT 'a, b'"
    assert table.render() == stmt and table.render([0, 1, 2]) == stmt
    assert table.primary_key() == {"id"}
    assert parse_table_text("INSERT INTO t VALUES (1)") is None


@pytest.mark.parametrize(
    ("element", "expected"),
    [
        ("id INTEGER PRIMARY KEY", "INTEGER"),
        ('"name" VARCHAR(40) NOT NULL', "VARCHAR(40)"),
        ("total DECIMAL(10, 2) CHECK (total > 0)", "DECIMAL(10, 2)"),
        ("score double   precision DEFAULT 0", "double precision"),
        ("note TEXT COLLATE NOCASE", "TEXT"),
        ("untyped", ""),
        ("kind ENUM('NOT NULL', 'x') NULL", "ENUM('NOT NULL', 'x')"),
    ],
)
def test_column_type_is_the_type_as_written(element, expected):
    assert column_type(element) == expected


def test_from_ddl_reads_what_sqlglot_cannot_parse():
    """One CREATE TABLE reader for the model and for prompt fitting: a dialect quirk that sqlglot rejects
    does not hide a table from grounding."""
    ddl = (
        "CREATE TABLE t (a INT, b TEXT DEFAULT (1 +)) PARTITION BY;\n"
        "CREATE TABLE u AS SELECT a AS x, b FROM t;"
    )
    assert not sqlglot_reads(ddl)
    schema = Schema.from_ddl(ddl)
    assert schema.tables == {"t": {"a": "INT", "b": "TEXT"}, "u": {"x": "", "b": ""}}


def sqlglot_reads(ddl: str) -> bool:
    try:
        return all(s is not None for s in sqlglot.parse(ddl.split(";")[0], read="sqlite"))
    except sqlglot.errors.SqlglotError:
        return False
