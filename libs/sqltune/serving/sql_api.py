"""``POST /v1/sql``: a question (and a schema, or a configured database) in; one analysed SQL query out,
optionally run read-only on the database."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import logging
import math
import time
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from sqltune.data.schema import select_tables
from sqltune.errors import DataError, SQLError, SqltuneError
from sqltune.prompts import clean_sql
from sqltune.serving.http_errors import MODEL_ROUTE_ERRORS, ApiError, database_unavailable
from sqltune.serving.protocol import SqlGeneration
from sqltune.serving.schemas import SQLRequest, SQLResponse
from sqltune.serving.state import AppState
from sqltune.sql import analyze, canonical_dialect, execute

log = logging.getLogger(__name__)


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


async def _schema_for(state: AppState, body: SQLRequest) -> tuple[str, str | None, str | None]:
    """(schema text for the prompt, database location, database dialect) of a request."""
    if (body.schema_text is None) == (body.database is None):
        raise ApiError(
            422,
            "give exactly one of 'schema' (CREATE TABLE text) or 'database' (a configured name)",
            param="schema" if body.schema_text is None else "database",
            code="invalid_request",
        )
    if body.database is not None:
        location, schema, db_dialect = await state.database(body.database)
        if body.tables is not None:
            if not body.tables:
                raise ApiError(422, "tables must name at least one table (or be left out)", param="tables")
            try:
                schema = select_tables(schema, body.tables)
            except DataError as exc:
                raise ApiError(422, f"tables: {exc}", param="tables") from None
        return schema, location, db_dialect
    if body.tables is not None:
        raise ApiError(
            422, "tables needs 'database'; with 'schema', send just the tables you want", param="tables"
        )
    schema = body.schema_text or ""
    if not schema.strip():
        raise ApiError(422, "schema must not be empty", param="schema")
    return schema, None, None


def add_sql_routes(app: FastAPI, state: AppState) -> None:
    args = state.args

    @app.post(
        "/v1/sql",
        response_model=SQLResponse,
        response_model_exclude_none=True,
        tags=["sql"],
        summary="Translate a question into SQL (optionally run it on a configured database).",
        responses=MODEL_ROUTE_ERRORS,
    )
    async def sql(body: SQLRequest):
        start = time.perf_counter()
        schema, location, db_dialect = await _schema_for(state, body)
        if body.execute and location is None:
            raise ApiError(
                422, "execute needs 'database' (a database configured on the server)", param="execute"
            )
        try:
            dialect = canonical_dialect(body.dialect) if body.dialect else (db_dialect or "sqlite")
        except SQLError as exc:
            raise ApiError(422, str(exc), param="dialect") from None
        result = await state.sql(
            SqlGeneration(
                question=body.question,
                schema=schema,
                dialect=dialect,
                evidence=body.evidence,
                max_new_tokens=body.max_new_tokens,
            )
        )
        cleaned = clean_sql(result.text)
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
            "model": result.model or args.served_name,
            "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens},
            "finish_reason": result.finish_reason,
        }
        if not analysis.read_only and analysis.parseable:
            out["reasons"] = list(analysis.reasons)
        if body.execute:
            out.update(await _execute(state, cleaned.sql, analysis, location, dialect, body.database))
        if args.debug:
            out["debug"] = {
                "batch_size": result.batch.max_decode_batch,
                "prefill_batch": result.batch.prefill_batch,
                "queue_ms": result.timing.queue_ms,
                "ttft_ms": result.timing.ttft_ms,
                "total_ms": result.timing.total_ms,
            }
        out["latency_ms"] = round((time.perf_counter() - start) * 1000, 2)
        return out


async def _execute(
    state: AppState, sql: str, analysis: Any, location: str | None, dialect: str, database: str | None
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
        raise database_unavailable(database) from None
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


__all__ = ["add_sql_routes", "jsonable"]
