"""Fixtures of the evaluation tests: the shop database on every engine, the tiny model + adapter, Ray."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(Path(__file__).parents[1] / "export"))  # the shared tiny model/adapter builders


def shop_statements() -> list[str]:
    text = "\n".join(line for line in (FIXTURES / "shop.sql").read_text().splitlines() if not line.startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def build_shop(engine: str, where: Path | str) -> str:
    """The shop database on ``engine``; returns the db argument for sqltune.sql (a path or a DSN)."""
    if engine == "sqlite":
        path = Path(where) / "shop.sqlite"
        with sqlite3.connect(path) as conn:
            for stmt in shop_statements():
                conn.execute(stmt)
        return str(path)
    if engine == "duckdb":
        import duckdb

        path = Path(where) / "shop.duckdb"
        conn = duckdb.connect(str(path))
        for stmt in shop_statements():
            conn.execute(stmt)
        conn.close()
        return str(path)
    if engine == "postgres":
        import psycopg

        from sqltune.sql.postgres import ensure_readonly_role

        with psycopg.connect(str(where), autocommit=True) as conn:
            for stmt in shop_statements():
                conn.execute(stmt)
        # Untrusted SQL runs as a role that can only read this database (as in a real deployment).
        return ensure_readonly_role(str(where), str(where).rsplit("/", 1)[1].split("?")[0])
    raise ValueError(engine)


SHOP_SCHEMA = "\n".join(s + ";" for s in shop_statements() if s.upper().startswith("CREATE"))


@pytest.fixture(params=["sqlite", "duckdb", "postgres"])
def shop_db(request, tmp_path) -> tuple[str, str]:
    """(engine, db) for the shop database, on each of the three engines."""
    engine = request.param
    if engine == "postgres":
        return engine, build_shop(engine, request.getfixturevalue("postgres_db"))
    return engine, build_shop(engine, tmp_path)


@pytest.fixture(scope="session")
def eval_tiny_base(tmp_path_factory) -> Path:
    from adapter_fixture import build_tiny_base

    return build_tiny_base(tmp_path_factory.mktemp("eval-base") / "base")


@pytest.fixture(scope="session")
def eval_tiny_adapter(eval_tiny_base, tmp_path_factory) -> Path:
    from adapter_fixture import build_adapter

    return build_adapter(eval_tiny_base, tmp_path_factory.mktemp("eval-runs") / "tiny" / "adapter")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray cluster (loopback, 4 logical CPUs, no dashboard) for the module; shut down afterwards."""
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
        started = True
    yield ray
    if started:
        ray.shutdown()
