"""Prometheus metrics through Ray's metrics API (exported on every node's Ray metrics endpoint).

``ray.serve.metrics`` adds the deployment/replica/application tags. Outside a Ray worker (unit tests,
the benchmark) the metric objects may be unavailable; every call is then a no-op, so metrics can never
break a request.

Exported series (Prometheus adds the ``ray_`` prefix):

* ``sqltune_requests_total{route, outcome, status}`` - requests by route and outcome
  (ok, client_error, unauthorized, too_large, overloaded, timeout, database_unavailable, replica_failed,
  client_closed, error). A client that disconnects before its answer is complete is counted with
  status ``499`` and outcome ``client_closed``, not as a server error.
* ``sqltune_request_latency_seconds{route}`` - end-to-end latency in the ingress (histogram).
* ``sqltune_sql_generated_total{valid, read_only}`` - generated SQL; valid-SQL rate =
  ``sum(rate(...{valid="true"}[5m])) / sum(rate(...[5m]))``.
* ``sqltune_sql_executed_total{outcome}`` - executions (ok, error, refused).
* ``sqltune_batch_size{phase}`` - sequences per engine pass (a prefill group; a decode chunk of up to
  ``decode_chunk`` steps counts once), histogram.
* ``sqltune_generated_tokens_total`` / ``sqltune_prompt_tokens_total``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqltune.serving.auth import app_path
from sqltune.serving.protocol import Timing

log = logging.getLogger(__name__)

OUTCOME_KEY = "sqltune.outcome"
"""Where a handler puts the outcome label the status alone does not tell (in the ASGI scope)."""
CLIENT_CLOSED = 499
"""The status counted for a request whose client disconnected first (nginx's convention)."""

LATENCY_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256]


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    if status == CLIENT_CLOSED:
        return "client_closed"
    if status == 401:
        return "unauthorized"
    if status == 413:
        return "too_large"
    if status == 503:
        return "overloaded"
    if status in (408, 504):
        return "timeout"
    if status < 500:
        return "client_error"
    return "error"


class _Noop:
    def inc(self, *a: Any, **k: Any) -> None:
        pass

    def observe(self, *a: Any, **k: Any) -> None:
        pass


def _make(kind: str, name: str, description: str, tag_keys: tuple[str, ...], boundaries=None):
    try:
        from ray.serve import metrics as m

        cls = getattr(m, kind)
        if boundaries is not None:
            return cls(name, description=description, boundaries=boundaries, tag_keys=tag_keys)
        return cls(name, description=description, tag_keys=tag_keys)
    except Exception as exc:  # noqa: BLE001 - no Ray worker/metrics agent: metrics are optional
        log.debug("metric %s unavailable: %s", name, exc)
        return _Noop()


class IngressMetrics:
    def __init__(self) -> None:
        self.requests = _make(
            "Counter",
            "sqltune_requests_total",
            "HTTP requests by route and outcome.",
            ("route", "outcome", "status"),
        )
        self.latency = _make(
            "Histogram",
            "sqltune_request_latency_seconds",
            "Request latency in the ingress.",
            ("route",),
            LATENCY_BUCKETS,
        )
        self.sql = _make(
            "Counter", "sqltune_sql_generated_total", "Generated SQL by validity.", ("valid", "read_only")
        )
        self.executed = _make(
            "Counter", "sqltune_sql_executed_total", "Executions of generated SQL.", ("outcome",)
        )
        self.counts: dict[str, int] = {}

    def request(self, route: str, status: int, seconds: float, outcome: str | None = None) -> None:
        outcome = outcome or outcome_of(status)
        key = f"{route} {outcome}"
        self.counts[key] = self.counts.get(key, 0) + 1
        try:
            self.requests.inc(1, tags={"route": route, "outcome": outcome, "status": str(status)})
            self.latency.observe(seconds, tags={"route": route})
        except Exception:  # noqa: BLE001
            log.debug("metrics failed", exc_info=True)

    def sql_generated(self, valid: bool, read_only: bool) -> None:
        key = f"sql valid={str(valid).lower()}"
        self.counts[key] = self.counts.get(key, 0) + 1
        try:
            self.sql.inc(1, tags={"valid": str(valid).lower(), "read_only": str(read_only).lower()})
        except Exception:  # noqa: BLE001
            log.debug("metrics failed", exc_info=True)

    def sql_executed(self, outcome: str) -> None:
        key = f"execute {outcome}"
        self.counts[key] = self.counts.get(key, 0) + 1
        try:
            self.executed.inc(1, tags={"outcome": outcome})
        except Exception:  # noqa: BLE001
            log.debug("metrics failed", exc_info=True)


class EngineMetrics:
    def __init__(self) -> None:
        self.batch = _make(
            "Histogram",
            "sqltune_batch_size",
            "Sequences per engine pass: a prefill group, or a decode chunk (up to decode_chunk steps, one "
            "observation for the chunk).",
            ("phase",),
            BATCH_BUCKETS,
        )
        self.generated = _make("Counter", "sqltune_generated_tokens_total", "Tokens generated.", ())
        self.prompt = _make("Counter", "sqltune_prompt_tokens_total", "Prompt tokens processed.", ())

    def on_batch(self, phase: str, size: int) -> None:
        self.batch.observe(size, tags={"phase": phase})

    def tokens(self, prompt: int, completion: int) -> None:
        try:
            if prompt:
                self.prompt.inc(prompt)
            if completion:
                self.generated.inc(completion)
        except Exception:  # noqa: BLE001
            log.debug("metrics failed", exc_info=True)


def server_timing(timing: Timing, ingress_s: float) -> str:
    """A ``Server-Timing`` header value (W3C; browsers' network panels show it), in milliseconds: the engine's
    queue, first token and total time (``replica``), the replica's whole handling around it (``handler``:
    prompt rendering, tokenization, decoding) and the ingress handler's own total. :class:`MetricsMiddleware`
    adds ``app``, the whole app's time to the answer (the handler plus parsing, validation, middleware).
    Through Ray Serve, ``fwd`` and ``ret`` split the hop between the ingress and the replica: from the call to
    the replica's handling, and from its end back to the ingress."""
    hop = f", fwd;dur={timing.forward_ms}, ret;dur={timing.return_ms}" if timing.forward_ms or timing.return_ms else ""
    return (
        f"queue;dur={timing.queue_ms}, ttft;dur={timing.ttft_ms}, replica;dur={timing.total_ms}, "
        f"handler;dur={timing.handler_ms}{hop}, ingress;dur={round(ingress_s * 1000, 2)}"
    )


class MetricsMiddleware:
    """Counts every HTTP response by route template and outcome, and observes its latency."""

    def __init__(self, app, metrics: IngressMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500
        finished = False  # the last body message went out
        disconnected = False  # the client left before that

        async def tracking_receive():
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect" and not finished:
                disconnected = True
            return message

        async def tracking_send(message):
            nonlocal status, finished, disconnected
            if message["type"] == "http.response.start":
                status = int(message["status"])
                # The app's whole time to its answer (body parsing, validation, middleware, the handler):
                # client latency minus this is the proxy's, the network's and the client's share.
                app_ms = round((time.perf_counter() - start) * 1000, 2)
                timing = (b"server-timing", b"app;dur=%.2f" % app_ms)
                message = {**message, "headers": [*message.get("headers", []), timing]}
            try:
                await send(message)
            except OSError:  # the client's socket is gone (uvicorn's ClientDisconnect is an OSError)
                disconnected = True
                raise
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True

        try:
            await self.app(scope, tracking_receive, tracking_send)
        except asyncio.CancelledError:
            disconnected = not finished  # Ray Serve cancels a request whose client disconnected
            raise
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or _known(scope)
            outcome = scope.get(OUTCOME_KEY)
            if disconnected:
                status, outcome = CLIENT_CLOSED, "client_closed"
            self.metrics.request(name, status, time.perf_counter() - start, outcome)


def _known(scope: dict) -> str:
    path = app_path(scope)
    known = ("/v1/sql", "/v1/chat/completions", "/v1/models", "/v1/stats", "/healthz", "/readyz")
    return path if path in known else "other"
