"""What the HTTP routes share: the server's args, the model backend, metrics, configured databases.

:class:`AppState`'s ``sql``/``chat``/``chat_stream``/``info``/``stats`` call the replica through the
backend under the request deadline and turn failures into :class:`~sqltune.serving.http_errors.ApiError`:
a refused request into its 4xx, a failed call into 503/504/500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool

from sqltune.data.schema import ddl_from_database
from sqltune.serving.backend import BACKEND_ERRORS, Backend, Overloaded
from sqltune.serving.config import ServeArgs
from sqltune.serving.http_errors import ApiError, backend_error, database_unavailable
from sqltune.serving.metrics import IngressMetrics
from sqltune.serving.protocol import (
    ChatGeneration,
    Completion,
    Rejection,
    ReplicaInfo,
    SqlGeneration,
    StreamItem,
)
from sqltune.sql import engine_of

log = logging.getLogger(__name__)


def _accepted(result: Completion | Rejection) -> Completion:
    if isinstance(result, Rejection):
        raise ApiError.from_rejection(result)
    return result


class AppState:
    def __init__(self, args: ServeArgs, backend: Backend):
        self.args = args
        self.backend = backend
        self.metrics = IngressMetrics()
        self.schemas: dict[str, str] = {}
        self.db_dialects: dict[str, str] = {}
        self.value_indexes: dict[str, Any] = {}  # database -> sampled values for schema linking
        self.lock = asyncio.Lock()

    # -- the model -------------------------------------------------------------------------------

    async def sql(self, request: SqlGeneration) -> Completion:
        try:
            result = await self.backend.sql(request, timeout=self.args.request_timeout_s)
        except BACKEND_ERRORS as exc:
            raise backend_error(exc, self.args.request_timeout_s) from None
        return _accepted(result)

    async def chat(self, request: ChatGeneration) -> Completion:
        try:
            result = await self.backend.chat(request, timeout=self.args.request_timeout_s)
        except BACKEND_ERRORS as exc:
            raise backend_error(exc, self.args.request_timeout_s) from None
        return _accepted(result)

    async def chat_stream(self, request: ChatGeneration) -> tuple[StreamItem, AsyncIterator[StreamItem]]:
        """The first item (awaited here, so a refused request or a full queue is still a JSON error, not a
        broken stream) and the iterator of the rest."""
        iterator = self.backend.chat_stream(request, timeout=self.args.request_timeout_s).__aiter__()
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            raise ApiError(500, "the model returned no output", code="model_error") from None
        except BACKEND_ERRORS as exc:
            raise backend_error(exc, self.args.request_timeout_s) from None
        if isinstance(first, Rejection):
            raise ApiError.from_rejection(first)
        return first, iterator

    async def info(self) -> ReplicaInfo:
        """Raises whatever the backend raises (readiness treats any failure as not ready); with no
        replica to route to, raises :class:`Overloaded` at once instead of waiting for one."""
        count = self.backend.replicas() if hasattr(self.backend, "replicas") else None
        if count == 0:
            raise Overloaded("no model replica is running")
        return await self.backend.info(timeout=min(10.0, self.args.request_timeout_s))

    async def stats(self) -> dict[str, Any]:
        try:
            return await self.backend.stats(timeout=self.args.request_timeout_s)
        except BACKEND_ERRORS as exc:
            raise backend_error(exc, self.args.request_timeout_s) from None

    # -- configured databases --------------------------------------------------------------------

    async def database(self, name: str) -> tuple[str, str, str]:
        """(location, schema text, dialect) of a configured database; the schema is read once."""
        if name not in self.args.databases:
            known = ", ".join(sorted(self.args.databases)) or "none are configured"
            raise ApiError(
                404,
                f"unknown database {name!r}; configured: {known}",
                param="database",
                code="database_not_found",
            )
        location = self.args.databases[name]
        if name not in self.schemas:
            try:
                ddl = await run_in_threadpool(ddl_from_database, location, style=self.args.schema_style)
                dialect = engine_of(location)
            except Exception as exc:  # noqa: BLE001 - a broken configured database is the server's problem
                log.error("cannot read the schema of database %r: %s", name, exc)
                raise database_unavailable(name) from None
            self.schemas[name] = ddl
            self.db_dialects[name] = dialect
        return location, self.schemas[name], self.db_dialects[name]


__all__ = ["AppState"]
