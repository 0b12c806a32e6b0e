"""Variants in-process (no Ray): prompt modes, the adapter on an NF4 base, HTTP retries and errors."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sqltune.errors import ModelError
from sqltune.evaluation import VariantConfig
from sqltune.evaluation.variants import HttpVariant, LocalVariant, with_mode
from sqltune.prompts import PromptTemplate

ITEM = {"question": "How many customers?", "schema": "CREATE TABLE customers (id INTEGER);", "dialect": "sqlite"}


def test_prompt_modes():
    custom = PromptTemplate(system="Only SQL for {dialect}.")
    assert with_mode(custom, "strict") is custom  # the artifact's own strict template is kept
    plain = with_mode(custom, "plain")
    assert plain.mode == "plain" and plain.system is None
    assert "helpful assistant" in plain.system_text("sqlite")
    assert with_mode(PromptTemplate(mode="plain"), "strict").mode == "strict"


def test_adapter_on_nf4_base(tiny_adapter):
    v = LocalVariant(VariantConfig.from_dict({"name": "a", "kind": "adapter", "model": str(tiny_adapter),
                                              "precision": "nf4"}), device="cpu")
    info = v.load()
    assert info["artifact_kind"] == "adapter"
    layer = v.loaded.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    assert type(layer).__name__ == "Linear4bit"
    (out,) = v.generate([ITEM], max_new_tokens=4)
    assert out.output_tokens <= 4 and out.latency_s > 0


@pytest.mark.parametrize("kind", ["adapter", "int8"])
def test_engine_decoding_matches_generate(tiny_adapter, tiny_base, kind):
    """generation.engine: the serving engine's greedy outputs are generate()'s, each with its own latency."""
    items = [ITEM, {**ITEM, "question": "List the customer ids."}, {**ITEM, "question": "Count rows twice."}]
    if kind == "adapter":
        cfg = {"name": "a", "kind": "adapter", "model": str(tiny_adapter), "precision": "fp32"}
    else:  # a bitsandbytes int8 model: the engine runs its own modules
        cfg = {"name": "q", "kind": "int8", "model": str(tiny_base)}
    plain = LocalVariant(VariantConfig.from_dict(cfg), device="cpu")
    plain.load()
    engine = LocalVariant(VariantConfig.from_dict(cfg), device="cpu", engine_slots=4)
    engine.load()
    try:
        a, b = plain.generate(items, max_new_tokens=12), engine.generate(items, max_new_tokens=12)
    finally:
        engine.close()
    assert [o.text for o in b] == [o.text for o in a]
    assert [o.output_tokens for o in b] == [o.output_tokens for o in a]
    assert all(o.latency_s > 0 for o in b) and engine.engine is None


def test_kind_must_match_the_artifact(tiny_adapter):
    v = LocalVariant(VariantConfig.from_dict({"name": "m", "kind": "merged", "model": str(tiny_adapter)}),
                     device="cpu")
    with pytest.raises(ModelError, match="is an adapter; use kind=adapter"):
        v.load()


class _Flaky:
    """An endpoint that answers 503 ``fail`` times, then succeeds; 400 for the question 'bad'."""

    def __init__(self, fail: int):
        self.calls = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                self._send(404, {})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.calls += 1
                if "Question: bad" in body["messages"][-1]["content"]:
                    return self._send(400, {"error": {"message": "field 'messages' is bad"}})
                if outer.calls <= fail:
                    return self._send(503, {"error": {"message": "overloaded"}})
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": "SELECT 1"}}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"  # a /v1 suffix is accepted too
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_http_retries_5xx_and_reports_4xx():
    flaky = _Flaky(fail=2)
    try:
        v = HttpVariant(VariantConfig.from_dict({"name": "h", "kind": "http", "url": flaky.url, "retries": 2}))
        assert v.load()["served_models"] == []  # /v1/models is optional
        (out,) = v.generate([ITEM], max_new_tokens=8)
        assert out.text == "SELECT 1" and out.output_tokens is None and flaky.calls == 3
        # A 4xx is not retried; the example is recorded as failed and the variant goes on.
        calls = flaky.calls
        (bad,) = v.generate([{**ITEM, "question": "bad"}], max_new_tokens=8)
        assert bad.text == "" and bad.error_category == "http_error" and flaky.calls == calls + 1
        assert "HTTP 400" in bad.error and "messages" in bad.error and "1 attempt(s)" in bad.error
        v.close()
    finally:
        flaky.close()


def test_http_missing_token_env(monkeypatch):
    monkeypatch.delenv("SQLTUNE_NOT_SET", raising=False)
    v = HttpVariant(VariantConfig.from_dict({"name": "h", "kind": "http", "url": "http://127.0.0.1:9",
                                             "api_key_env": "SQLTUNE_NOT_SET"}))
    with pytest.raises(Exception, match="SQLTUNE_NOT_SET"):
        v.load()


def test_repair_rounds_run_the_loop_on_the_examples_database(tiny_adapter, tmp_path):
    """repair_rounds: the first answer is checked on the example's database and regenerated with the error;
    the output is the loop's final SQL, with the rounds it used."""
    import sqlite3

    from sqltune.errors import ConfigError

    db = tmp_path / "t.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    items = [{**ITEM, "db": str(db)}]
    cfg = {"name": "r", "kind": "adapter", "model": str(tiny_adapter), "precision": "fp32"}
    plain = LocalVariant(VariantConfig.from_dict(cfg), device="cpu")
    plain.load()
    repaired = LocalVariant(VariantConfig.from_dict({**cfg, "repair_rounds": 2}), device="cpu")
    repaired.load()
    first = plain.generate(items, max_new_tokens=12)[0]
    out = repaired.generate(items, max_new_tokens=12)[0]
    assert out.repair_rounds is not None and 0 <= out.repair_rounds <= 2
    # Its tokens are counted, every round's: the first round is the plain variant's generation.
    assert isinstance(out.output_tokens, int) and out.output_tokens >= first.output_tokens > 0
    assert out.output_tokens <= 12 * (out.repair_rounds + 1)  # max_new_tokens a round, at most
    assert isinstance(out.prompt_tokens, int) and out.prompt_tokens >= first.prompt_tokens > 0
    if out.repair_rounds == 0:  # the first answer passed its checks: nothing to repair
        assert out.text == first.text and out.repair_passed
        assert (out.output_tokens, out.prompt_tokens) == (first.output_tokens, first.prompt_tokens)
    else:  # each repair round prefills the longer conversation again
        assert out.prompt_tokens > first.prompt_tokens * (out.repair_rounds + 1)
    with pytest.raises(ConfigError, match="repair_rounds applies to local kinds only"):
        VariantConfig.from_dict({"name": "h", "kind": "http", "url": "http://x", "repair_rounds": 1})
