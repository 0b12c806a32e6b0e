"""The hostile-SQL corpus (fixtures/hostile.yaml) against SQLite, DuckDB and a real PostgreSQL.

For every query: the expected non-success category (``timeout`` for runaway queries: the engine's own
deadline stopped them), the database file byte-identical (sha256), no new files next to it or in a watched world-writable directory, and
for PostgreSQL the table contents unchanged. Each query also runs with the analyze() pre-check
bypassed (``precheck=False``) to show the engine-level sandbox holds on its own.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from sql_helpers import FIXTURES, ROWS_T, run_bounded

from sqltune.sql import execute

CORPUS = yaml.safe_load((FIXTURES / "hostile.yaml").read_text())
ENGINES = ("sqlite", "duckdb", "postgres")
TIMEOUT_S = 1.0
MAX_ROWS = 50


def _cases(engine: str) -> list[dict]:
    return [c for c in CORPUS if engine in c.get("engines", ENGINES)]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listing(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


@pytest.fixture()
def watched():
    """A world-writable directory (so even the postgres server user could write there) that must stay empty."""
    d = Path(tempfile.mkdtemp(prefix="sqltune-watch-"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _raw_mode(case: dict, engine: str) -> str:
    raw = case.get("raw", "fail")
    return raw.get(engine, raw.get("default", "fail")) if isinstance(raw, dict) else raw


def _check(result, case: dict, mode: str, engine: str) -> None:
    label = f"{case['id']} ({mode}): {result.category} {result.error}"
    if mode == "checked":
        want = case["expect"] if isinstance(case["expect"], list) else [case["expect"]]
        assert result.category in want, label
    else:
        want = _raw_mode(case, engine)
        if want == "fail":
            assert result.category is not None, label
        elif want == "timeout":
            assert result.category == "timeout", label


def _run_corpus(db, engine: str, watched: Path, modes=("checked", "raw")) -> list[str]:
    ran = []
    for case in _cases(engine):
        sql = case["sql"].replace("{tmp}", str(watched)).replace("{db}", str(db))
        for mode in modes:
            if mode == "raw" and _raw_mode(case, engine) == "skip":
                continue
            result = run_bounded(
                lambda sql=sql, mode=mode: execute(sql, db=str(db), timeout_s=TIMEOUT_S, max_rows=MAX_ROWS,
                                                  precheck=(mode == "checked")),
                f"{engine} {case['id']} ({mode})")
            _check(result, case, mode, engine)
            ran.append(f"{case['id']}:{mode}")
    return ran


@pytest.mark.parametrize("engine", ["sqlite", "duckdb"])
def test_file_engines_resist_corpus(engine, sqlite_db, duckdb_db, watched):
    db = sqlite_db if engine == "sqlite" else duckdb_db
    before_hash, before_files = _sha256(db), _listing(db.parent)
    before_mtime = os.stat(db).st_mtime_ns
    ran = _run_corpus(db, engine, watched)
    assert len(ran) >= 20
    assert _sha256(db) == before_hash, "database file changed"
    assert os.stat(db).st_mtime_ns == before_mtime
    assert _listing(db.parent) == before_files, "new files next to the database"
    assert _listing(watched) == set(), "files appeared in the watched directory"
    # the data is still all there and readable
    ok = execute("SELECT a, b FROM t ORDER BY a", db=str(db))
    assert ok.ok and ok.rows == ROWS_T


@pytest.mark.postgres
def test_postgres_resists_corpus(pg_dbs, watched):
    import psycopg

    admin, readonly = pg_dbs

    def snapshot():
        with psycopg.connect(admin) as conn:
            rows = conn.execute("SELECT a, b FROM t ORDER BY a").fetchall()
            tables = conn.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2").fetchall()
            los = conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0]
            funcs = conn.execute(
                "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = 'public'").fetchone()[0]
            role = conn.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
                                "WHERE rolname = 'sqltune_ro'").fetchone()
        return rows, tables, los, funcs, role

    before = snapshot()
    assert before[0] == ROWS_T
    ran = _run_corpus(readonly, "postgres", watched)
    assert len(ran) >= 20
    # With the admin (superuser) DSN the pre-check alone must refuse the whole corpus too.
    _run_corpus(admin, "postgres", watched, modes=("checked",))
    assert snapshot() == before, "database contents, tables, large objects, functions or the role changed"
    assert _listing(watched) == set(), "the server created files in the watched directory"


@pytest.mark.parametrize("engine", ["sqlite", "duckdb"])
def test_missing_file_is_not_created(engine, tmp_path):
    from sqltune.errors import SQLError

    path = tmp_path / ("nope.sqlite" if engine == "sqlite" else "nope.duckdb")
    with pytest.raises(SQLError, match="not found"):
        execute("SELECT 1", db=str(path))
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []
