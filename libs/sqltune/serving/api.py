"""The HTTP API (FastAPI): text-to-SQL, OpenAI-compatible chat completions, health, stats.

:func:`create_app` builds the app around a :class:`~sqltune.serving.backend.Backend` - the typed view of
the model replicas - so the same app runs inside the Ray Serve ingress or in-process. The routes live in
:mod:`.sql_api` and :mod:`.openai_api`, the bodies in :mod:`.schemas`, the error model in
:mod:`.http_errors`: every request error is a 4xx JSON body naming the offending field, and the server
answers 5xx only for its own failures.
"""

from __future__ import annotations

import dataclasses
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from sqltune import __version__
from sqltune.serving.auth import OPEN_PATHS, BearerAuthMiddleware, tokens_from_env
from sqltune.serving.backend import BACKEND_ERRORS, Backend
from sqltune.serving.config import ServeArgs
from sqltune.serving.http_errors import (
    ApiError,
    body_parse_error,
    error_response,
    error_responses,
    validation_error,
)
from sqltune.serving.limits import BodySizeLimitMiddleware, BodyTooLarge
from sqltune.serving.metrics import OUTCOME_KEY, MetricsMiddleware
from sqltune.serving.openai_api import add_openai_routes
from sqltune.serving.playground import PLAYGROUND_PATH, add_playground_routes
from sqltune.serving.sql_api import add_sql_routes
from sqltune.serving.state import AppState

log = logging.getLogger(__name__)


def create_app(args: ServeArgs, backend: Backend) -> FastAPI:
    app = FastAPI(
        title="sqltune",
        version=__version__,
        description=(
            "Text-to-SQL with a fine-tuned model. `/v1/sql` turns a question and a schema into one "
            "read-only-checked SQL query (and runs it on a configured database on request); "
            "`/v1/chat/completions` and `/v1/models` are OpenAI-compatible; `/playground` is a browser page for "
            "trying it. Send `Authorization: Bearer "
            "<token>` when the server has a token configured."
        ),
    )
    state = AppState(args, backend)
    app.state.sqltune = state

    # Middleware: the last added is the outermost. Metrics see every response, auth runs before any
    # body is read, the size limit before parsing.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=args.max_body_bytes)
    open_paths = OPEN_PATHS | {PLAYGROUND_PATH} if args.playground else OPEN_PATHS  # a static page, no data
    app.add_middleware(BearerAuthMiddleware, tokens=tokens_from_env(args.api_token_env), open_paths=open_paths)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)

    @app.exception_handler(RequestValidationError)
    async def _on_validation(_request: Request, exc: RequestValidationError):
        return validation_error(exc)

    @app.exception_handler(ApiError)
    async def _on_api_error(request: Request, exc: ApiError):
        if exc.outcome:
            request.scope[OUTCOME_KEY] = exc.outcome
        return error_response(
            exc.status, exc.message, param=exc.param, code=exc.code, type_=exc.type, headers=exc.headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(_request: Request, exc: StarletteHTTPException):
        if isinstance(exc, BodyTooLarge):
            return error_response(413, str(exc.detail), param="body", code="request_too_large")
        if exc.status_code == 400 and exc.__cause__ is not None:
            return body_parse_error(exc.__cause__)  # FastAPI's reader failed below JSON decoding
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(
            exc.status_code, str(exc.detail), code=code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _on_error(_request: Request, exc: Exception):
        log.exception("unhandled error")
        return error_response(500, f"internal error: {type(exc).__name__}", code="internal_error")

    @app.get("/healthz", tags=["health"], summary="Liveness: the HTTP server is up.")
    async def healthz():
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Readiness: the model is loaded and warmed up.",
        responses=error_responses(503),
    )
    async def readyz():
        try:
            info = await state.info()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            why = str(exc) if isinstance(exc, BACKEND_ERRORS) and str(exc) else type(exc).__name__
            return error_response(
                503, f"model not ready: {why}", code="not_ready", headers={"Retry-After": "1"}
            )
        if not info.ready:
            return error_response(503, "model is warming up", code="not_ready")
        return {"status": "ready", **dataclasses.asdict(info)}

    @app.get(
        "/v1/stats",
        tags=["ops"],
        summary="Engine batch sizes and counters (one replica), ingress counts, and how requests reach the "
        "replica (transport: grpc, actor or in-process).",
        responses=error_responses(401, 500, 503, 504),
    )
    async def stats():
        out = {
            "engine": await state.stats(),
            "ingress": dict(state.metrics.counts),
            "transport": state.backend.transport,
        }
        gathered = getattr(state.backend, "gathered", None)  # this ingress's coalesce_ms calls
        if gathered is not None:
            out["gathered"] = gathered
        return out

    add_sql_routes(app, state)
    add_openai_routes(app, state)
    add_playground_routes(app, state)
    _document_security(app, bool(tokens_from_env(args.api_token_env)))
    return app


def _document_security(app: FastAPI, auth: bool) -> None:
    """Declare the bearer token in the OpenAPI document (every route but the open ones needs it)."""
    if not auth:
        return
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        doc = build()
        doc.setdefault("components", {}).setdefault("securitySchemes", {})["bearerAuth"] = {
            "type": "http",
            "scheme": "bearer",
        }
        for path, ops in doc.get("paths", {}).items():
            if path in OPEN_PATHS:
                continue
            for op in ops.values():
                op["security"] = [{"bearerAuth": []}]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = ["create_app"]
