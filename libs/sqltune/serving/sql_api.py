"""``POST /v1/sql``: a question (and a schema, or a configured database) in; one analysed SQL query out,
optionally checked and repaired (:mod:`sqltune.agent.repair`) and run read-only on the database. A schema
over the prompt budget is linked to the question (:mod:`sqltune.agent.linking`) instead of refused."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import decimal
import logging
import math
import time
from typing import Any

from fastapi import FastAPI, Response
from starlette.concurrency import run_in_threadpool

from sqltune.agent.linking import LinkResult, link_schema, sample_values
from sqltune.agent.repair import RepairConfig, RepairSession, target_for
from sqltune.data.schema import approx_token_count, select_tables
from sqltune.errors import DataError, SQLError, SqltuneError
from sqltune.generation.request import GREEDY
from sqltune.prompts import clean_sql
from sqltune.serving.http_errors import MODEL_ROUTE_ERRORS, ApiError, database_unavailable
from sqltune.serving.metrics import server_timing
from sqltune.serving.protocol import ChatMessageText, Completion, SqlGeneration
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


def _approx_too_long(schema: str, limit: int) -> bool:
    return approx_token_count(schema) > limit


async def _link(state: AppState, body: SQLRequest, schema: str, *, budget: int, reason: str) -> LinkResult:
    """The schema linked to the question (values sampled once per configured database)."""
    values = None
    if body.database is not None:
        values = state.value_indexes.get(body.database)
        if values is None:
            location = state.args.databases[body.database]
            try:
                values = await run_in_threadpool(sample_values, location, timeout_s=state.args.execute_timeout_s)
            except SqltuneError as exc:  # linking still works on names alone
                log.warning("cannot sample values of database %r: %s", body.database, exc)
                values = None
            if values is not None:
                state.value_indexes[body.database] = values
    return await run_in_threadpool(
        link_schema, body.question, schema, max_tokens=budget, values=values, reason=reason
    )


def _repair_config(state: AppState, body: SQLRequest, location: str | None) -> RepairConfig:
    """The loop's config from the request, capped by the server (422 naming ``repair.<field>``)."""
    r = body.repair
    assert r is not None
    args = state.args
    if r.max_rounds > args.repair_max_rounds:
        raise ApiError(422, f"repair.max_rounds is {r.max_rounds}; the limit is {args.repair_max_rounds}",
                       param="repair.max_rounds", code="too_large")
    if r.candidates > args.repair_max_candidates:
        raise ApiError(422, f"repair.candidates is {r.candidates}; the limit is {args.repair_max_candidates}",
                       param="repair.candidates", code="too_large")
    return RepairConfig(
        max_rounds=r.max_rounds, candidates=r.candidates, temperature=r.temperature, seed=r.seed,
        retry_on_empty=r.retry_on_empty, execute=location is not None, timeout_s=args.execute_timeout_s,
        max_rows=args.execute_max_rows,
    )


def add_sql_routes(app: FastAPI, state: AppState) -> None:
    args = state.args

    async def generate(body: SQLRequest, schema: str, dialect: str, history=(), sampling=GREEDY) -> Completion:
        return await state.sql(
            SqlGeneration(
                question=body.question,
                schema=schema,
                dialect=dialect,
                evidence=body.evidence,
                max_new_tokens=body.max_new_tokens,
                history=tuple(ChatMessageText(m["role"], m["content"]) for m in history),
                sampling=sampling,
            )
        )

    @app.post(
        "/v1/sql",
        response_model=SQLResponse,
        response_model_exclude_none=True,
        tags=["sql"],
        summary="Translate a question into SQL (optionally check, repair and run it on a configured database).",
        responses=MODEL_ROUTE_ERRORS,
    )
    async def sql(body: SQLRequest, response: Response):
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
        cfg = _repair_config(state, body, location) if body.repair is not None else None
        linking: LinkResult | None = None
        full_schema = schema
        may_link = body.link if body.link is not None else args.link_long_schemas
        if body.link or (may_link and _approx_too_long(schema, args.max_schema_tokens)):
            reason = "requested" if body.link else "budget"
            linking = await _link(state, body, schema, budget=args.max_schema_tokens, reason=reason)
            schema = linking.schema
        try:
            first = await generate(body, schema, dialect)
        except ApiError as exc:
            # The replica counts with the model's tokenizer, which gives more tokens than the estimate:
            # link (again) to a smaller budget, once.
            if not (may_link and exc.param == "schema" and exc.code == "too_long"):
                raise
            budget = (linking and approx_token_count(linking.schema) or args.max_schema_tokens) // 2
            linking = await _link(state, body, full_schema, budget=max(1, budget), reason="budget")
            schema = linking.schema
            first = await generate(body, schema, dialect)
        usage = {"prompt_tokens": first.prompt_tokens, "completion_tokens": first.completion_tokens}
        repair_out: dict[str, Any] | None = None
        final_rows = None
        text = first.text
        if cfg is not None:
            result = await _run_repair(state, body, cfg, first, schema, dialect, location, generate, usage)
            text = result.final.raw
            repair_out = result.to_dict()
            repair_out.pop("sql", None)
            if result.final.executed:
                final_rows = result.final
        cleaned = clean_sql(text)
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
            "model": first.model or args.served_name,
            "usage": usage,
            "finish_reason": first.finish_reason,
        }
        if not analysis.read_only and analysis.parseable:
            out["reasons"] = list(analysis.reasons)
        if body.execute:
            if final_rows is not None:
                state.metrics.sql_executed("ok")
                out.update(executed=True, columns=list(final_rows.columns),
                           rows=[jsonable(list(r)) for r in final_rows.rows[: args.execute_max_rows]],
                           truncated=bool(final_rows.truncated))
            else:
                out.update(await _execute(state, cleaned.sql, analysis, location, dialect, body.database))
        if repair_out is not None:
            out["repair"] = repair_out
        if linking is not None:
            out["linking"] = linking.to_dict()
        if args.debug:
            out["debug"] = {
                "batch_size": first.batch.max_decode_batch,
                "prefill_batch": first.batch.prefill_batch,
                "queue_ms": first.timing.queue_ms,
                "ttft_ms": first.timing.ttft_ms,
                "total_ms": first.timing.total_ms,
            }
        out["latency_ms"] = round((time.perf_counter() - start) * 1000, 2)
        response.headers["Server-Timing"] = server_timing(first.timing, time.perf_counter() - start)
        return out


async def _run_repair(state, body, cfg, first, schema, dialect, location, generate, usage) -> Any:
    """The execute-and-repair loop around the replica: the first greedy answer is round 0's first
    candidate; the rest of each round is generated here (sampled candidates, repair turns)."""
    with target_for(dialect, schema, location) as target:
        session = RepairSession([], target, cfg)  # the replica builds the prompt; the loop adds turns
        texts_first = True
        while not session.done:
            reqs = session.requests()
            t0 = time.perf_counter()
            if texts_first:
                rest = await asyncio.gather(*(generate(body, schema, dialect, c, s) for c, s in reqs[1:]))
                results = [first, *rest]
                texts_first = False
            else:
                results = list(await asyncio.gather(*(generate(body, schema, dialect, c, s) for c, s in reqs)))
            for r in results[1:] if results[0] is first else results:
                usage["prompt_tokens"] += r.prompt_tokens
                usage["completion_tokens"] += r.completion_tokens
            gen_ms = (time.perf_counter() - t0) * 1000 + (first.timing.total_ms if results[0] is first else 0)
            try:
                await run_in_threadpool(session.submit, [r.text for r in results], gen_ms)
            except SqltuneError as exc:  # the configured database cannot be opened: the server's problem
                log.error("repair checks failed on the configured database: %s", exc)
                raise database_unavailable(body.database) from None
        return session.result()


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
