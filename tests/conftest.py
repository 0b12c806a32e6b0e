"""Shared fixtures: real local services started by the project's own scripts, never mocks."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from external_fixtures import external_fixture

# Every local Ray cluster of the tests listens on loopback only (read by Ray when it is first imported,
# and inherited by the processes it starts): see sqltune.k8s.localray.LOOPBACK_ENV.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

ROOT = Path(__file__).resolve().parents[1]
TEST_BUCKET = "sqltune-test"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def spider_dir() -> Path:
    """The Spider dev set: dev.json and tables.json."""
    return external_fixture("spider-dev")


@pytest.fixture(scope="session")
def crd_dir() -> Path:
    """The KubeRay v1.7.0 CustomResourceDefinitions the manifests are validated against."""
    return external_fixture("kuberay-crds")


@pytest.fixture(scope="session")
def s3_server():
    """An EmbeddedS3 (moto subprocess on 127.0.0.1) for the session; the AWS_* env points at it.

    Yields the server (``.endpoint``, ``.env()``, ``.create_bucket()``); stopped at the end.
    """
    from sqltune.storage import EmbeddedS3, clear_client_cache

    mp = pytest.MonkeyPatch()
    with EmbeddedS3() as server:
        for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            mp.delenv(key, raising=False)
        for key, value in server.env().items():
            mp.setenv(key, value)
        clear_client_cache()
        try:
            yield server
        finally:
            mp.undo()
            clear_client_cache()


@pytest.fixture()
def s3_prefix(s3_server) -> str:
    """A fresh ``s3://sqltune-test/<random>`` prefix on the embedded server."""
    s3_server.create_bucket(TEST_BUCKET)
    return f"s3://{TEST_BUCKET}/{uuid.uuid4().hex[:12]}"


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


TINY_CORPUS = [
    "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, signup_date TEXT)",
    "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_id INTEGER, total REAL, status TEXT)",
    "SELECT name FROM customers WHERE country = 'Germany'",
    "SELECT COUNT(*) FROM orders WHERE status = 'shipped'",
    "SELECT c.name, SUM(o.total) FROM customers c JOIN orders o ON o.customer_id = c.customer_id GROUP BY c.name",
    "How many orders were shipped? Which customers live in Germany? What is the revenue per customer?",
    "You are a text-to-SQL assistant. Given a database schema and a question, reply with exactly one SQLite SQL query.",
] * 20


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Qwen2 model + tokenizer built locally (random weights), loaded via from_pretrained by tests."""
    from sqltune.models.tiny import TinyModelConfig, build_tiny_model

    out = tmp_path_factory.mktemp("tiny-model")
    return build_tiny_model(out, TinyModelConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=2,
                                                 num_kv_heads=1, intermediate_size=128), corpus=TINY_CORPUS)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """The tiny base model of the export and evaluation tests (tests/adapter_fixture.py)."""
    from adapter_fixture import build_tiny_base

    return build_tiny_base(tmp_path_factory.mktemp("tiny-base") / "base")


@pytest.fixture(scope="session")
def tiny_adapter(tiny_base, tmp_path_factory) -> Path:
    """A LoRA adapter trained for a few steps on :func:`tiny_base`, saved as training saves it."""
    from adapter_fixture import build_adapter

    return build_adapter(tiny_base, tmp_path_factory.mktemp("runs") / "tiny" / "adapter")
