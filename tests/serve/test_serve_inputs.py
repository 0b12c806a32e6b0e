"""No 500 on any input: property tests over the request bodies' fields, unparseable bodies, the database
outage, readiness without a replica, client disconnects in the metrics, the model's context length.

The HTTP app runs in-process over the real replica code (``ModelServer`` on the tiny model, through
:class:`~sqltune.serving.backend.InProcessBackend`), so the tokenizer sees every generated string; the
same cases over Ray Serve are in test_serve_api.py.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqltune.serving.api import create_app
from sqltune.serving.backend import InProcessBackend
from sqltune.serving.config import ServeArgs
from sqltune.serving.protocol import SqlGeneration

SCHEMA = "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT);"
TOKEN_ENV = "SQLTUNE_INPUTS_TEST_TOKEN"
EXAMPLES = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@pytest.fixture(scope="module")
def replica(tiny_model_dir, tmp_path_factory):
    """The real replica code on the tiny model (random weights: the answers are noise, the contract not)."""
    import torch

    from sqltune.serving.replica import ModelServer

    torch.set_num_threads(1)
    db = tmp_path_factory.mktemp("inputs-db") / "shop.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT)")
    server = ModelServer(
        {
            "model_uri": str(tiny_model_dir),
            "model_name": "tiny",
            "warmup": False,
            "max_batch_size": 4,
            "default_max_new_tokens": 2,
            "max_new_tokens_cap": 4,
            "max_question_tokens": 64,
            "max_schema_tokens": 256,
        }
    )
    server.db = db
    yield server
    server.shutdown()


def app_for(replica, monkeypatch=None, backend=None, **overrides):
    args = ServeArgs.from_args(
        {
            "model_uri": "/m",
            "model_name": "tiny",
            "api_token_env": TOKEN_ENV,
            "max_body_bytes": 65536,
            "request_timeout_s": 120,
            "databases": {"shop": str(replica.db)},
            **overrides,
        }
    )
    return create_app(args, backend or InProcessBackend(replica))


def post(app, path: str, content: bytes, headers: dict | None = None) -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as c:
            return await c.post(
                path, content=content, headers={"content-type": "application/json", **(headers or {})}
            )

    return asyncio.run(go())


# -- strategies -------------------------------------------------------------------------------------

LONE = st.integers(0xD800, 0xDFFF).map(chr)
PLAIN = st.text(max_size=24)
BAD = st.tuples(st.text(max_size=8), LONE, st.text(max_size=8)).map("".join)
TEXT = st.one_of(PLAIN, PLAIN, BAD, st.sampled_from(["", " ", "How many customers?", SCHEMA]))
JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), TEXT, st.lists(TEXT)
)


def maybe(strategy):
    """A field that is left out (None here), given a value of its type, or given junk."""
    return st.one_of(st.none(), strategy, strategy, JUNK)


SQL_BODY = st.fixed_dictionaries(
    {},
    optional={
        "question": st.one_of(TEXT, TEXT, JUNK),
        "schema": maybe(TEXT),
        "database": maybe(st.sampled_from(["shop", "nope"]) | TEXT),
        "tables": maybe(st.lists(st.sampled_from(["customers", "orders"]) | TEXT, max_size=3)),
        "dialect": maybe(st.sampled_from(["sqlite", "duckdb", "postgres", "oracle"]) | TEXT),
        "evidence": maybe(TEXT),
        "max_new_tokens": maybe(st.integers(-3, 10)),
        "execute": maybe(st.booleans()),
        "extra": TEXT,
    },
)
PART = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]) | TEXT}, optional={"text": TEXT})
MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "developer", "user", "assistant", "tool"]),
        "content": st.one_of(TEXT, st.lists(PART, max_size=2), st.none(), JUNK),
    }
)
CHAT_BODY = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(MESSAGE, min_size=1, max_size=3), st.lists(MESSAGE, max_size=0), JUNK)},
    optional={
        "model": maybe(st.just("tiny") | TEXT),
        "max_tokens": maybe(st.integers(-1, 6)),
        "max_completion_tokens": maybe(st.integers(-1, 6)),
        "stop": maybe(st.one_of(TEXT, st.lists(TEXT, max_size=5))),
        "stream": maybe(st.booleans()),
        "n": maybe(st.integers(0, 2)),
        "temperature": maybe(st.floats(-1, 3, allow_nan=False)),
        "ignore_eos": maybe(st.booleans()),
        "stream_options": maybe(st.fixed_dictionaries({"include_usage": st.booleans()})),
    },
)


def _encode(body) -> bytes:
    # ensure_ascii: a lone surrogate travels as the JSON escape \udXXX, as a client would send it
    return json.dumps(body, ensure_ascii=True).encode()


def _has_lone_surrogate(value) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(v) for v in value.values())
    return False


def _check_answer(r: httpx.Response) -> dict | None:
    """Never a 5xx; every error is the JSON error model, naming a field (or the body)."""
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        err = r.json()["error"]
        assert err["status"] == r.status_code
        assert err["message"] and "Traceback" not in err["message"]
        assert err["param"], err
        return err
    return None


# -- properties -------------------------------------------------------------------------------------


@EXAMPLES
@given(body=SQL_BODY)
def test_sql_any_body_gets_an_answer_or_a_4xx_naming_the_field(replica, body):
    app = app_for(replica)
    r = post(app, "/v1/sql", _encode(body))
    err = _check_answer(r)
    bad = sorted(k for k, v in body.items() if k != "extra" and isinstance(v, (str, list)) and _has_lone_surrogate(v))
    if bad and err and err["code"] == "invalid_unicode":
        assert r.status_code == 400
        assert err["param"].split("[")[0] in bad
    if bad and r.status_code < 400:
        pytest.fail(f"a lone surrogate in {bad} was accepted: {r.text}")


@EXAMPLES
@given(body=CHAT_BODY)
def test_chat_any_body_gets_an_answer_or_a_4xx_naming_the_field(replica, body):
    app = app_for(replica)
    r = post(app, "/v1/chat/completions", _encode(body))
    err = _check_answer(r)
    if err and err["code"] == "invalid_unicode":
        assert r.status_code == 400
        assert err["param"].startswith(("messages[", "model", "stop")), err
    if r.status_code == 200 and body.get("stream") is True:
        assert r.text.rstrip().endswith("data: [DONE]")
        assert '"error"' not in r.text, r.text


@pytest.mark.parametrize("stream", [False, True])
def test_lone_surrogate_is_a_400_naming_the_field(replica, stream):
    app = app_for(replica)
    r = post(app, "/v1/sql", b'{"question": "how many\\ud800?", "schema": "' + SCHEMA.encode() + b'"}')
    assert r.status_code == 400
    err = r.json()["error"]
    assert (err["param"], err["code"]) == ("question", "invalid_unicode")
    assert "U+D800" in err["message"] and "valid UTF-8" in err["message"]
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x\udc00"}]}], "stream": stream}
    r = post(app, "/v1/chat/completions", _encode(body))
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages[0].content[0].text"
    r = post(app, "/v1/chat/completions", _encode({"messages": [{"role": "user", "content": "hi"}], "stop": "\udfff"}))
    assert (r.status_code, r.json()["error"]["param"]) == (400, "stop")


@pytest.mark.parametrize(
    "content, why",
    [
        (b'{"question": "caf\xe9"}', "not UTF-8"),
        (b"[" * 10000 + b"]" * 10000, "nested too deeply"),
        (b'{"question": "q", "max_new_tokens": ' + b"7" * 5000 + b"}", "cannot be read"),
    ],
    ids=["not-utf8", "deep", "long-int"],
)
def test_unparseable_bodies_name_the_body(replica, content, why):
    r = post(app_for(replica), "/v1/sql", content)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "body"
    assert why in err["message"]


def test_database_outage_is_its_own_error_and_metric(replica, tmp_path):
    missing = tmp_path / "gone" / "db.sqlite"
    app = app_for(replica, databases={"down": f"postgresql://sqltune@127.0.0.1:1/none", "gone": str(missing)})
    for name in ("down", "gone"):
        r = post(app, "/v1/sql", _encode({"question": "How many customers?", "database": name}))
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert (err["type"], err["code"], err["param"]) == ("database_error", "database_unavailable", "database")
        assert name in err["message"]
        assert r.headers["retry-after"]
    counts = app.state.sqltune.metrics.counts
    assert counts.get("/v1/sql database_unavailable") == 2
    assert "/v1/sql overloaded" not in counts


class _NoReplica(InProcessBackend):
    def replicas(self) -> int:
        return 0

    async def info(self, *, timeout=None):
        raise AssertionError("readiness asked a replica although none is running")


def test_readyz_without_a_replica_answers_503_at_once(replica):
    async def go():
        app = app_for(replica, backend=_NoReplica(replica))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.get("/readyz")

    r = asyncio.run(go())
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "not_ready"
    assert "no model replica" in r.json()["error"]["message"]


class _Stuck(InProcessBackend):
    def __init__(self, replica):
        super().__init__(replica)
        self.entered = asyncio.Event()

    async def sql(self, request, *, timeout=None):
        self.entered.set()
        await asyncio.sleep(3600)


def test_client_disconnect_is_counted_as_499_not_500(replica):
    """Ray Serve cancels the request of a client that went away; the metrics say so."""

    async def go():
        backend = _Stuck(replica)
        app = app_for(replica, backend=backend)
        body = _encode({"question": "How many customers?", "schema": SCHEMA})
        sent = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            if messages:
                return messages.pop()
            await asyncio.sleep(3600)

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/sql",
            "raw_path": b"/v1/sql",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        task = asyncio.create_task(app(scope, receive, send))
        await backend.entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return app.state.sqltune.metrics.counts, sent

    counts, sent = asyncio.run(go())
    assert counts.get("/v1/sql client_closed") == 1, counts
    assert not any(k.endswith(" error") for k in counts), counts
    assert not sent


def test_prompt_caps_come_from_the_models_context_length(replica):
    """The default caps (question 256 + schema 2048 + template 256 + output 256) exceed the tiny model's
    2,048 positions: the replica's limits shrink to fit, so no prompt + output can pass 2,048."""
    from sqltune.serving.lengths import LengthLimits

    positions = replica.context_length
    assert positions == 2048
    limits = LengthLimits.from_args(ServeArgs.from_args({"model_uri": "/m"}), seq_len=2560, context_length=positions)
    assert limits.seq_len == positions
    assert limits.prompt_token_cap < positions and limits.max_schema_tokens < positions
    # The replica's own limits, through a request: a 2,180-token schema is refused, naming the schema.
    wide = ServeArgs.from_args({"model_uri": "/m", "max_schema_tokens": 4096, "max_prompt_tokens": 4096})
    replica_limits = replica.limits
    try:
        replica.limits = LengthLimits.from_args(wide, seq_len=4096, context_length=positions)
        schema = "CREATE TABLE t (" + ", ".join(f"c{i} INTEGER" for i in range(700)) + ");"
        assert replica.count_tokens(schema) > 2048
        result = asyncio.run(replica.sql(SqlGeneration("How many?", schema, "sqlite", max_new_tokens=4)))
    finally:
        replica.limits = replica_limits
    assert result.status == 400 and result.param == "schema", result
    assert "2047" in result.message
