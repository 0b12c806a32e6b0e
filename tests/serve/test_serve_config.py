"""serve/config.yaml is a valid Ray Serve config whose args are valid ServeArgs; build_app validates."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import yaml

from sqltune.errors import ConfigError
from sqltune.serving.config import RAY_SERVE_ENV, ServeArgs, local_serve_env

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "serve" / "config.yaml"


def _serve_app_module():
    spec = importlib.util.spec_from_file_location("sqltune_serve_app_under_test", ROOT / "serve" / "app.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_config_yaml_is_a_valid_serve_config():
    from ray.serve.schema import ServeDeploySchema

    data = yaml.safe_load(CONFIG.read_text())
    schema = ServeDeploySchema.parse_obj(data)
    app = schema.applications[0]
    assert app.import_path == "serve.app:build_app"
    names = {d["name"] for d in data["applications"][0]["deployments"]}
    assert names == {"SQLModel", "APIIngress"}
    for dep in data["applications"][0]["deployments"]:
        assert {"max_ongoing_requests", "max_queued_requests", "autoscaling_config"} <= set(dep)
    args = ServeArgs.from_args(data["applications"][0]["args"])
    assert args.model_uri.startswith("s3://")
    assert args.request_timeout_s < data["http_options"]["request_timeout_s"]


def test_build_app_builds_and_names_bad_fields():
    from ray.serve import Application

    mod = _serve_app_module()
    data = yaml.safe_load(CONFIG.read_text())
    assert isinstance(mod.build_app(data["applications"][0]["args"]), Application)
    with pytest.raises(ConfigError, match="max_batch_size"):
        mod.build_app({"model_uri": "/m", "max_batch_size": 0})
    with pytest.raises(ConfigError, match="did you mean 'max_batch_size'"):
        mod.build_app({"model_uri": "/m", "max_batch_sizes": 4})
    with pytest.raises(ConfigError, match="model_uri"):
        mod.build_app({})
    with pytest.raises(ConfigError, match="default_max_new_tokens"):
        mod.build_app({"model_uri": "/m", "default_max_new_tokens": 500, "max_new_tokens_cap": 100})


def test_serve_run_string_args_are_parsed():
    # `serve run serve.app:build_app key=value ...` passes every value as a string.
    args = ServeArgs.from_args(
        {
            "model_uri": "/models/merged",
            "max_batch_size": "8",
            "cuda_graphs": "false",
            "databases": '{"shop": "/data/shop.sqlite"}',
            "base_model_uri": "",
        }
    )
    assert args.max_batch_size == 8 and args.cuda_graphs is False
    assert args.databases == {"shop": "/data/shop.sqlite"}
    assert args.base_model_uri is None
    assert args.served_name == "models-merged"
    assert ServeArgs.from_args({"model_uri": "s3://b/runs/tiny/merged"}).served_name == "tiny-merged"
    assert args.seq_len == args.max_question_tokens + args.max_schema_tokens + 256 + args.max_new_tokens_cap


def test_each_local_cluster_gets_haproxy_files_and_ports_of_its_own():
    first, second = local_serve_env(), local_serve_env()
    try:
        for env in (first, second):
            assert {k: env[k] for k in RAY_SERVE_ENV} == RAY_SERVE_ENV
            # HAProxy refuses unix socket paths over 97 characters; Ray puts each under a 56-character node id.
            for key in ("RAY_SERVE_HAPROXY_SOCKET_PATH", "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH"):
                base, name = env[key].rsplit("/", 1)
                assert len(f"{base}/{'f' * 56}/{name}") <= 97, env[key]
            assert Path(env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"]).is_dir()
            assert env["RAY_SERVE_HAPROXY_STATS_PORT"] != env["RAY_SERVE_HAPROXY_METRICS_PORT"]
        own = [k for k in first if k.startswith("RAY_SERVE_HAPROXY_")]
        assert len(own) == 7, own
        shared = {k for k in own if first[k] == second[k]}
        assert not shared, shared
    finally:
        for env in (first, second):
            shutil.rmtree(env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"], ignore_errors=True)
