"""The FastAPI app in-process with a stand-in backend: timeouts, back-pressure, chunked bodies, no-auth mode.

The Ray-backed behaviour is covered over real HTTP in test_serve_api.py; these cases need a backend that
misbehaves on purpose, which a real replica does not do on demand.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from sqltune.serving.api import create_app
from sqltune.serving.backend import BackendTimeout, Overloaded
from sqltune.serving.config import ServeArgs
from sqltune.serving.protocol import (
    ChatGeneration,
    Completion,
    Rejection,
    ReplicaInfo,
    SqlGeneration,
    StreamDelta,
    StreamEnd,
)

SCHEMA = "CREATE TABLE t (a INTEGER);"


class FakeBackend:
    """A backend that misbehaves on demand (slow, overloaded) or refuses like a replica (rejecting)."""

    transport = "in-process"

    def __init__(self, mode: str = "ok"):
        self.mode = mode
        self.requests: list = []

    async def _misbehave(self, timeout):
        if self.mode == "slow":
            try:
                await asyncio.wait_for(asyncio.sleep(30), timeout)
            except asyncio.TimeoutError:
                raise BackendTimeout("slow") from None
        if self.mode == "overloaded":
            raise Overloaded("queue full")

    async def sql(self, request: SqlGeneration, *, timeout=None):
        self.requests.append(request)
        await self._misbehave(timeout)
        if self.mode == "rejecting":
            return Rejection(400, "schema", "the prompt is 9999 tokens; the limit is 10", "too_long")
        return Completion("SELECT a FROM t;", "stop", prompt_tokens=10, completion_tokens=4, model="fake")

    async def chat(self, request: ChatGeneration, *, timeout=None):
        self.requests.append(request)
        await self._misbehave(timeout)
        return Completion("hi", "stop", prompt_tokens=3, completion_tokens=1, model="fake")

    async def chat_stream(self, request: ChatGeneration, *, timeout=None):
        self.requests.append(request)
        if self.mode == "overloaded":
            raise Overloaded("queue full")
        if self.mode == "rejecting":
            yield Rejection(
                400, "messages", "the prompt is 9999 tokens; the limit is 10", "context_length_exceeded"
            )
            return
        yield StreamDelta("hi")
        yield StreamEnd("stop", prompt_tokens=3, completion_tokens=1)

    async def info(self, *, timeout=None):
        return ReplicaInfo("fake", True, "generate", "cpu", {}, "", 0.0)

    async def stats(self, *, timeout=None):
        return {"requests": 0}


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


def test_typed_requests_reach_the_replica(monkeypatch):
    """The ingress sends typed requests: lengths unresolved (the replica checks them), messages as text."""
    backend = FakeBackend()

    async def go():
        async with client_for(backend, monkeypatch) as c:
            r = await c.post("/v1/sql", json={"question": "q", "schema": SCHEMA, "evidence": "e"})
            assert r.status_code == 200, r.text
            messages = [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "h"}, {"type": "text", "text": "i"}]},
            ]
            r = await c.post(
                "/v1/chat/completions", json={"messages": messages, "max_completion_tokens": 7, "stop": "x"}
            )
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == "hi"
            r = await c.post("/v1/chat/completions", json={"messages": messages, "stream": True})
            assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
            assert (await c.get("/readyz")).json()["engine"] == "generate"

    run(go())
    sql, chat, stream = backend.requests
    assert sql == SqlGeneration("q", SCHEMA, "sqlite", evidence="e", max_new_tokens=None)
    assert [(m.role, m.content) for m in chat.messages] == [("system", "be brief"), ("user", "hi")]
    assert (chat.max_tokens, chat.max_tokens_param, chat.stop) == (7, "max_completion_tokens", ("x",))
    assert (stream.max_tokens, stream.max_tokens_param) == (None, "max_tokens")


@pytest.mark.parametrize("stream", [False, True])
def test_a_rejection_is_the_replicas_4xx(monkeypatch, stream):
    async def go():
        async with client_for(FakeBackend("rejecting"), monkeypatch) as c:
            if stream:
                body = {"messages": [{"role": "user", "content": "x"}], "stream": True}
                r = await c.post("/v1/chat/completions", json=body)
                param, code = "messages", "context_length_exceeded"
            else:
                r = await c.post("/v1/sql", json={"question": "q", "schema": SCHEMA})
                param, code = "schema", "too_long"
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert (err["param"], err["code"], err["type"]) == (param, code, "invalid_request_error")
            assert "the limit is 10" in err["message"]

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
