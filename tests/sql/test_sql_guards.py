"""Each guard of the execution sandbox, pinned on its own.

The sandbox is layered (see sqltune.sql.execute): a static allow-list, then per-engine guards that
overlap. A write refused by two layers proves neither is needed, so every test here picks a case only
one guard stops, and fails when that guard alone is removed. scripts/mutate_sandbox.py removes each
guard in a copy of the library and runs these tests to show it (docs/testing.md records the run).
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import uuid
from pathlib import Path

import pytest
from sql_helpers import run_bounded

from sqltune.sql import execute
from sqltune.sql.context_db import execute_in_context

ENDLESS_COUNT = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
ENDLESS_ROWS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c"
ENGINES = ["sqlite", "duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _db(request, engine: str) -> str:
    if engine == "postgres":
        return request.getfixturevalue("pg_dbs")[1]
    return str(request.getfixturevalue(f"{engine}_db"))


# -- SQLite -----------------------------------------------------------------------------------------


def test_sqlite_read_only_open_leaves_a_live_wal_database_alone(tmp_path):
    """A WAL database copied with its pending -wal file (a live writer's state). A read-write connection
    checkpoints the WAL into the file when it closes, even under ``PRAGMA query_only`` and the
    authorizer; only the read-only open (``mode=ro``) leaves the file and its side files as they were."""
    src = tmp_path / "live"
    src.mkdir()
    writer = sqlite3.connect(src / "w.sqlite")
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE t (a INTEGER)")
    writer.execute("INSERT INTO t VALUES (1), (2)")
    writer.commit()
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in src.iterdir():  # copied while the writer still holds the WAL
        shutil.copy(f, copy / f.name)
    writer.close()
    db = copy / "w.sqlite"
    assert sorted(p.name for p in copy.iterdir()) == ["w.sqlite", "w.sqlite-shm", "w.sqlite-wal"]
    before = {p.name: _sha256(p) for p in copy.iterdir() if p.name != "w.sqlite-shm"}  # -shm: readers' locks

    res = execute("SELECT count(*) FROM t", db=str(db))
    assert res.ok and res.rows == [(2,)], res  # the rows in the WAL are read
    assert sorted(p.name for p in copy.iterdir()) == ["w.sqlite", "w.sqlite-shm", "w.sqlite-wal"]
    assert {p.name: _sha256(p) for p in copy.iterdir() if p.name != "w.sqlite-shm"} == before, \
        "the database or its WAL changed"


def test_sqlite_authorizer_refuses_pragmas_and_pointer_leaks(sqlite_db):
    """Statements the read-only open and query_only both allow: only the authorizer refuses them.
    (fts3_tokenizer('simple') returns the address of a C struct: an ASLR leak.)"""
    for sql in ("PRAGMA query_only = 0", "PRAGMA writable_schema = 1", "PRAGMA journal_mode = DELETE",
                "SELECT fts3_tokenizer('simple')"):
        res = execute(sql, db=str(sqlite_db), precheck=False)
        assert res.category == "not_read_only", (sql, res)


# -- every engine: its own deadline and the row cap -------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_engine_deadline_stops_an_endless_query(request, engine):
    """No static check can see that a query never ends: the engine's deadline (SQLite progress handler,
    DuckDB interrupt timer, PostgreSQL statement_timeout) is all there is."""
    db = _db(request, engine)
    res = run_bounded(lambda: execute(ENDLESS_COUNT, db=db, timeout_s=0.5, precheck=False),
                      f"an endless query on {engine}")
    assert res.category == "timeout", res


@pytest.mark.postgres
def test_postgres_server_enforces_the_deadline(pg_dbs):
    """The server's statement_timeout stops the query, not the client's backstop cancel (which needs a
    live client and fires later): the error is the server's own."""
    res = run_bounded(lambda: execute("SELECT pg_sleep(30)", db=pg_dbs[1], timeout_s=0.5, precheck=False),
                      "pg_sleep(30)")
    assert res.category == "timeout", res
    assert "canceling statement due to statement timeout" in res.error, res


@pytest.mark.parametrize("engine", ENGINES)
def test_row_cap_stops_an_endless_result(request, engine):
    """An endless result set: only the first max_rows + 1 rows may be fetched, or it never ends."""
    db = _db(request, engine)
    res = run_bounded(lambda: execute(ENDLESS_ROWS, db=db, timeout_s=5.0, max_rows=5, precheck=False),
                      f"an endless result on {engine}")
    assert res.category == "too_many_rows" and res.truncated, res
    assert res.rows == [(1,), (2,), (3,), (4,), (5,)]


# -- DuckDB -----------------------------------------------------------------------------------------


def test_duckdb_read_only_refuses_writes(duckdb_db):
    before = _sha256(duckdb_db)
    for sql in ("INSERT INTO t VALUES (9, 'evil')", "CREATE TABLE evil (x INTEGER)", "DROP TABLE t"):
        res = execute(sql, db=str(duckdb_db), precheck=False)
        assert res.category == "not_read_only", (sql, res)
    assert _sha256(duckdb_db) == before


def test_duckdb_external_access_is_off(duckdb_db, tmp_path):
    outside = tmp_path / "outside.csv"
    outside.write_text("secret\n42\n")
    for sql in (f"SELECT * FROM read_csv('{outside}')", f"SELECT * FROM '{outside}'",
                f"COPY t TO '{tmp_path / 'out.csv'}'"):
        res = execute(sql, db=str(duckdb_db), precheck=False)
        assert res.category == "not_read_only", (sql, res)
    assert not (tmp_path / "out.csv").exists()


def test_duckdb_configuration_is_locked(duckdb_db):
    """Settings a query could loosen (memory, threads, spilling) cannot be changed."""
    for sql in ("SET memory_limit = '64GB'", "SET threads = 64", "RESET memory_limit",
                "SET lock_configuration = false"):
        res = execute(sql, db=str(duckdb_db), precheck=False)
        assert res.category == "not_read_only", (sql, res)


# -- PostgreSQL -------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_read_only_transaction_holds_without_the_role(pg_dbs):
    """On a DSN whose role may write (here the admin), the READ ONLY transaction alone refuses what a
    rollback cannot undo: nextval() advances a sequence for good."""
    import psycopg

    admin, _ = pg_dbs
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE s")
        before = conn.execute("SELECT last_value, is_called FROM s").fetchone()
    res = execute("SELECT nextval('s')", db=admin, precheck=False)
    assert res.category == "not_read_only", res
    assert "read-only transaction" in res.error, res
    with psycopg.connect(admin, autocommit=True) as conn:
        assert conn.execute("SELECT last_value, is_called FROM s").fetchone() == before


@pytest.fixture()
def fresh_role(postgres_admin_dsn, postgres_db):
    """(admin DSN, role DSN, role) for a role of its own on a database where PUBLIC may create in the
    public schema (the default before PostgreSQL 15), so the role's own restrictions are what holds."""
    import psycopg

    from sqltune.sql import postgres as pg

    role = f"ro_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_db, autocommit=True) as conn:
        conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        conn.execute("CREATE TABLE t (a INTEGER)")
        conn.execute("INSERT INTO t VALUES (1), (2)")
        conn.execute("CREATE SEQUENCE s")
    dsn = pg.ensure_readonly_role(postgres_admin_dsn, postgres_db.rpartition("/")[2], role=role)
    yield postgres_db, dsn, role
    with psycopg.connect(postgres_db, autocommit=True) as conn:
        conn.execute(f'DROP OWNED BY "{role}"')
        conn.execute(f'DROP ROLE "{role}"')


@pytest.mark.postgres
def test_postgres_role_cannot_write_even_outside_a_read_only_transaction(fresh_role):
    import psycopg

    admin, dsn, role = fresh_role
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == role
        assert conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
        conn.execute("SET default_transaction_read_only = off")  # the role's privileges must hold alone
        assert conn.execute("SELECT sum(a) FROM t").fetchone()[0] == 3
        for stmt in ("INSERT INTO t VALUES (3)", "UPDATE t SET a = 0", "DELETE FROM t", "TRUNCATE t",
                     "CREATE TABLE x (a INTEGER)", "CREATE TEMP TABLE x (a INTEGER)", "SELECT nextval('s')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)
        flags = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls FROM pg_roles "
            "WHERE rolname = current_user").fetchone()
        assert flags == (False, False, False, False, False)
    with psycopg.connect(admin, autocommit=True) as conn:
        assert conn.execute("SELECT count(*), sum(a) FROM t").fetchone() == (2, 3)


@pytest.mark.postgres
def test_static_allow_list_alone_protects_an_admin_dsn(pg_dbs):
    """With a DSN that may write and the engine guards that a rollback would hide, the pre-check refuses
    the write before any connection is made (category not_read_only, no database error text)."""
    admin, _ = pg_dbs
    for sql in ("SELECT set_config('default_transaction_read_only', 'off', false)", "COMMIT",
                "SELECT * FROM query_to_xml('DELETE FROM t', true, true, '')"):
        res = execute(sql, db=admin)
        assert res.category == "not_read_only" and res.error.startswith("not a read-only query"), (sql, res)


# -- context databases (in-memory SQLite built from CREATE/INSERT text) -----------------------------


def _context(extra: str = "") -> str:
    """A context of its own (built databases are cached per context text)."""
    name = f"t_{uuid.uuid4().hex[:8]}"
    return f"CREATE TABLE {name} (a INTEGER); INSERT INTO {name} VALUES (1), (2);{extra}"


def test_context_query_authorizer_refuses_pragmas_and_pointer_leaks():
    for sql in ("PRAGMA query_only = 0", "PRAGMA writable_schema = 1", "SELECT fts3_tokenizer('simple')"):
        res = execute_in_context(sql, context=_context(), precheck=False)
        assert res.category == "not_read_only", (sql, res)


def test_context_build_stops_at_its_deadline():
    """A context statement that never ends (a count over an endless recursion: no memory, all CPU)."""
    endless = " INSERT INTO t2 SELECT count(*) FROM (" + ENDLESS_ROWS + ");"
    ctx = _context(" CREATE TABLE t2 (n INTEGER);" + endless)
    res = run_bounded(lambda: execute_in_context("SELECT 1", context=ctx, timeout_s=0.5), "building an endless context")
    assert res.category == "runtime" and "timed out" in res.error, res


def test_context_query_stops_at_its_deadline_and_row_cap():
    ctx = _context()
    res = run_bounded(lambda: execute_in_context(ENDLESS_COUNT, context=ctx, timeout_s=0.5, precheck=False),
                      "an endless query on a context database")
    assert res.category == "timeout", res
    res = run_bounded(lambda: execute_in_context(ENDLESS_ROWS, context=ctx, timeout_s=5.0, max_rows=3, precheck=False),
                      "an endless result on a context database")
    assert res.category == "too_many_rows" and res.rows == [(1,), (2,), (3,)], res


def test_context_static_allow_list_refuses_before_running():
    """The pre-check refuses these before any database is built (the engine would refuse them too, later
    and with its own message)."""
    for sql in ("DELETE FROM t", "SELECT load_extension('x')", "ATTACH DATABASE '/tmp/x.db' AS x"):
        res = execute_in_context(sql, context=_context())
        assert res.category == "not_read_only" and res.error.startswith("not a read-only query"), (sql, res)
