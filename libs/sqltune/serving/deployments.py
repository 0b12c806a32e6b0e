"""Ray Serve deployments: ``SQLModel`` (the model replica) and ``APIIngress`` (FastAPI), and build_app.

The ingress reaches the replicas through :class:`RayModelBackend`, whose typed methods are those of
:mod:`sqltune.serving.protocol`. ``serve/config.yaml`` names these deployments; its ``deployments:``
section overrides the defaults set here (replicas, autoscaling, ``max_ongoing_requests``,
``max_queued_requests``, GPUs per replica).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from sqltune.log import setup_logging
from sqltune.serving.api import create_app
from sqltune.serving.backend import BackendFailure, BackendTimeout, Overloaded
from sqltune.serving.config import RAY_SERVE_ENV, ServeArgs
from sqltune.serving.metrics import EngineMetrics
from sqltune.serving.protocol import (
    ChatGeneration,
    Completion,
    Rejection,
    ReplicaInfo,
    SqlGeneration,
    StreamEnd,
    StreamItem,
)

log = logging.getLogger(__name__)


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, BackPressureError):
        return Overloaded(getattr(exc, "message", str(exc)))
    if isinstance(exc, DeploymentUnavailableError):
        return Overloaded("no model replica is available")
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return BackendTimeout(str(exc))
    if isinstance(exc, (RayActorError, RayTaskError)):
        return BackendFailure(type(exc).__name__)
    return exc


async def _answer(response: DeploymentResponse, what: str, timeout: float | None) -> Any:
    """Await a replica's answer under ``timeout``; Ray's errors become the backend's."""

    async def wait():
        return await response

    try:
        return await asyncio.wait_for(wait(), timeout)
    except (asyncio.TimeoutError, TimeoutError):
        response.cancel()
        raise BackendTimeout(what) from None
    except Exception as exc:  # noqa: BLE001
        raise _translate(exc) from None


def _answer_of(task: asyncio.Task) -> Completion | Rejection:
    """A gathered request's answer; a failure in its generation is its own 500, not the whole call's."""
    exc = task.exception()
    if exc is None:
        return task.result()
    log.error("a gathered request failed: %s: %s", type(exc).__name__, exc)
    return Rejection(500, None, f"generation failed: {type(exc).__name__}", "generation_failed")


def hop_timing(result: Any, sent_unix: float) -> Any:
    """``result`` with the hop to the replica split in its timing: forward (from ``sent_unix``, when the
    ingress called, to the replica's handling) and return (from its end until now), both from wall clocks."""
    if not isinstance(result, Completion) or not result.timing.handler_end_unix:
        return result
    t = result.timing
    now = time.time()
    back = (now - t.handler_end_unix) * 1000
    forward = (now - sent_unix) * 1000 - t.handler_ms - back
    return dataclasses.replace(
        result, timing=dataclasses.replace(t, forward_ms=round(forward, 2), return_ms=round(back, 2))
    )


def transport_warning(environ: Mapping[str, str]) -> str | None:
    """What to tell an operator whose Ray processes lack :data:`RAY_SERVE_ENV` (None when all is set)."""
    unset = {k: v for k, v in RAY_SERVE_ENV.items() if environ.get(k) != v}
    if not unset:
        return None
    settings = " ".join(f"{k}={v}" for k, v in unset.items())
    return (
        f"Ray Serve runs without {settings}, outside its high-throughput mode: requests go through the "
        "Python HTTP proxy, a hand-over to a user-code thread in each replica, or Ray actor calls between "
        "the ingress and the model replica, each slower. Set it in the Ray cluster's environment before "
        "Ray starts (sqltune's images and manifests do)."
    )


def grpc_transport(environ: Mapping[str, str]) -> bool:
    """Whether Ray Serve carries handle calls over gRPC in a process with this environment (Ray's rule:
    the explicit setting, else on in the throughput-optimized mode)."""
    explicit = environ.get("RAY_SERVE_USE_GRPC_BY_DEFAULT")
    if explicit is not None:
        return explicit == "1"
    return environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1"


class _Gatherer:
    """Gathers generation requests into one streamed ``generate_many`` call while other calls are in flight
    (``coalesce_ms``). A request that finds nothing in flight goes at once, alone, so a lone client waits for
    nothing; under load, requests arriving within the window share a call, and each answer comes back as
    soon as its generation finishes. When the streamed call fails, its unanswered requests are sent again one
    by one (with the usual retry on another replica)."""

    def __init__(self, backend: RayModelBackend, window_s: float):
        self.backend = backend
        self.window_s = window_s
        self.waiting: list[tuple[str, Any, asyncio.Future]] = []  # (method, request, its answer)
        self.flush: asyncio.TimerHandle | None = None
        self.in_flight = 0
        self.tasks: set[asyncio.Task] = set()
        self.counts = {"calls": 0, "requests": 0}  # gathered calls and the requests they carried

    async def call(self, method: str, request: Any, timeout: float | None) -> Any:
        if self.in_flight == 0 and not self.waiting:
            self.in_flight += 1
            try:
                return await self.backend._once_more(method, request, timeout)
            finally:
                self.in_flight -= 1
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self.waiting.append((method, request, fut))
        if self.flush is None:
            self.flush = loop.call_later(self.window_s, self._send)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise BackendTimeout(method) from None

    def _send(self) -> None:
        items, self.waiting, self.flush = self.waiting, [], None
        self.counts["calls"] += 1
        self.counts["requests"] += len(items)
        task = asyncio.ensure_future(self._run(items))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, items: list[tuple[str, Any, asyncio.Future]]) -> None:
        self.in_flight += 1
        left = set(range(len(items)))
        try:
            sent = time.time()
            gen = self.backend.handle.options(stream=True).generate_many.remote([r for _, r, _ in items])
            async for answered in gen:
                for i, result in answered:
                    left.discard(i)
                    if not items[i][2].done():
                        items[i][2].set_result(hop_timing(result, sent))
        except Exception as exc:  # noqa: BLE001 - the unanswered go again one by one
            log.warning("a gathered call of %d requests failed (%s); sending the %d unanswered one by one",
                        len(items), _translate(exc), len(left))
        finally:
            self.in_flight -= 1
        await asyncio.gather(*(self._alone(*items[i]) for i in sorted(left)))

    async def _alone(self, method: str, request: Any, fut: asyncio.Future) -> None:
        """Send one request of a failed gathered call by itself; its waiting caller gets the outcome."""
        if fut.done():
            return
        try:
            answer = await self.backend._once_more(method, request, None)
        except Exception as exc:  # noqa: BLE001 - the waiting request raises it
            if not fut.done():
                fut.set_exception(exc)
        else:
            if not fut.done():
                fut.set_result(answer)


class RayModelBackend:
    """The ingress's :class:`~sqltune.serving.backend.Backend` over the SQLModel deployment handle."""

    def __init__(self, handle: DeploymentHandle, transport: str, coalesce_s: float = 0.0):
        self.handle = handle
        self.transport = transport
        self.gatherer = _Gatherer(self, coalesce_s) if coalesce_s > 0 else None

    @property
    def gathered(self) -> dict[str, int] | None:
        """The streamed calls that carried gathered requests, and those requests (None: ``coalesce_ms`` is
        off; a request that found nothing in flight went alone and is not counted)."""
        return None if self.gatherer is None else dict(self.gatherer.counts)

    def replicas(self) -> int | None:
        """Running replicas the handle's router knows (None before the first call, or if this Ray
        version's router cannot be read: then readiness asks a replica instead)."""
        try:
            router = self.handle._router
            request_router = router._asyncio_router.request_router if router is not None else None
            return None if request_router is None else len(request_router.curr_replicas)
        except Exception:  # noqa: BLE001 - a private structure: any change means "cannot tell"
            return None

    async def _once_more(self, method: str, request: Any, timeout: float | None) -> Any:
        """Call ``method``; when the replica dies under the call, once more on another replica if the
        router still has one (generation has no side effects, so the retry is safe)."""
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def once(limit: float | None) -> Any:
            sent = time.time()
            return hop_timing(await _answer(getattr(self.handle, method).remote(request), method, limit), sent)

        try:
            return await once(timeout)
        except BackendFailure:
            if not self.replicas():
                raise
            log.warning("a model replica died under a %s request; retrying it on another replica", method)
            return await once(None if timeout is None else max(0.001, timeout - (loop.time() - start)))

    async def sql(self, request: SqlGeneration, *, timeout: float | None = None) -> Completion | Rejection:
        if self.gatherer is not None:
            return await self.gatherer.call("sql", request, timeout)
        return await self._once_more("sql", request, timeout)

    async def chat(self, request: ChatGeneration, *, timeout: float | None = None) -> Completion | Rejection:
        if self.gatherer is not None:
            return await self.gatherer.call("chat", request, timeout)
        return await self._once_more("chat", request, timeout)

    async def info(self, *, timeout: float | None = None) -> ReplicaInfo:
        return await _answer(self.handle.info.remote(), "info", timeout)

    async def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        return await _answer(self.handle.stats.remote(), "stats", timeout)

    async def chat_stream(
        self, request: ChatGeneration, *, timeout: float | None = None
    ) -> AsyncIterator[StreamItem]:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        started = False
        try:
            async for item in self._stream(request, deadline):
                started = True
                yield item
        except BackendFailure:
            # Nothing was sent yet: the stream starts over on another replica, once, if there is one.
            if started or not self.replicas():
                raise
            log.warning("a model replica died before a stream started; retrying it on another replica")
            async for item in self._stream(request, deadline):
                yield item

    async def _stream(self, request: ChatGeneration, deadline: float | None) -> AsyncIterator[StreamItem]:
        gen = self.handle.options(stream=True).chat_stream.remote(request)
        loop = asyncio.get_running_loop()
        try:
            while True:
                left = None if deadline is None else max(0.001, deadline - loop.time())
                try:
                    item = await asyncio.wait_for(gen.__anext__(), left)
                except StopAsyncIteration:
                    return
                yield item
        except (asyncio.TimeoutError, TimeoutError):
            gen.cancel()
            raise BackendTimeout("chat_stream") from None
        except asyncio.CancelledError:
            gen.cancel()
            raise
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc) from None


@serve.deployment(
    name="SQLModel",
    max_ongoing_requests=64,
    max_queued_requests=256,
    ray_actor_options={"num_cpus": 1},
    health_check_period_s=10,
    health_check_timeout_s=30,
)
class SQLModel:
    """One model replica: loads the artifact, warms the engine up, batches every request it holds."""

    def __init__(self, args: dict[str, Any]):
        # Here, not at the top: the ingress imports this module too, and must not load torch.
        from sqltune.serving.replica import ModelServer

        setup_logging()  # this replica process's entry point
        self.server = ModelServer(ServeArgs.from_args(args))
        self.metrics = EngineMetrics()
        self.server.engine.on_batch = self.metrics.on_batch

    async def sql(self, request: SqlGeneration) -> Completion | Rejection:
        result = await self.server.sql(request)
        if isinstance(result, Completion):
            self.metrics.tokens(result.prompt_tokens, result.completion_tokens)
        return result

    async def chat(self, request: ChatGeneration) -> Completion | Rejection:
        result = await self.server.chat(request)
        if isinstance(result, Completion):
            self.metrics.tokens(result.prompt_tokens, result.completion_tokens)
        return result

    async def generate_many(
        self, requests: list[SqlGeneration | ChatGeneration]
    ) -> AsyncIterator[list[tuple[int, Completion | Rejection]]]:
        """Several requests at once (the ingress's ``coalesce_ms``): yields (index, answer) pairs as the
        generations finish, those finished together in one item. If the caller goes away, what is left is
        cancelled."""
        tasks = {
            asyncio.ensure_future(self.sql(r) if isinstance(r, SqlGeneration) else self.chat(r)): i
            for i, r in enumerate(requests)
        }
        pending = set(tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                yield [(tasks[t], _answer_of(t)) for t in done]
        finally:
            for t in pending:
                t.cancel()

    async def chat_stream(self, request: ChatGeneration) -> AsyncIterator[StreamItem]:
        async for item in self.server.chat_stream(request):
            if isinstance(item, StreamEnd):
                self.metrics.tokens(item.prompt_tokens, item.completion_tokens)
            yield item

    def info(self) -> ReplicaInfo:
        return self.server.info()

    def stats(self) -> dict[str, Any]:
        return self.server.stats()

    def reset_stats(self) -> None:
        self.server.reset_stats()

    def check_health(self) -> None:
        if not self.server.engine.running:
            raise RuntimeError("the generation engine is not running")

    def __del__(self):
        try:
            self.server.shutdown()
        except Exception:  # noqa: BLE001
            pass


@serve.deployment(
    name="APIIngress",
    max_ongoing_requests=256,
    max_queued_requests=512,
    ray_actor_options={"num_cpus": 0.5},
)
@serve.ingress()
class APIIngress:
    """HTTP ingress: auth, limits, validation, SQL analysis and execution; forwards generation to SQLModel."""

    def __init__(self, model: DeploymentHandle, args: dict[str, Any]):
        setup_logging()  # this replica process's entry point
        self.args = ServeArgs.from_args(args)
        # The handle was made where the app was built (the `serve run` CLI, a controller task), with that
        # process's transport default; this replica's own environment decides the hop it makes.
        warning = transport_warning(os.environ)
        if warning:
            log.warning("%s", warning)
        grpc = grpc_transport(os.environ)
        self.backend = RayModelBackend(
            model.options(_by_reference=not grpc), "grpc" if grpc else "actor", self.args.coalesce_ms / 1000
        )

    def __serve_build_asgi_app__(self):
        return create_app(self.args, self.backend)


def build_app(args: dict[str, Any] | None = None):
    """The Ray Serve application: ``serve run serve.app:build_app model_uri=...`` or serve/config.yaml."""
    cfg = ServeArgs.from_args(args or {})
    plain = cfg.to_dict()
    model = (
        SQLModel.options(**cfg.model_deployment).bind(plain) if cfg.model_deployment else SQLModel.bind(plain)
    )
    ingress = APIIngress.options(**cfg.ingress_deployment) if cfg.ingress_deployment else APIIngress
    return ingress.bind(model, plain)
