"""The HTTP API (FastAPI): text-to-SQL, OpenAI-compatible chat completions, health, stats.

:func:`create_app` builds the app around a *backend* - the model replica's methods - so the same app
runs inside the Ray Serve ingress (backend = deployment handle) or in-process. Every request error is a
4xx JSON body in OpenAI's shape, ``{"error": {"message", "type", "param", "code", "status"}}``, where
``param`` names the offending field; the server answers 5xx only for its own failures.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import decimal
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from sqltune.serving.auth import BearerAuthMiddleware, tokens_from_env
from sqltune.serving.config import ServeArgs
from sqltune.serving.limits import BodySizeLimitMiddleware, BodyTooLarge
from sqltune.serving.metrics import IngressMetrics, MetricsMiddleware

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- backend


class Overloaded(Exception):
    """The model deployment's queue is full (Ray Serve back-pressure) or it has no replica."""


class BackendTimeout(Exception):
    pass


class BackendFailure(Exception):
    pass


class Backend(Protocol):
    async def call(self, method: str, payload: Any = None, *, timeout: float | None = None) -> Any: ...

    def stream(self, method: str, payload: Any, *, timeout: float | None = None) -> AsyncIterator[Any]: ...


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str = "invalid_request",
        type_: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type_ or _type_for(status)
        self.headers = headers


BACKEND_ERRORS = (Overloaded, BackendTimeout, BackendFailure)


def backend_error(exc: Exception, timeout_s: float) -> ApiError:
    """The HTTP error for one of :data:`BACKEND_ERRORS` (the backend call itself failed)."""
    if isinstance(exc, Overloaded):
        return ApiError(
            503, f"the model is at capacity, retry shortly ({exc})", code="overloaded", headers={"Retry-After": "1"}
        )
    if isinstance(exc, BackendTimeout):
        return ApiError(504, f"the request took longer than {timeout_s}s", code="timeout")
    return ApiError(500, f"the model replica failed: {exc}", code="model_error")


def raise_replica_error(result: Any) -> None:
    """Replicas answer a bad request with ``{"error": {...}}`` rather than raising: re-raise it here."""
    if isinstance(result, dict) and "error" in result:
        e = result["error"]
        raise ApiError(
            int(e.get("status", 400)),
            e.get("message", "invalid request"),
            param=e.get("param"),
            code=e.get("code", "invalid_request"),
        )


def _type_for(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 404:
        return "not_found_error"
    if status in (503, 504):
        return "overloaded_error" if status == 503 else "timeout_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str = "invalid_request",
    type_: str | None = None,
    details: list | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    err: dict[str, Any] = {
        "message": message,
        "type": type_ or _type_for(status),
        "param": param,
        "code": code,
        "status": status,
    }
    if details:
        err["details"] = details
    return JSONResponse({"error": err}, status_code=status, headers=headers)


# ------------------------------------------------------------------------------------------- schemas


class SQLRequest(BaseModel):
    """Text-to-SQL request. Give either ``schema`` (CREATE TABLE text) or ``database`` (a configured name)."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(..., description="The natural-language question.", examples=["How many customers?"])
    schema_text: str | None = Field(
        None, alias="schema", description="CREATE TABLE statements of the database."
    )
    database: str | None = Field(
        None, description="Name of a database configured on the server (args.databases)."
    )
    tables: list[str] | None = Field(
        None,
        description="With 'database': put only these of its tables in the prompt (schema linking done by "
        "the caller; a model trained on per-question table subsets wants the same here).",
        examples=[["customers", "orders"]],
    )
    dialect: str | None = Field(
        None, description="sqlite | duckdb | postgres (default: the database's, else sqlite)."
    )
    evidence: str | None = Field(None, description="Optional hint / domain knowledge (BIRD 'evidence').")
    max_new_tokens: int | None = Field(
        None, ge=1, description="Most tokens to generate (capped by the server)."
    )
    execute: bool = Field(False, description="Run the SQL on 'database' (read-only sandbox; never a write).")

    @field_validator("question")
    @classmethod
    def _question_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class SQLResponse(BaseModel):
    sql: str
    dialect: str
    valid: bool = Field(description="The SQL parses as exactly one statement in the dialect.")
    read_only: bool = Field(description="A single query with no writes, DDL, file or session access.")
    unknown_tables: list[str]
    unknown_columns: list[str]
    cleaned: bool = Field(description="Text besides the SQL (fences, prose, trailing text) was removed.")
    model: str
    latency_ms: float
    usage: Usage
    finish_reason: str | None = None
    executed: bool | None = Field(None, description="With execute: whether the SQL was run.")
    columns: list[str] | None = None
    rows: list[list[Any]] | None = None
    truncated: bool | None = None
    execution_error: str | None = None
    reasons: list[str] | None = Field(None, description="Why the SQL is not read-only (when it is not).")
    debug: dict[str, Any] | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None


class ChatRequest(BaseModel):
    """OpenAI chat completion request (fields the server does not use are accepted and ignored).

    Decoding is always greedy: ``temperature``/``top_p``/``seed`` are accepted for compatibility.
    """

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1)
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    ignore_eos: bool = Field(False, description="Extension (as in vLLM): generate exactly max_tokens tokens.")


# ------------------------------------------------------------------------------------------- helpers


def jsonable(value: Any) -> Any:
    """A JSON-safe version of a database value (no NaN/inf, bytes as base64, dates as ISO text)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        f = float(value)
        return f if math.isfinite(f) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


def _loc_param(loc: tuple | list) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    if not parts:
        return "body"
    out = parts[0]
    for p in parts[1:]:
        out += f"[{p}]" if p.isdigit() else f".{p}"
    return out


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    details = []
    status = 422
    for e in errors:
        etype = e.get("type", "")
        loc = e.get("loc", ())
        param = _loc_param(loc)
        msg = e.get("msg", "invalid value")
        if etype == "json_invalid":
            status = 400
            ctx = e.get("ctx") or {}
            msg = f"malformed JSON body: {ctx.get('error', msg)}"
            param = "body"
        elif etype == "missing" and tuple(loc) == ("body",):
            status = 400
            msg = "request body is missing: send a JSON object"
        elif etype == "model_attributes_type" and tuple(loc) == ("body",):
            status = 400
            msg = "request body must be a JSON object"
        elif etype == "extra_forbidden":
            msg = f"unknown field {param!r}"
        details.append({"param": param, "message": msg, "type": etype})
    first = details[0] if details else {"param": "body", "message": "invalid request"}
    message = "; ".join(f"{d['param']}: {d['message']}" for d in details[:5]) or "invalid request"
    if first["param"] == "body":
        message = first["message"]
    return error_response(status, message, param=first["param"], code="invalid_request", details=details)


# ------------------------------------------------------------------------------------------- the app


class _State:
    def __init__(self, args: ServeArgs, backend: Backend):
        self.args = args
        self.backend = backend
        self.metrics = IngressMetrics()
        self.schemas: dict[str, str] = {}
        self.db_dialects: dict[str, str] = {}
        self.lock = asyncio.Lock()

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
            from sqltune.data.schema import ddl_from_database
            from sqltune.sql import engine_of

            try:
                ddl = await run_in_threadpool(ddl_from_database, location, style=self.args.schema_style)
                dialect = engine_of(location)
            except Exception as exc:  # noqa: BLE001 - a broken configured database is the server's problem
                log.error("cannot read the schema of database %r: %s", name, exc)
                raise ApiError(
                    503, f"database {name!r} is unavailable", param="database", code="database_unavailable"
                ) from None
            self.schemas[name] = ddl
            self.db_dialects[name] = dialect
        return location, self.schemas[name], self.db_dialects[name]


def create_app(args: ServeArgs, backend: Backend) -> FastAPI:
    from sqltune import __version__

    app = FastAPI(
        title="sqltune",
        version=__version__,
        description=(
            "Text-to-SQL with a fine-tuned model. `/v1/sql` turns a question and a schema into one "
            "read-only-checked SQL query (and runs it on a configured database on request); "
            "`/v1/chat/completions` and `/v1/models` are OpenAI-compatible. Send `Authorization: Bearer "
            "<token>` when the server has a token configured."
        ),
    )
    state = _State(args, backend)
    app.state.sqltune = state

    # Middleware: the last added is the outermost. Metrics see every response, auth runs before any
    # body is read, the size limit before parsing.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=args.max_body_bytes)
    app.add_middleware(BearerAuthMiddleware, tokens=tokens_from_env(args.api_token_env))
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)

    @app.exception_handler(RequestValidationError)
    async def _on_validation(_request: Request, exc: RequestValidationError):
        return _validation_error(exc)

    @app.exception_handler(ApiError)
    async def _on_api_error(_request: Request, exc: ApiError):
        return error_response(
            exc.status, exc.message, param=exc.param, code=exc.code, type_=exc.type, headers=exc.headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(_request: Request, exc: StarletteHTTPException):
        if isinstance(exc, BodyTooLarge):
            return error_response(413, str(exc.detail), param="body", code="request_too_large")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(
            exc.status_code, str(exc.detail), code=code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _on_error(_request: Request, exc: Exception):
        log.exception("unhandled error")
        return error_response(500, f"internal error: {type(exc).__name__}", code="internal_error")

    # -- calling the model ----------------------------------------------------------------------

    async def call_model(method: str, payload: Any = None) -> Any:
        try:
            result = await backend.call(method, payload, timeout=args.request_timeout_s)
        except BACKEND_ERRORS as exc:
            raise backend_error(exc, args.request_timeout_s) from None
        raise_replica_error(result)
        return result

    def resolve_max_tokens(value: int | None, field: str) -> int:
        if value is None:
            return args.default_max_new_tokens
        if value > args.max_new_tokens_cap:
            raise ApiError(
                422,
                f"{field} is {value}; the limit is {args.max_new_tokens_cap}",
                param=field,
                code="too_large",
            )
        return value

    # -- routes ---------------------------------------------------------------------------------

    @app.get("/healthz", tags=["health"], summary="Liveness: the HTTP server is up.")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: the model is loaded and warmed up.")
    async def readyz():
        try:
            info = await backend.call("info", None, timeout=min(10.0, args.request_timeout_s))
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return error_response(503, f"model not ready: {type(exc).__name__}", code="not_ready")
        if not info.get("ready"):
            return error_response(503, "model is warming up", code="not_ready")
        return {"status": "ready", **info}

    @app.get(
        "/v1/stats", tags=["ops"], summary="Engine batch sizes and counters (one replica) and ingress counts."
    )
    async def stats():
        engine = await call_model("stats")
        return {"engine": engine, "ingress": dict(state.metrics.counts)}

    @app.post(
        "/v1/sql",
        response_model=SQLResponse,
        response_model_exclude_none=True,
        tags=["sql"],
        summary="Translate a question into SQL (optionally run it on a configured database).",
    )
    async def sql(body: SQLRequest):
        from sqltune.errors import SQLError
        from sqltune.prompts import clean_sql
        from sqltune.sql import analyze, canonical_dialect

        start = time.perf_counter()
        if (body.schema_text is None) == (body.database is None):
            raise ApiError(
                422,
                "give exactly one of 'schema' (CREATE TABLE text) or 'database' (a configured name)",
                param="schema" if body.schema_text is None else "database",
                code="invalid_request",
            )
        max_new = resolve_max_tokens(body.max_new_tokens, "max_new_tokens")
        location = None
        db_dialect = None
        if body.database is not None:
            location, schema, db_dialect = await state.database(body.database)
            if body.tables is not None:
                from sqltune.data.schema import select_tables
                from sqltune.errors import DataError

                if not body.tables:
                    raise ApiError(422, "tables must name at least one table (or be left out)", param="tables")
                try:
                    schema = select_tables(schema, body.tables)
                except DataError as exc:
                    raise ApiError(422, str(exc), param="tables") from None
        elif body.tables is not None:
            raise ApiError(422, "tables needs 'database'; with 'schema', send just the tables you want", param="tables")
        else:
            schema = body.schema_text or ""
            if not schema.strip():
                raise ApiError(422, "schema must not be empty", param="schema")
        if body.execute and location is None:
            raise ApiError(
                422, "execute needs 'database' (a database configured on the server)", param="execute"
            )
        try:
            dialect = canonical_dialect(body.dialect) if body.dialect else (db_dialect or "sqlite")
        except SQLError as exc:
            raise ApiError(422, str(exc), param="dialect") from None
        result = await call_model(
            "sql",
            {
                "question": body.question,
                "schema": schema,
                "dialect": dialect,
                "evidence": body.evidence,
                "max_new_tokens": max_new,
            },
        )
        cleaned = clean_sql(result["text"])
        analysis = await run_in_threadpool(analyze, cleaned.sql, dialect=dialect, schema=schema)
        valid = bool(analysis.parseable and analysis.num_statements == 1)
        state.metrics.sql_generated(valid, analysis.read_only)
        out: dict[str, Any] = {
            "sql": cleaned.sql,
            "dialect": dialect,
            "valid": valid,
            "read_only": bool(analysis.read_only),
            "unknown_tables": list(analysis.unknown_tables),
            "unknown_columns": list(analysis.unknown_columns),
            "cleaned": cleaned.cleaned,
            "model": result.get("model", args.served_name),
            "usage": {
                "prompt_tokens": result["prompt_tokens"],
                "completion_tokens": result["completion_tokens"],
            },
            "finish_reason": result.get("finish_reason"),
        }
        if not analysis.read_only and analysis.parseable:
            out["reasons"] = list(analysis.reasons)
        if body.execute:
            out.update(await _execute(state, cleaned.sql, analysis, location, dialect))
        if args.debug:
            out["debug"] = {
                "batch_size": result.get("batch", {}).get("max_decode_batch"),
                "prefill_batch": result.get("batch", {}).get("prefill_batch"),
                **result.get("timing", {}),
            }
        out["latency_ms"] = round((time.perf_counter() - start) * 1000, 2)
        return out

    @app.get("/v1/models", tags=["openai"], summary="OpenAI-compatible model list.")
    async def models():
        return {"object": "list", "data": [_model_card(args)]}

    @app.get("/v1/models/{model_id:path}", tags=["openai"], summary="OpenAI-compatible model lookup.")
    async def model(model_id: str):
        if model_id != args.served_name:
            raise ApiError(
                404,
                f"model {model_id!r} not found; this server serves {args.served_name!r}",
                param="model",
                code="model_not_found",
            )
        return _model_card(args)

    @app.post("/v1/chat/completions", tags=["openai"], summary="OpenAI-compatible chat completion (greedy).")
    async def chat(body: ChatRequest):
        if body.model and body.model != args.served_name:
            raise ApiError(
                404,
                f"model {body.model!r} not found; this server serves {args.served_name!r}",
                param="model",
                code="model_not_found",
            )
        if body.n not in (None, 1):
            raise ApiError(400, "only n=1 is supported (decoding is greedy)", param="n")
        if len(body.messages) > args.max_messages:
            raise ApiError(
                400, f"{len(body.messages)} messages; the limit is {args.max_messages}", param="messages"
            )
        field = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        max_tokens = resolve_max_tokens(body.max_completion_tokens or body.max_tokens, field)
        messages = []
        for i, m in enumerate(body.messages):
            content = m.content
            if isinstance(content, list):
                texts = []
                for j, part in enumerate(content):
                    if part.type != "text" or part.text is None:
                        raise ApiError(
                            400,
                            f"content part type {part.type!r} is not supported; send text",
                            param=f"messages[{i}].content[{j}]",
                        )
                    texts.append(part.text)
                content = "".join(texts)
            role = "system" if m.role == "developer" else m.role
            messages.append({"role": role, "content": content or ""})
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stops) > 4:
            raise ApiError(400, "at most 4 stop sequences", param="stop")
        payload = {
            "messages": messages,
            "max_tokens": max_tokens,
            "stop": stops,
            "ignore_eos": body.ignore_eos,
        }
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return await _stream_chat(backend, args, payload, cid, created, include_usage)
        result = await call_model("chat", payload)
        usage = {
            "prompt_tokens": result["prompt_tokens"],
            "completion_tokens": result["completion_tokens"],
            "total_tokens": result["prompt_tokens"] + result["completion_tokens"],
        }
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": args.served_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result["text"]},
                    "finish_reason": result["finish_reason"],
                    "logprobs": None,
                }
            ],
            "usage": usage,
            "system_fingerprint": None,
        }

    return app


def _model_card(args: ServeArgs) -> dict[str, Any]:
    return {"id": args.served_name, "object": "model", "created": 0, "owned_by": "sqltune"}


async def _execute(
    state: _State, sql: str, analysis: Any, location: str | None, dialect: str
) -> dict[str, Any]:
    """Run read-only SQL in the sandbox; anything else is returned unexecuted with the reason."""
    if not analysis.parseable:
        state.metrics.sql_executed("refused")
        return {
            "executed": False,
            "execution_error": f"not executed: the SQL does not parse ({analysis.error})",
        }
    if not analysis.read_only:
        state.metrics.sql_executed("refused")
        reasons = "; ".join(analysis.reasons) or "not a single read-only query"
        return {"executed": False, "execution_error": f"not executed: the SQL is not read-only ({reasons})"}
    from sqltune.errors import SqltuneError
    from sqltune.sql import execute

    args = state.args
    try:
        res = await run_in_threadpool(
            execute,
            sql,
            db=location,
            dialect=dialect,
            timeout_s=args.execute_timeout_s,
            max_rows=args.execute_max_rows,
        )
    except SqltuneError as exc:  # the configured database is missing or unreachable: the server's problem
        log.error("execute failed on the configured database: %s", exc)
        state.metrics.sql_executed("error")
        raise ApiError(
            503, "the database is unavailable", param="database", code="database_unavailable"
        ) from None
    out: dict[str, Any] = {"executed": res.error is None or res.category == "too_many_rows"}
    if res.error and res.category != "too_many_rows":
        state.metrics.sql_executed("error")
        out["execution_error"] = res.error
        return out
    state.metrics.sql_executed("ok")
    out["columns"] = list(res.columns)
    out["rows"] = [jsonable(list(r)) for r in res.rows[: args.execute_max_rows]]
    out["truncated"] = bool(res.truncated)
    return out


def _sse(data: Any) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _stream_chat(
    backend: Backend, args: ServeArgs, payload: dict, cid: str, created: int, include_usage: bool
):
    """Server-sent events in OpenAI's chat.completion.chunk format, ending with ``data: [DONE]``.

    The first item is awaited before the response starts, so request errors (prompt too long, server
    at capacity) still get a proper 4xx/503 JSON answer instead of a broken stream.
    """
    stream = backend.stream("chat_stream", payload, timeout=args.request_timeout_s)
    iterator = stream.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        raise ApiError(500, "the model returned no output", code="model_error") from None
    except BACKEND_ERRORS as exc:
        raise backend_error(exc, args.request_timeout_s) from None
    raise_replica_error(first)

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": args.served_name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    async def events():
        yield _sse(chunk({"role": "assistant", "content": ""}))
        item = first
        try:
            while True:
                if "error" in item:
                    yield _sse({"error": item["error"]})
                    break
                if "delta" in item:
                    yield _sse(chunk({"content": item["delta"]}))
                if "finish_reason" in item:
                    yield _sse(chunk({}, item["finish_reason"]))
                    if include_usage:
                        u = item.get("usage", {})
                        usage = {
                            "prompt_tokens": u.get("prompt_tokens", 0),
                            "completion_tokens": u.get("completion_tokens", 0),
                            "total_tokens": u.get("prompt_tokens", 0) + u.get("completion_tokens", 0),
                        }
                        yield _sse(
                            {
                                "id": cid,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": args.served_name,
                                "choices": [],
                                "usage": usage,
                            }
                        )
                    break
                try:
                    item = await iterator.__anext__()
                except StopAsyncIteration:
                    break
        except Exception as exc:  # noqa: BLE001 - the stream has started: report in-band
            log.warning("stream failed: %s", exc)
            yield _sse(
                {
                    "error": {
                        "message": f"stream failed: {type(exc).__name__}",
                        "type": "server_error",
                        "param": None,
                        "code": "stream_error",
                    }
                }
            )
        yield b"data: [DONE]\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
