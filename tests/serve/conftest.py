"""Fixtures for the serving tests: a tiny model taught three answers, a SQLite shop, a local Ray Serve.

The tiny model starts from random weights; a few dozen optimizer steps on three (question, SQL) pairs make
it answer those questions deterministically, which is what the execute tests need (a known read-only
query and a known write). Everything else checks the API contract, not the SQL's quality.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from serve_helpers import (
    CORPUS,
    NEW_TOKEN,
    OLD_TOKEN,
    OTHER_SCHEMA,
    PAIRS,
    ROTATION_ENV,
    SHOP_SCHEMA,
    TOKEN,
    TOKEN_ENV,
    UNSET_TOKEN_ENV,
    free_port,
    wait_ready,
)

from sqltune.serving.config import local_serve_env


def _teach(model_dir: Path, schemas: list[str], steps: int = 120) -> None:
    """Fit the tiny model on PAIRS x schemas (full fine-tuning, SQL-only loss) so it answers them exactly."""
    import torch

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only contend (100x slower on a busy 2-core box)
    try:
        _fit(model_dir, schemas, steps)
    finally:
        torch.set_num_threads(threads)


def _fit(model_dir: Path, schemas: list[str], steps: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sqltune.data.record import Example
    from sqltune.prompts import PromptTemplate, tokenize_for_training

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    template = PromptTemplate()
    rows = [
        tokenize_for_training(Example(id=f"{i}-{j}", question=q, schema=schema, sql=s), tok, template)
        for i, (q, s) in enumerate(PAIRS)
        for j, schema in enumerate(schemas)
    ]
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.tensor([r["input_ids"] + [tok.pad_token_id] * (width - len(r["input_ids"])) for r in rows])
    labels = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in rows])
    mask = (torch.arange(width)[None] < torch.tensor([len(r["input_ids"]) for r in rows])[:, None]).long()
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    model.save_pretrained(model_dir, safe_serialization=True)
    template.save(model_dir)


@pytest.fixture(scope="session")
def taught_model(tmp_path_factory, shop_db) -> Path:
    """A published (manifest-verified) tiny model artifact that answers PAIRS; returns its directory.

    It learns each question with the schema text a client sends (SHOP_SCHEMA) and with the schema the
    server reads from the configured database (for ``"database": "shop"``).
    """
    from sqltune.data.schema import ddl_from_database
    from sqltune.models.loading import write_artifact_info
    from sqltune.models.tiny import TinyModelConfig, build_tiny_model
    from sqltune.storage import publish

    work = tmp_path_factory.mktemp("serve-model")
    src = build_tiny_model(
        work / "build",
        TinyModelConfig(
            vocab_size=512, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128
        ),
        corpus=CORPUS * 20,
    )
    # SHOP_SCHEMA is also the compact form the server renders by default (schema_style); the full form
    # is what schema_style="full" gives.
    assert ddl_from_database(shop_db, style="compact") == SHOP_SCHEMA
    _teach(src, [SHOP_SCHEMA, ddl_from_database(shop_db, style="full"), OTHER_SCHEMA])
    write_artifact_info(src, kind="merged", base_model="tiny", precision="fp32", run_name="serve-test")
    dest = work / "published" / "merged"
    publish(src, str(dest), kind="merged")
    return dest


@pytest.fixture(scope="session")
def shop_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("serve-db") / "shop.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, country TEXT)")
    conn.executemany(
        "INSERT INTO customers VALUES (?, ?, ?)", [(1, "Ada", "UK"), (2, "Bo", "SE"), (3, "Chen", "CN")]
    )
    conn.commit()
    conn.close()
    return path


@pytest.fixture(scope="session")
def ray_serve():
    """A local Ray cluster with Serve on a free loopback port; yields its URL and Prometheus port."""
    import ray
    from ray import serve

    started = False
    metrics_port = None
    serve_env: dict[str, str] = {}
    if not ray.is_initialized():
        # Ray Serve as the images and manifests run it, with this cluster's own HAProxy files and ports.
        # Ray's processes take the environment when Ray starts; this process (a handle's caller) keeps its own.
        saved = dict(os.environ)
        serve_env = local_serve_env()
        os.environ.update(serve_env)
        metrics_port = free_port()
        try:
            ray.init(
                num_cpus=4,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                _metrics_export_port=metrics_port,
            )
        finally:
            os.environ.clear()
            os.environ.update(saved)
        started = True
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield {"base": f"http://127.0.0.1:{port}", "metrics_port": metrics_port, "serve_env": serve_env}
    serve.shutdown()
    if started:
        ray.shutdown()
        shutil.rmtree(serve_env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"], ignore_errors=True)


@pytest.fixture(scope="session")
def server(ray_serve, taught_model, shop_db) -> dict:
    """The main app: auth on, small caps, the shop database configured. Yields its settings."""
    from ray import serve

    from sqltune.serving.deployments import build_app

    args = {
        "model_uri": str(taught_model),
        "model_name": "sqltune-tiny",
        "max_batch_size": 8,
        "batch_wait_timeout_s": 0.02,
        # Admission batching and the prefix cache on: answers must not change with them (the requests
        # share their system prompt and schema).
        "admit_wait_s": 0.01,
        "prefix_cache": 2,
        "default_max_new_tokens": 32,
        "max_new_tokens_cap": 64,
        "max_question_tokens": 64,
        "max_schema_tokens": 256,
        "max_body_bytes": 8192,
        "request_timeout_s": 60,
        "api_token_env": TOKEN_ENV,
        "databases": {"shop": str(shop_db)},
        "ingress_deployment": {
            "ray_actor_options": {"num_cpus": 0.5, "runtime_env": {"env_vars": {TOKEN_ENV: TOKEN}}}
        },
        "model_deployment": {"max_ongoing_requests": 32, "max_queued_requests": 64},
    }
    serve.run(build_app(args), name="sqltune-test", route_prefix="/")
    wait_ready(ray_serve["base"])
    return {
        "base": ray_serve["base"],
        "metrics_port": ray_serve["metrics_port"],
        "token": TOKEN,
        "headers": {"Authorization": f"Bearer {TOKEN}"},
        "args": args,
        "db": shop_db,
    }


@pytest.fixture(scope="session")
def overload_server(ray_serve, taught_model) -> str:
    """A second app whose model deployment holds one request and queues one: the rest must get 503."""
    from ray import serve

    from sqltune.serving.deployments import build_app

    assert UNSET_TOKEN_ENV not in os.environ
    args = {
        "model_uri": str(taught_model),
        "max_batch_size": 2,
        "max_new_tokens_cap": 64,
        "default_max_new_tokens": 64,
        "warmup": False,
        "api_token_env": UNSET_TOKEN_ENV,  # no token configured: authentication is off
        "model_deployment": {
            "max_ongoing_requests": 1,
            "max_queued_requests": 1,
            "ray_actor_options": {"num_cpus": 0.5},
        },
        "ingress_deployment": {
            "max_ongoing_requests": 100,
            "max_queued_requests": 200,
            "ray_actor_options": {"num_cpus": 0.25},
        },
    }
    serve.run(build_app(args), name="sqltune-overload", route_prefix="/overload")
    base = f"{ray_serve['base']}/overload"
    wait_ready(base)
    return base


@pytest.fixture(scope="session")
def adapter_server(ray_serve, tiny_base, tiny_adapter, tmp_path_factory) -> dict:
    """A third app serving a LoRA adapter on the base given by ``base_model_uri``, with two tokens
    (rotation). The adapter's own record names a base that does not exist, so only base_model_uri works."""
    import json
    import shutil

    from ray import serve

    from sqltune.serving.deployments import build_app

    adapter = tmp_path_factory.mktemp("served-adapter") / "adapter"
    shutil.copytree(tiny_adapter, adapter)
    info_path = adapter / "sqltune_artifact.json"
    info = json.loads(info_path.read_text())
    assert info["kind"] == "adapter" and info["base_model"] == str(tiny_base)
    info["base_model"] = str(tmp_path_factory.getbasetemp() / "no-such-recorded-base")
    info_path.write_text(json.dumps(info))
    args = {
        "model_uri": str(adapter),
        "base_model_uri": str(tiny_base),
        "model_name": "tiny-adapter",
        "max_batch_size": 2,
        "default_max_new_tokens": 24,
        "max_new_tokens_cap": 32,
        "warmup": False,
        "api_token_env": ROTATION_ENV,
        "model_deployment": {"ray_actor_options": {"num_cpus": 0.5}},
        "ingress_deployment": {
            "ray_actor_options": {
                "num_cpus": 0.25,
                "runtime_env": {"env_vars": {ROTATION_ENV: f"{OLD_TOKEN}, {NEW_TOKEN}"}},
            }
        },
    }
    serve.run(build_app(args), name="sqltune-adapter", route_prefix="/adapter")
    base = f"{ray_serve['base']}/adapter"
    wait_ready(base)
    return {"base": base, "adapter": adapter, "base_model": tiny_base}


@pytest.fixture()
def client(server):
    import httpx

    with httpx.Client(base_url=server["base"], headers=server["headers"], timeout=60) as c:
        yield c


os.environ.setdefault("RAY_DEDUP_LOGS", "0")
