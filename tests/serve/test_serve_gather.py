"""An ingress that gathers concurrent requests into streamed calls to the model replica (coalesce_ms):
over real HTTP, each request still gets its own answer, and a refused one does not sink the others."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from serve_helpers import side_app

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def gather_server(ray_serve, taught_model):
    """An app whose ingress gathers concurrent generation requests into streamed calls (coalesce_ms)."""
    # coalesce_ms wide, so requests sent together on a busy CI machine still share a call.
    with side_app(ray_serve["base"], taught_model, "gather", max_batch_size=8, coalesce_ms=50) as base:
        yield base

QUESTIONS = [
    "How many customers are there?",
    "List the customer names.",
    "Remove every customer.",
    "Which customers live in Germany?",
    "How many orders were shipped?",
    "What is the revenue per customer?",
]


def _body(content: str) -> dict:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 8}


async def _send_together(base: str, bodies: list[dict], headers: dict | None = None) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base, headers=headers or {}, timeout=120) as c:
        return list(await asyncio.gather(*(c.post("/v1/chat/completions", json=b) for b in bodies)))


def test_gathered_requests_get_their_own_answers(gather_server, server):
    too_long = _body(" ".join(["customers"] * 6000))  # past the model's context: refused in the replica
    bodies = [_body(q) for q in QUESTIONS] + [too_long]
    gathered = asyncio.run(_send_together(gather_server, bodies))
    # The same questions one by one through the main app (one call per request) are the reference.
    alone = [httpx.post(f"{server['base']}/v1/chat/completions", json=b, headers=server["headers"], timeout=120)
             for b in bodies[:-1]]
    for question, got, want in zip(QUESTIONS, gathered, alone):
        assert got.status_code == 200 and want.status_code == 200, (question, got.text, want.text)
        assert got.json()["choices"][0]["message"] == want.json()["choices"][0]["message"], question
        assert got.json()["usage"] == want.json()["usage"], question
    refused = gathered[-1]
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "messages"
    stats = httpx.get(f"{gather_server}/v1/stats", timeout=30).json()
    # The first request found nothing in flight and went alone; the rest arrived while it ran and shared
    # streamed calls.
    assert stats["gathered"]["calls"] >= 1, stats
    assert stats["gathered"]["requests"] >= 2 * stats["gathered"]["calls"] - 1, stats
    assert stats["gathered"]["requests"] >= 2, stats


def test_an_ingress_without_coalescing_reports_no_gathering(client):
    assert "gathered" not in client.get("/v1/stats").json()
