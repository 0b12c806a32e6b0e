"""The ingress's view of the model replicas: :class:`Backend`, typed after :mod:`sqltune.serving.protocol`.

The HTTP app (:func:`sqltune.serving.api.create_app`) calls a backend; inside Ray Serve it is
:class:`sqltune.serving.deployments.RayModelBackend` over the ``SQLModel`` deployment handle. A backend
raises one of :data:`BACKEND_ERRORS` when the call itself fails (queue full, deadline, replica died);
a request the replica refuses comes back as a :class:`~sqltune.serving.protocol.Rejection` value.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

from sqltune.serving.protocol import (
    ChatGeneration,
    Completion,
    Rejection,
    ReplicaInfo,
    SqlGeneration,
    StreamItem,
)


class Overloaded(Exception):
    """The model deployment's queue is full (Ray Serve back-pressure) or it has no replica."""


class BackendTimeout(Exception):
    """The replica did not answer within the request's deadline."""


class BackendFailure(Exception):
    """The replica failed while handling the call (it crashed or raised)."""


BACKEND_ERRORS = (Overloaded, BackendTimeout, BackendFailure)


class Backend(Protocol):
    transport: str
    """How requests reach the model replica: "grpc" or "actor" (Ray Serve's hops), or "in-process"."""

    async def sql(
        self, request: SqlGeneration, *, timeout: float | None = None
    ) -> Completion | Rejection: ...

    async def chat(
        self, request: ChatGeneration, *, timeout: float | None = None
    ) -> Completion | Rejection: ...

    def chat_stream(
        self, request: ChatGeneration, *, timeout: float | None = None
    ) -> AsyncIterator[StreamItem]: ...

    async def info(self, *, timeout: float | None = None) -> ReplicaInfo: ...

    async def stats(self, *, timeout: float | None = None) -> dict[str, Any]: ...

    def replicas(self) -> int | None:
        """How many model replicas the ingress can route to now (None: it cannot tell)."""
        ...


class InProcessBackend:
    """A :class:`Backend` over a replica in this process (a ``ModelServer``): tests and benchmarks run
    the HTTP app and the real replica code without Ray."""

    transport = "in-process"

    def __init__(self, replica: Any):
        self.replica = replica

    async def _bounded(self, coro, timeout: float | None, what: str):
        try:
            return await asyncio.wait_for(coro, timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise BackendTimeout(what) from None

    async def sql(self, request: SqlGeneration, *, timeout: float | None = None) -> Completion | Rejection:
        return await self._bounded(self.replica.sql(request), timeout, "sql")

    async def chat(self, request: ChatGeneration, *, timeout: float | None = None) -> Completion | Rejection:
        return await self._bounded(self.replica.chat(request), timeout, "chat")

    async def chat_stream(
        self, request: ChatGeneration, *, timeout: float | None = None
    ) -> AsyncIterator[StreamItem]:
        async for item in self.replica.chat_stream(request):
            yield item

    async def info(self, *, timeout: float | None = None) -> ReplicaInfo:
        return self.replica.info()

    async def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        return self.replica.stats()

    def replicas(self) -> int | None:
        return 1


__all__ = ["BACKEND_ERRORS", "Backend", "BackendFailure", "BackendTimeout", "InProcessBackend", "Overloaded"]
