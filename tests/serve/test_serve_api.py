"""The HTTP contract of the server, over real HTTP against a local Ray Serve running the tiny model."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from serve_helpers import NEW_TOKEN, OLD_TOKEN, OTHER_SCHEMA, PAIRS, SHOP_SCHEMA, TOKEN, sha256

pytestmark = pytest.mark.ray

SQL_FIELDS = {
    "sql",
    "dialect",
    "valid",
    "read_only",
    "unknown_tables",
    "unknown_columns",
    "cleaned",
    "model",
    "latency_ms",
    "usage",
}


def assert_error(r: httpx.Response, status: int | tuple[int, ...], param: str | None = None) -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    err = r.json()["error"]
    assert err["message"]
    if param is not None:
        assert err["param"] == param, err
        field = param.split(".")[0].split("[")[0]  # "messages[0].role" is named as "messages..."
        assert field in err["message"], f"the message does not name {field!r}: {err}"
    return err


def server_timing(r: httpx.Response) -> dict[str, float]:
    """The Server-Timing header as {name: milliseconds}."""
    out = {}
    for item in r.headers["server-timing"].split(","):
        name, _, dur = item.strip().partition(";dur=")
        out[name] = float(dur)
    return out


def assert_hop_split(timing: dict[str, float]) -> None:
    """The hop to the replica and back (one host, one clock): both legs positive, and with the replica's
    handling they fit inside the ingress handler's time (each figure is rounded to 0.01 ms)."""
    assert timing["fwd"] > 0 and timing["ret"] > 0, timing
    assert timing["fwd"] + timing["handler"] + timing["ret"] <= timing["ingress"] + 0.03, timing


# --------------------------------------------------------------------------------------------- /v1/sql


def test_sql_answers_with_the_contract(client):
    question, gold = PAIRS[0]
    r = client.post("/v1/sql", json={"question": question, "schema": SHOP_SCHEMA, "dialect": "sqlite"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert SQL_FIELDS <= set(body)
    assert body["sql"] == gold.rstrip(";")
    assert body["valid"] is True and body["read_only"] is True
    assert body["unknown_tables"] == [] and body["unknown_columns"] == []
    assert body["dialect"] == "sqlite"
    assert body["model"] == "sqltune-tiny"
    assert body["usage"]["prompt_tokens"] > 20 and 1 <= body["usage"]["completion_tokens"] <= 32
    assert body["latency_ms"] > 0
    assert "rows" not in body  # no execute asked
    timing = server_timing(r)
    assert set(timing) == {"queue", "ttft", "replica", "handler", "fwd", "ret", "ingress", "app"}
    # The replica's own time is inside the ingress handler's, that inside the app's; the first token comes
    # within the replica's time.
    assert 0 <= timing["queue"] <= timing["ttft"] <= timing["replica"] <= timing["handler"] <= timing["ingress"]
    assert timing["ingress"] <= timing["app"]
    assert_hop_split(timing)


def test_a_repeated_schema_is_prefilled_from_the_prefix_cache(client):
    """The server runs with prefix_cache rows: questions over the same schema share the prompt's system
    text and schema, copied from the cache, and the answers are the same as without it."""
    before = client.get("/v1/stats").json()["engine"]["prefix_hit_tokens"]
    for question, gold in PAIRS + PAIRS:
        r = client.post("/v1/sql", json={"question": question, "schema": SHOP_SCHEMA, "dialect": "sqlite"})
        assert r.status_code == 200, r.text
        assert r.json()["sql"] == gold.rstrip(";")
    engine = client.get("/v1/stats").json()["engine"]
    assert engine["prefix_hit_tokens"] > before
    assert engine["prefill_tokens"] > 0


def test_sql_flags_unknown_identifiers_and_writes(client):
    # The schema lacks 'customers': the (correct for the shop) SQL is reported as ungrounded.
    r = client.post("/v1/sql", json={"question": PAIRS[2][0], "schema": OTHER_SCHEMA})
    assert r.status_code == 200, r.text
    assert r.json()["unknown_tables"] == ["customers"]
    r = client.post("/v1/sql", json={"question": PAIRS[1][0], "schema": SHOP_SCHEMA})
    body = r.json()
    assert body["sql"].upper().startswith("DELETE")
    assert body["valid"] is True and body["read_only"] is False
    assert body["reasons"]


def test_execute_on_configured_database_returns_rows(client, server):
    r = client.post("/v1/sql", json={"question": PAIRS[0][0], "database": "shop", "execute": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["executed"] is True, body
    assert body["rows"] == [[3]]
    assert len(body["columns"]) == 1
    r = client.post("/v1/sql", json={"question": PAIRS[2][0], "database": "shop", "execute": True})
    body = r.json()
    assert sorted(row[0] for row in body["rows"]) == ["Ada", "Bo", "Chen"]
    assert body["columns"] == ["name"]


def test_database_tables_pick_the_prompt_schema(client):
    r = client.post(
        "/v1/sql",
        json={"question": PAIRS[0][0], "database": "shop", "tables": ["Customers"], "execute": True},
    )
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [[3]]
    err = assert_error(client.post("/v1/sql", json={"question": "q", "database": "shop", "tables": ["nope"]}), 422,
                       "tables")
    assert "'nope'" in err["message"] and "customers" in err["message"]
    assert_error(client.post("/v1/sql", json={"question": "q", "database": "shop", "tables": []}), 422, "tables")
    assert_error(client.post("/v1/sql", json={"question": "q", "schema": SHOP_SCHEMA, "tables": ["customers"]}),
                 422, "tables")


def test_execute_never_runs_a_write(client, server):
    before = sha256(server["db"])
    r = client.post("/v1/sql", json={"question": PAIRS[1][0], "database": "shop", "execute": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sql"].upper().startswith("DELETE FROM CUSTOMERS")
    assert body["read_only"] is False
    assert body["executed"] is False
    assert "read-only" in body["execution_error"]
    assert "rows" not in body
    assert sha256(server["db"]) == before
    # The data is all still there.
    r = client.post("/v1/sql", json={"question": PAIRS[0][0], "database": "shop", "execute": True})
    assert r.json()["rows"] == [[3]]


def test_concurrent_requests_all_answered_within_the_batch_limit(server):
    """Twelve requests at once: all answered, each decoded in a batch of 1..max_batch_size. Whether two of
    them overlap depends on timing, so that batches really form is pinned by the engine tests, which
    submit while a batch decodes."""
    async def fire():
        async with httpx.AsyncClient(base_url=server["base"], headers=server["headers"], timeout=60) as c:
            reqs = [
                c.post(
                    "/v1/sql",
                    json={
                        "question": f"Which customers are from country number {i}?",
                        "schema": SHOP_SCHEMA,
                        "max_new_tokens": 48,
                    },
                )
                for i in range(12)
            ]
            return await asyncio.gather(*reqs)

    responses = asyncio.run(fire())
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    sizes = [r.json()["debug"]["batch_size"] for r in responses]
    limit = server["args"]["max_batch_size"]
    assert all(1 <= n <= limit for n in sizes), sizes
    stats = httpx.get(f"{server['base']}/v1/stats", headers=server["headers"]).json()
    assert max(sizes) <= stats["engine"]["max_decode_batch"] <= limit, stats
    assert stats["engine"]["errors"] == 0
    assert stats["transport"] == "grpc"  # Ray Serve's hops, as the images and manifests run them


# ------------------------------------------------------------------------------------------- OpenAI


def test_openai_client_models_chat_and_stream(server):
    import openai

    oc = openai.OpenAI(base_url=f"{server['base']}/v1", api_key=server["token"], max_retries=0)
    models = oc.models.list()
    ids = [m.id for m in models.data]
    assert ids == ["sqltune-tiny"]
    messages = [{"role": "user", "content": "Write SQL: how many customers are there?"}]
    resp = oc.chat.completions.create(model=ids[0], messages=messages, max_tokens=12, temperature=0)
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.role == "assistant"
    text = resp.choices[0].message.content
    assert isinstance(text, str)
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert resp.usage.completion_tokens <= 12 and resp.usage.prompt_tokens > 0
    chunks = list(
        oc.chat.completions.create(
            model=ids[0],
            messages=messages,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text  # greedy decoding: the stream spells out the same completion
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [resp.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == resp.usage.completion_tokens

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server['base']}/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError):
        oc.chat.completions.create(model="gpt-4o", messages=messages)
    with pytest.raises(openai.UnprocessableEntityError):  # above max_choices (4)
        oc.chat.completions.create(model=ids[0], messages=messages, n=9)


def test_chat_completion_reports_server_timing(client):
    body = {"messages": [{"role": "user", "content": "How many customers?"}], "max_tokens": 6, "ignore_eos": True}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 6
    timing = server_timing(r)
    assert 0 <= timing["queue"] <= timing["ttft"] <= timing["replica"] <= timing["handler"] <= timing["ingress"]
    assert timing["ingress"] <= timing["app"]
    assert timing["replica"] > 0
    assert_hop_split(timing)


def test_sse_stream_format(client):
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 5, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    first = json.loads(lines[0][len("data: ") :])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"]["role"] == "assistant"


# --------------------------------------------------------------------------------------------- auth


def test_auth(server):
    base = server["base"]
    body = {"question": PAIRS[0][0], "schema": SHOP_SCHEMA}
    assert_error(httpx.post(f"{base}/v1/sql", json=body), 401, "Authorization")
    assert_error(httpx.post(f"{base}/v1/sql", json=body, headers={"Authorization": "Bearer nope"}), 401)
    assert_error(httpx.post(f"{base}/v1/sql", json=body, headers={"Authorization": server["token"]}), 401)
    assert_error(httpx.get(f"{base}/v1/models"), 401)
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{base}/readyz").status_code == 200
    doc = httpx.get(f"{base}/openapi.json").json()
    assert {"/v1/sql", "/v1/chat/completions", "/v1/models", "/healthz", "/readyz"} <= set(doc["paths"])


# ------------------------------------------------------------------------------------- bad requests


def test_malformed_and_missing(client):
    r = client.post("/v1/sql", content=b'{"question": "x", ', headers={"content-type": "application/json"})
    assert_error(r, 400, "body")
    r = client.post("/v1/sql", content=b"", headers={"content-type": "application/json"})
    assert_error(r, (400, 422))
    r = client.post(
        "/v1/sql", content=b"question=hi", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert_error(r, (400, 422))
    assert_error(client.post("/v1/sql", json=["a", "list"]), (400, 422))
    assert_error(client.post("/v1/sql", json={"schema": SHOP_SCHEMA}), 422, "question")
    assert_error(client.post("/v1/sql", json={"question": "   ", "schema": SHOP_SCHEMA}), 422, "question")
    assert_error(client.post("/v1/sql", json={"question": 5, "schema": SHOP_SCHEMA}), 422, "question")
    assert_error(client.post("/v1/sql", json={"question": "q"}), 422, "schema")
    assert_error(
        client.post("/v1/sql", json={"question": "q", "schema": SHOP_SCHEMA, "database": "shop"}), 422
    )
    assert_error(
        client.post("/v1/sql", json={"question": "q", "schema": SHOP_SCHEMA, "shema": "x"}), 422, "shema"
    )
    assert_error(
        client.post("/v1/sql", json={"question": "q", "schema": SHOP_SCHEMA, "dialect": "oracle"}),
        422,
        "dialect",
    )
    assert_error(client.post("/v1/sql", json={"question": "q", "database": "nope"}), 404, "database")
    assert_error(
        client.post("/v1/sql", json={"question": "q", "schema": SHOP_SCHEMA, "execute": True}), 422, "execute"
    )
    assert_error(
        client.post("/v1/sql", json={"question": "q", "schema": SHOP_SCHEMA, "execute": "maybe"}),
        422,
        "execute",
    )
    r = client.get("/v1/nothing-here")
    assert_error(r, 404)
    assert_error(client.get("/v1/sql"), 405)
    # Bodies the JSON reader cannot read at all name the body too.
    assert_error(client.post("/v1/sql", content=b'{"question": "caf\xe9"}', headers=JSON), 400, "body")
    deep = b"[" * 3000 + b"]" * 3000
    assert_error(client.post("/v1/sql", content=deep, headers=JSON), 400, "body")


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("stream", [False, True])
def test_lone_surrogate_is_a_400_naming_the_field(client, stream):
    """JSON can spell a lone UTF-16 surrogate (\\ud800), which no UTF-8 text holds: 400, never a 500."""
    sql = b'{"question": "how many\\ud800?", "schema": ' + json.dumps(SHOP_SCHEMA).encode() + b"}"
    err = assert_error(client.post("/v1/sql", content=sql, headers=JSON), 400, "question")
    assert err["code"] == "invalid_unicode"
    sql = json.dumps({"question": "q", "schema": "CREATE TABLE \udfff (a INT);"}).encode()
    assert_error(client.post("/v1/sql", content=sql, headers=JSON), 400, "schema")
    chat = {"messages": [{"role": "user", "content": "hi \ud83d"}], "stream": stream}
    r = client.post("/v1/chat/completions", content=json.dumps(chat).encode(), headers=JSON)
    assert_error(r, 400, "messages[0].content")


def test_oversized_inputs(client, server):
    # Body over max_body_bytes (8192): refused before parsing.
    assert_error(client.post("/v1/sql", json={"question": "q", "schema": "x" * 9000}), 413, "body")
    # Within the body cap but over the token caps (64 question tokens, 256 schema tokens).
    long_q = "how many customers " * 40
    assert_error(client.post("/v1/sql", json={"question": long_q, "schema": SHOP_SCHEMA}), 400, "question")
    long_schema = " ".join(f"CREATE TABLE t{i} (a INTEGER, b TEXT);" for i in range(60))
    # (without "link": false, a schema over the cap is linked instead: test_serve_repair.py)
    assert_error(client.post("/v1/sql", json={"question": "q", "schema": long_schema, "link": False}), 400, "schema")
    assert_error(
        client.post("/v1/sql", json={"question": "q", "schema": SHOP_SCHEMA, "evidence": long_q}),
        400,
        "evidence",
    )
    # max_new_tokens: absurd, zero, wrong type.
    for value in (10**9, 65):
        assert_error(
            client.post("/v1/sql", json={"question": "q", "schema": SHOP_SCHEMA, "max_new_tokens": value}),
            422,
            "max_new_tokens",
        )
    assert_error(
        client.post("/v1/sql", json={"question": "q", "schema": SHOP_SCHEMA, "max_new_tokens": 0}),
        422,
        "max_new_tokens",
    )
    assert_error(
        client.post("/v1/sql", json={"question": "q", "schema": SHOP_SCHEMA, "max_new_tokens": "lots"}),
        422,
        "max_new_tokens",
    )
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    assert_error(client.post("/v1/chat/completions", json={**chat, "max_tokens": 10**6}), 422, "max_tokens")
    assert_error(
        client.post("/v1/chat/completions", json={**chat, "max_completion_tokens": 10**6}),
        422,
        "max_completion_tokens",
    )
    assert_error(client.post("/v1/chat/completions", json={"messages": []}), 422, "messages")
    assert_error(
        client.post("/v1/chat/completions", json={"messages": [{"role": "wizard", "content": "x"}]}),
        422,
        "messages[0].role",
    )
    big = [{"role": "user", "content": "tell me about customers " * 60}]
    assert_error(client.post("/v1/chat/completions", json={"messages": big}), 400, "messages")
    # Streaming requests that are refused get a JSON error, not a broken stream.
    assert_error(client.post("/v1/chat/completions", json={"messages": big, "stream": True}), 400, "messages")
    # The replica survived all of it.
    assert client.get("/readyz").status_code == 200
    r = client.post("/v1/sql", json={"question": PAIRS[0][0], "schema": SHOP_SCHEMA})
    assert r.status_code == 200


# --------------------------------------------------------------------------------------------- overload


def test_overload_gives_503_json_never_a_hang(overload_server):
    """The model deployment holds one request and queues one. Rounds of 24 concurrent requests are sent
    until one round overflows it (a bounded number of rounds, not a timing assumption): every answer is
    a 200 or a well-formed 503, and the first request of a round is always served."""

    async def fire():
        async with httpx.AsyncClient(base_url=overload_server, timeout=60) as c:
            reqs = [
                c.post(
                    "/v1/sql",
                    json={"question": f"Question number {i} about customers?", "schema": SHOP_SCHEMA},
                )
                for i in range(24)
            ]
            return await asyncio.wait_for(asyncio.gather(*reqs), timeout=90)

    rounds = []
    for _ in range(5):
        responses = asyncio.run(fire())
        rounds.append(sorted(r.status_code for r in responses))
        assert set(rounds[-1]) <= {200, 503}, rounds
        assert rounds[-1].count(200) >= 1, rounds
        for r in responses:
            if r.status_code == 503:
                err = assert_error(r, 503)
                assert err["code"] == "overloaded"
                assert r.headers.get("retry-after") == "1"
        if 503 in rounds[-1]:
            break
    assert 503 in rounds[-1], f"24 concurrent requests never overflowed a queue of one in 5 rounds: {rounds}"


def test_no_token_configured_means_no_authentication(overload_server):
    """The overload app's token variable is unset: every route answers without a token, and a stray
    Authorization header is ignored rather than refused."""
    body = {"question": PAIRS[0][0], "schema": SHOP_SCHEMA}
    r = httpx.post(f"{overload_server}/v1/sql", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["sql"] == PAIRS[0][1].rstrip(";")
    r = httpx.get(f"{overload_server}/v1/models", headers={"Authorization": "Bearer whatever"}, timeout=30)
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------------ adapter + token rotation


def test_token_rotation_accepts_both_tokens_through_ray_serve(adapter_server):
    base = adapter_server["base"]
    body = {"question": PAIRS[0][0], "schema": SHOP_SCHEMA, "max_new_tokens": 8}
    for token in (OLD_TOKEN, NEW_TOKEN):
        r = httpx.post(f"{base}/v1/sql", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert r.status_code == 200, (token, r.text)
    assert_error(httpx.post(f"{base}/v1/sql", json=body, timeout=30), 401, "Authorization")
    for wrong in (f"{OLD_TOKEN},{NEW_TOKEN}", f"{OLD_TOKEN}, {NEW_TOKEN}", f"{NEW_TOKEN}x", TOKEN):
        r = httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {wrong}"}, timeout=30)
        err = assert_error(r, 401, "Authorization")
        assert err["code"] == "invalid_api_key"
    assert httpx.get(f"{base}/readyz", timeout=30).status_code == 200


def test_adapter_is_served_on_its_base_model_uri(adapter_server):
    """The adapter's record names a base that does not exist: the server answers only because it loaded
    base_model_uri, and it answers what the same adapter on that base generates locally."""
    from sqltune.generation.generate import generate_batch, prompts_for
    from sqltune.models.loading import load_for_inference
    from sqltune.prompts import clean_sql

    base = adapter_server["base"]
    headers = {"Authorization": f"Bearer {NEW_TOKEN}"}
    models = httpx.get(f"{base}/v1/models", headers=headers, timeout=30).json()
    assert [m["id"] for m in models["data"]] == ["tiny-adapter"]
    items = [{"question": q, "schema": SHOP_SCHEMA, "dialect": "sqlite"} for q, _ in PAIRS]
    served = []
    for item in items:
        r = httpx.post(f"{base}/v1/sql", json={**item, "max_new_tokens": 24}, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        served.append(r.json()["sql"])

    local = load_for_inference(str(adapter_server["adapter"]), base_uri=str(adapter_server["base_model"]),
                               precision="fp32", device="cpu")
    expected = [
        clean_sql(generate_batch(local.model, local.tokenizer, prompts_for(local.tokenizer, [item], local.template),
                                 max_new_tokens=24)[0].text).sql
        for item in items
    ]
    assert served == expected


# --------------------------------------------------------------------------------------------- metrics


def test_prometheus_metrics(server, client):
    if not server["metrics_port"]:
        pytest.skip("Ray was started elsewhere: its metrics port is unknown")
    client.post("/v1/sql", json={"question": PAIRS[0][0], "schema": SHOP_SCHEMA})
    client.post("/v1/sql", json={"question": "q", "schema": SHOP_SCHEMA, "max_new_tokens": 10**6})
    want = [
        "sqltune_requests_total",
        'route="/v1/sql"',
        'outcome="ok"',
        'outcome="client_error"',
        "sqltune_request_latency_seconds_bucket",
        "sqltune_sql_generated_total",
        'valid="true"',
        "sqltune_batch_size_bucket",
        'phase="decode"',
        "sqltune_generated_tokens_total",
    ]
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{server['metrics_port']}/metrics", timeout=10).text
        if all(w in text for w in want):
            break
        time.sleep(1)
    missing = [w for w in want if w not in text]
    assert not missing, missing


def test_the_test_cluster_listens_on_loopback_only(server, ray_serve):
    """The tests' Ray (ray.init, Serve's HAProxy included) opens no port beyond loopback but the known ones."""
    import psutil

    from sqltune.k8s.localray import is_loopback, listening_sockets

    sockets = listening_sockets(psutil.Process().children(recursive=True))
    http_port = int(server["base"].rsplit(":", 1)[1])
    # Serve's HTTP port is HAProxy's (Ray Serve's high-throughput mode), on loopback.
    assert [(a, n) for a, p, n in sockets if p == http_port] == [("127.0.0.1", "haproxy")], sockets
    assert any(name == "gcs_server" for _, _, name in sockets), sockets
    env = ray_serve["serve_env"]
    haproxy_own = {int(env["RAY_SERVE_HAPROXY_STATS_PORT"]), int(env["RAY_SERVE_HAPROXY_METRICS_PORT"])}
    # Known and documented (docs/reliability.md), with no setting to change the address in Ray Serve 2.60:
    # each replica's inter-deployment gRPC server on "[::]:0" (ray/serve/_private/replica.py), and HAProxy's
    # stats page and Prometheus exporter ("bind *:port" in ray/serve/_private/haproxy_templates.py).
    exposed = [
        s
        for s in sockets
        if not is_loopback(s[0])
        and not s[2].startswith("ray::ServeReplica:")
        and not (s[2] == "haproxy" and s[1] in haproxy_own)
    ]
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_readyz_reports_the_replicas_start_by_part(server):
    """The replica's typed info crosses to the ingress with its start split into parts."""
    ready = httpx.get(f"{server['base']}/readyz", timeout=30).json()
    assert ready["status"] == "ready"
    parts = ready["startup"]
    assert {"weights_s", "engine_s"} <= set(parts), parts
    assert parts["weights_s"] + parts["engine_s"] <= ready["load_s"] + 0.02
