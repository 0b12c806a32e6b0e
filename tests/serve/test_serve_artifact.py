"""The replica loads artifacts from s3:// and local paths only after checking them against the manifest."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from serve_helpers import PAIRS, SHOP_SCHEMA

from sqltune.errors import IntegrityError
from sqltune.serving.config import ServeArgs
from sqltune.serving.protocol import Completion, Rejection, SqlGeneration
from sqltune.serving.replica import ModelServer

ARGS = {"max_batch_size": 2, "warmup": False, "default_max_new_tokens": 24, "max_new_tokens_cap": 32}


def _ask(server: ModelServer, question: str, max_new_tokens: int | None = 24) -> Completion | Rejection:
    return asyncio.run(
        server.sql(SqlGeneration(question, SHOP_SCHEMA, "sqlite", max_new_tokens=max_new_tokens))
    )


def test_serves_a_published_s3_artifact(taught_model, s3_prefix, tmp_path, monkeypatch):
    from sqltune.storage import publish

    monkeypatch.setenv("SQLTUNE_CACHE", str(tmp_path / "cache"))
    uri = f"{s3_prefix}/runs/serve-test/merged"
    publish(str(taught_model), uri, kind="merged")
    server = ModelServer(ServeArgs.from_args({"model_uri": uri, **ARGS}))
    try:
        assert server.name == "serve-test-merged"
        assert server.info().artifact["kind"] == "merged"
        out = _ask(server, PAIRS[0][0])
        assert isinstance(out, Completion)
        assert out.text.strip() == PAIRS[0][1]  # the artifact's prompt template reproduces training's prompt
        assert out.finish_reason == "stop" and out.model == "serve-test-merged"
        # A request over a limit comes back as a value naming the field, not as an exception.
        refused = _ask(server, PAIRS[0][0], max_new_tokens=33)
        assert refused == Rejection(
            422, "max_new_tokens", "max_new_tokens is 33; the limit is 32", "too_large"
        )
    finally:
        server.shutdown()


def test_refuses_a_tampered_artifact(taught_model, tmp_path):
    bad = tmp_path / "merged"
    shutil.copytree(taught_model, bad)
    weights = bad / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="model.safetensors"):
        ModelServer(ServeArgs.from_args({"model_uri": str(bad), **ARGS}))
