"""The FastAPI app in-process with a stand-in backend: timeouts, back-pressure, chunked bodies, no-auth mode.

The Ray-backed behaviour is covered over real HTTP in test_serve_api.py; these cases need a backend that
misbehaves on purpose, which a real replica does not do on demand.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from sqltune.serving.api import BackendTimeout, Overloaded, create_app
from sqltune.serving.config import ServeArgs

SCHEMA = "CREATE TABLE t (a INTEGER);"


class FakeBackend:
    def __init__(self, mode: str = "ok"):
        self.mode = mode

    async def call(self, method, payload=None, *, timeout=None):
        if method == "info":
            return {"ready": True, "model": "fake"}
        if self.mode == "slow":
            try:
                await asyncio.wait_for(asyncio.sleep(30), timeout)
            except asyncio.TimeoutError:
                raise BackendTimeout(method) from None
        if self.mode == "overloaded":
            raise Overloaded("queue full")
        if method == "sql":
            return {
                "text": "SELECT a FROM t;",
                "finish_reason": "stop",
                "prompt_tokens": 10,
                "completion_tokens": 4,
                "model": "fake",
            }
        return {"text": "hi", "finish_reason": "stop", "prompt_tokens": 3, "completion_tokens": 1}

    async def stream(self, method, payload, *, timeout=None):
        if self.mode == "overloaded":
            raise Overloaded("queue full")
        yield {"delta": "hi"}
        yield {"finish_reason": "stop", "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


def client_for(backend, monkeypatch, **overrides) -> httpx.AsyncClient:
    monkeypatch.delenv("SQLTUNE_UNIT_TOKEN", raising=False)
    args = ServeArgs.from_args(
        {
            "model_uri": "/m",
            "model_name": "fake",
            "api_token_env": "SQLTUNE_UNIT_TOKEN",
            "max_body_bytes": 1024,
            **overrides,
        }
    )
    app = create_app(args, backend)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def run(coro):
    return asyncio.run(coro)


def test_open_without_token_and_sql_shape(monkeypatch):
    async def go():
        async with client_for(FakeBackend(), monkeypatch) as c:
            r = await c.post("/v1/sql", json={"question": "q", "schema": SCHEMA})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["sql"] == "SELECT a FROM t" and body["valid"] and body["read_only"]
            assert body["unknown_columns"] == [] and body["usage"] == {
                "prompt_tokens": 10,
                "completion_tokens": 4,
            }

    run(go())


def test_timeout_gives_504_json(monkeypatch):
    async def go():
        async with client_for(FakeBackend("slow"), monkeypatch, request_timeout_s=0.2) as c:
            r = await c.post("/v1/sql", json={"question": "q", "schema": SCHEMA})
            assert r.status_code == 504
            assert r.json()["error"]["code"] == "timeout"

    run(go())


@pytest.mark.parametrize("stream", [False, True])
def test_backpressure_gives_503_json(monkeypatch, stream):
    async def go():
        async with client_for(FakeBackend("overloaded"), monkeypatch) as c:
            r = await c.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "x"}], "stream": stream},
            )
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "overloaded"
            assert r.headers["retry-after"] == "1"

    run(go())


def test_chunked_body_over_the_limit_is_413(monkeypatch):
    async def body():
        for _ in range(10):
            yield b" " * 200
        yield b'{"question": "q", "schema": "x"}'

    async def go():
        async with client_for(FakeBackend(), monkeypatch) as c:
            r = await c.post("/v1/sql", content=body(), headers={"content-type": "application/json"})
            assert r.status_code == 413
            assert r.json()["error"]["param"] == "body"

    run(go())


def test_token_rotation_accepts_each_token(monkeypatch):
    monkeypatch.setenv("SQLTUNE_UNIT_TOKEN", "old-token, new-token")
    args = ServeArgs.from_args({"model_uri": "/m", "api_token_env": "SQLTUNE_UNIT_TOKEN"})
    app = create_app(args, FakeBackend())

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            for tok, status in (
                ("old-token", 200),
                ("new-token", 200),
                ("old-token,new-token", 401),
                ("", 401),
            ):
                r = await c.get("/v1/models", headers={"Authorization": f"Bearer {tok}"})
                assert r.status_code == status, (tok, r.text)
            assert (await c.get("/healthz")).status_code == 200

    run(go())
