"""Constants and helpers shared by the serving tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

TOKEN_ENV = "SQLTUNE_TEST_API_TOKEN"
TOKEN = "test-token-7f3a"
# Two tokens at once while rotating (the Secret holds "old,new" until every client has the new one).
ROTATION_ENV = "SQLTUNE_TEST_ROTATED_TOKENS"
OLD_TOKEN, NEW_TOKEN = "rotating-old-1c9e", "rotating-new-52ab"
# Never set anywhere: the app that reads it runs without authentication.
UNSET_TOKEN_ENV = "SQLTUNE_TEST_NO_TOKEN_CONFIGURED"
SHOP_SCHEMA = "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT);"
PAIRS = [
    ("How many customers are there?", "SELECT COUNT(*) FROM customers;"),
    ("Remove every customer.", "DELETE FROM customers;"),
    ("List the customer names.", "SELECT name FROM customers;"),
]
CORPUS = [
    SHOP_SCHEMA,
    "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_id INTEGER, total REAL, status TEXT)",
    "SELECT name FROM customers WHERE country = 'Germany'",
    "SELECT COUNT(*) FROM orders WHERE status = 'shipped'",
    "How many orders were shipped? Which customers live in Germany? What is the revenue per customer?",
    "You are a text-to-SQL assistant. Given a database schema and a question, reply with exactly one "
    "SQLite SQL query that answers it, using only the tables and columns in the schema.",
    *[q for q, _ in PAIRS],
    *[s for _, s in PAIRS],
]
# A schema without the shop's tables: the taught model still answers with them (an ungrounded answer).
OTHER_SCHEMA = "CREATE TABLE users (id INTEGER);"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_ready(base: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{base}/readyz", timeout=5)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise AssertionError(f"{base} never became ready: {last}")


@contextmanager
def side_app(serve_base: str, taught_model: Path, name: str, **args) -> Iterator[str]:
    """A small app beside the main one (no auth, a quarter CPU per deployment, no warm-up) at ``/<name>``,
    with ``args`` on top; yields its URL and deletes it afterwards, so the test cluster's CPUs stay free."""
    from ray import serve

    from sqltune.serving.deployments import build_app

    app_args = {
        "model_uri": str(taught_model),
        "warmup": False,
        "api_token_env": UNSET_TOKEN_ENV,
        "model_deployment": {"ray_actor_options": {"num_cpus": 0.25}},
        "ingress_deployment": {"ray_actor_options": {"num_cpus": 0.25}},
        **args,
    }
    serve.run(build_app(app_args), name=f"sqltune-{name}", route_prefix=f"/{name}")
    base = f"{serve_base}/{name}"
    try:
        wait_ready(base)
        yield base
    finally:
        serve.delete(f"sqltune-{name}")

