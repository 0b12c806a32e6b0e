"""Execute-and-repair and schema linking in /v1/sql, sampling in /v1/chat/completions: over real HTTP
against the local Ray Serve app of test_serve_api.py (the tiny model taught PAIRS)."""

from __future__ import annotations

import sqlite3

import pytest
from serve_helpers import PAIRS, SHOP_SCHEMA
from test_serve_api import assert_error

pytestmark = pytest.mark.ray


def test_repair_passes_at_once_and_returns_the_rows(client):
    body = {"question": PAIRS[0][0], "database": "shop", "execute": True, "repair": {"max_rounds": 2}}
    r = client.post("/v1/sql", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["sql"] == PAIRS[0][1].rstrip(";") and out["rows"] == [[3]]
    rep = out["repair"]
    assert rep["passed"] and rep["status"] == "ok" and rep["rounds_used"] == 0
    assert [x["status"] for x in rep["rounds"]] == ["ok"]


def test_repair_rounds_of_a_write_never_run_it(client, server):
    body = {"question": PAIRS[1][0], "database": "shop", "execute": True, "repair": {"max_rounds": 2}}
    r = client.post("/v1/sql", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    rep = out["repair"]
    # The model knows the DELETE only (and nothing better when shown the error): the write is refused
    # at the analysis stage, and no round ever reaches execution.
    assert not rep["passed"] and rep["rounds_used"] == 2
    assert rep["rounds"][0]["status"] == "not_read_only" and rep["rounds"][0]["stage"] == "analyze"
    assert all(x["stage"] in ("analyze", "compile") for x in rep["rounds"])
    assert out["executed"] is False and "rows" not in out
    conn = sqlite3.connect(server["db"])
    assert conn.execute("SELECT COUNT(*) FROM customers").fetchone() == (3,)
    conn.close()


def test_repair_on_a_pasted_schema_compiles_on_a_scratch_copy(client):
    r = client.post("/v1/sql", json={"question": PAIRS[2][0], "schema": SHOP_SCHEMA, "repair": {"max_rounds": 0}})
    assert r.status_code == 200, r.text
    rnd = r.json()["repair"]["rounds"][0]
    assert rnd["status"] == "ok" and rnd["sql"] == PAIRS[2][1].rstrip(";")


def test_self_consistency_candidates_vote(client):
    body = {"question": PAIRS[0][0], "database": "shop", "execute": True,
            "repair": {"max_rounds": 0, "candidates": 3, "seed": 5, "temperature": 0.5}}
    first = client.post("/v1/sql", json=body)
    again = client.post("/v1/sql", json=body)
    assert first.status_code == 200, first.text
    rnd = first.json()["repair"]["rounds"][0]
    assert len(rnd["candidates"]) == 3 and [c.get("sampled", False) for c in rnd["candidates"]] == [False, True, True]
    assert sum(rnd["votes"].values()) == sum(c["status"] in ("ok", "empty") for c in rnd["candidates"])
    # seeded: the same request gives the same candidates
    assert [c["sql"] for c in rnd["candidates"]] == [c["sql"] for c in again.json()["repair"]["rounds"][0]["candidates"]]


@pytest.mark.parametrize(
    ("repair", "status", "param"),
    [
        ({"max_rounds": 4}, 422, "repair.max_rounds"),  # the server caps it at 3
        ({"candidates": 5}, 422, "repair.candidates"),  # capped at 4
        ({"candidates": 0}, 422, "repair.candidates"),
        ({"max_rounds": -1}, 422, "repair.max_rounds"),
        ({"temperature": 0}, 422, "repair.temperature"),
        ({"max_round": 1}, 422, "repair.max_round"),
        ("yes", 422, "repair"),
    ],
)
def test_repair_parameters_are_validated(client, repair, status, param):
    r = client.post("/v1/sql", json={"question": "q", "schema": SHOP_SCHEMA, "repair": repair})
    assert_error(r, status, param)


def test_a_schema_over_the_limit_is_linked_instead_of_refused(client):
    tables = [f"CREATE TABLE t{i} (a INTEGER, b TEXT);" for i in range(60)]
    long_schema = " ".join(tables[:30] + [SHOP_SCHEMA] + tables[30:])
    r = client.post("/v1/sql", json={"question": PAIRS[0][0], "schema": long_schema})
    assert r.status_code == 200, r.text
    link = r.json()["linking"]
    # the linked table first, then as many others as fit the budget
    assert "customers" in link["tables"] and len(link["tables"]) < 61
    assert link["total_tables"] == 61 and link["reason"] == "budget"
    asked = client.post("/v1/sql", json={"question": PAIRS[0][0], "schema": long_schema, "link": True})
    assert asked.json()["linking"]["reason"] == "requested" and asked.json()["linking"]["tables"] == ["customers"]
    assert asked.json()["sql"] == PAIRS[0][1].rstrip(";")  # the prompt the model was taught
    assert_error(client.post("/v1/sql", json={"question": "q", "schema": SHOP_SCHEMA, "link": "maybe"}), 422, "link")


def test_chat_sampling_is_seeded_and_validated(client):
    chat = {"messages": [{"role": "user", "content": PAIRS[0][0]}], "max_tokens": 12}
    sampled = {**chat, "temperature": 1.2, "top_p": 0.9, "seed": 11, "n": 3}
    a = client.post("/v1/chat/completions", json=sampled)
    b = client.post("/v1/chat/completions", json=sampled)
    assert a.status_code == 200, a.text
    texts = [c["message"]["content"] for c in a.json()["choices"]]
    assert [c["index"] for c in a.json()["choices"]] == [0, 1, 2]
    assert texts == [c["message"]["content"] for c in b.json()["choices"]]
    assert a.json()["usage"]["completion_tokens"] >= 3
    greedy = client.post("/v1/chat/completions", json={**chat, "n": 2}).json()["choices"]
    assert greedy[0]["message"] == greedy[1]["message"]
    assert_error(client.post("/v1/chat/completions", json={**chat, "n": 9}), 422, "n")
    assert_error(client.post("/v1/chat/completions", json={**chat, "n": 2, "stream": True}), 400, "n")
    assert_error(client.post("/v1/chat/completions", json={**chat, "temperature": 3}), 422, "temperature")
    assert_error(client.post("/v1/chat/completions", json={**chat, "top_p": 0}), 422, "top_p")
    assert_error(client.post("/v1/chat/completions", json={**chat, "seed": -1}), 422, "seed")
