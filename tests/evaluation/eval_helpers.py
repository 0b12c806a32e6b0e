"""Helpers shared by the evaluation tests (a uniquely named module: ``conftest`` is ambiguous across test folders)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


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
