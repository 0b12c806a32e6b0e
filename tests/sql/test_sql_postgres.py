"""sqltune.sql.postgres against the real local server: databases and the read-only role."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.postgres


def test_create_database_and_readonly_role(postgres_admin_dsn):
    import psycopg

    from sqltune.sql import execute
    from sqltune.sql import postgres as pg

    name = f"t_{uuid.uuid4().hex[:10]}"
    dsn = pg.create_database(postgres_admin_dsn, name)
    try:
        assert dsn.endswith("/" + name)
        assert pg.create_database(postgres_admin_dsn, name) == dsn  # idempotent
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (a INT)")
            conn.execute("INSERT INTO t VALUES (1), (2)")
        ro = pg.ensure_readonly_role(postgres_admin_dsn, name)
        assert ro == pg.ensure_readonly_role(postgres_admin_dsn, name)  # idempotent
        assert "sqltune_ro@" in ro and ro.endswith("/" + name)
        # tables created after the grant are readable too (default privileges)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE later (b INT)")
        assert execute("SELECT count(*) FROM later", db=ro).rows == [(0,)]
        with psycopg.connect(ro, autocommit=True) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == "sqltune_ro"
            sup, createdb, createrole = conn.execute(
                "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone()
            assert not (sup or createdb or createrole)
            assert conn.execute("SELECT sum(a) FROM t").fetchone()[0] == 3
            # even outside sqltune's READ ONLY transaction the role cannot write or create
            for stmt in ("INSERT INTO t VALUES (3)", "CREATE TABLE x (a INT)", "CREATE TEMP TABLE x (a INT)",
                         "SET default_transaction_read_only = off; INSERT INTO t VALUES (3)"):
                with pytest.raises(psycopg.Error):
                    conn.execute(stmt)
            assert not conn.execute(
                "SELECT has_schema_privilege('public', 'CREATE') OR has_database_privilege(current_database(), 'CREATE') "
                "OR has_database_privilege(current_database(), 'TEMP')").fetchone()[0]
        drop = pg.create_database(postgres_admin_dsn, name, drop_existing=True)
        with psycopg.connect(drop) as conn:
            assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0
    finally:
        pg.drop_database(postgres_admin_dsn, name)


def test_bad_names_rejected(postgres_admin_dsn):
    from sqltune.errors import SQLError
    from sqltune.sql import postgres as pg

    with pytest.raises(SQLError, match="invalid PostgreSQL database name"):
        pg.create_database(postgres_admin_dsn, 'x"; DROP DATABASE postgres; --')


def test_dsn_with():
    from sqltune.sql.postgres import dsn_with

    base = "postgresql://postgres@127.0.0.1:54329/postgres?sslmode=disable"
    assert dsn_with(base, dbname="db1") == "postgresql://postgres@127.0.0.1:54329/db1?sslmode=disable"
    assert dsn_with(base, user="ro", password="p w") == "postgresql://ro:p%20w@127.0.0.1:54329/postgres?sslmode=disable"
    assert "dbname=db2" in dsn_with("host=127.0.0.1 port=54329 user=postgres dbname=postgres", dbname="db2")


def test_schema_from_postgres(pg_dbs):
    from sqltune.sql import Schema

    schema = Schema.from_db(pg_dbs[1])
    assert list(schema.columns("t")) == ["a", "b"]


def test_unreachable_server_is_a_named_error_without_the_password():
    from sqltune.errors import SQLError
    from sqltune.sql import Schema
    from sqltune.sql.postgres import create_database, ensure_readonly_role

    dsn = "postgresql://postgres:secret@127.0.0.1:1/postgres"
    for call in (lambda: create_database(dsn, "x"), lambda: ensure_readonly_role(dsn, "x"),
                 lambda: Schema.from_db(dsn)):
        with pytest.raises(SQLError, match=r"PostgreSQL .*postgres@127\.0\.0\.1:1/") as err:
            call()
        assert "secret" not in str(err.value)
