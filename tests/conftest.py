"""Shared fixtures: real local services started by the project's own scripts, never mocks."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def spider_dir() -> Path:
    path = SHARED / "datasets" / "spider"
    if not (path / "dev.json").is_file():
        pytest.fail(f"the shared Spider dev set is missing at {path}; CI clones ../shared beside the repo")
    return path


@pytest.fixture(scope="session")
def postgres_admin_dsn() -> str:
    """Admin DSN of the PostgreSQL server that scripts/postgres.sh installs and starts on loopback."""
    dsn = os.environ.get("SQLTUNE_PG_DSN")
    if dsn:
        return dsn
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "postgres.sh"), "start"], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        pytest.fail(f"scripts/postgres.sh start failed: {out.stderr.strip()}")
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture()
def postgres_db(postgres_admin_dsn: str):
    """A fresh, empty database on the local server; dropped afterwards. Yields its admin DSN."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = postgres_admin_dsn.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(postgres_admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
