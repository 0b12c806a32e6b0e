"""OpenAI-compatible routes: ``/v1/models``, ``/v1/models/{id}`` and ``/v1/chat/completions`` (greedy, or
sampled with ``temperature``/``top_p``/``seed``/``n``; streaming as server-sent events in OpenAI's
``chat.completion.chunk`` format)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import StreamingResponse

from sqltune.generation.request import GREEDY, Sampling
from sqltune.serving.config import ServeArgs
from sqltune.serving.backend import BACKEND_ERRORS
from sqltune.serving.metrics import server_timing
from sqltune.serving.http_errors import (
    MODEL_ROUTE_ERRORS,
    ApiError,
    backend_error,
    error_responses,
    type_for,
)
from sqltune.serving.protocol import (
    ChatGeneration,
    ChatMessageText,
    Rejection,
    StreamDelta,
    StreamEnd,
    StreamItem,
)
from sqltune.serving.schemas import ChatRequest
from sqltune.serving.state import AppState

log = logging.getLogger(__name__)


def _model_card(args: ServeArgs) -> dict[str, Any]:
    return {"id": args.served_name, "object": "model", "created": 0, "owned_by": "sqltune"}


def _not_served(args: ServeArgs, model_id: str) -> ApiError:
    return ApiError(
        404,
        f"model {model_id!r} not found; this server serves {args.served_name!r}",
        param="model",
        code="model_not_found",
    )


def chat_sampling(body: ChatRequest) -> Sampling:
    """Greedy unless ``temperature`` > 0; a sampled request without ``seed`` gets a random one."""
    if not body.temperature:
        return GREEDY
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
    return Sampling(temperature=body.temperature, top_p=body.top_p or 1.0, seed=seed)


def chat_generation(body: ChatRequest, max_choices: int = 1) -> ChatGeneration:
    """The replica request of a chat body: text-only messages (``developer`` is ``system``), at most four
    stop strings, the sampling. Lengths are the replica's to check."""
    if (body.n or 1) > max_choices:
        raise ApiError(422, f"n is {body.n}; the limit is {max_choices} (max_choices)", param="n", code="too_large")
    if (body.n or 1) > 1 and body.stream:
        raise ApiError(400, "n > 1 cannot be streamed; send stream=false for several choices", param="n")
    field = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
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
        messages.append(ChatMessageText(role=role, content=content or ""))
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > 4:
        raise ApiError(400, "at most 4 stop sequences", param="stop")
    return ChatGeneration(
        messages=tuple(messages),
        max_tokens=body.max_completion_tokens or body.max_tokens,
        max_tokens_param=field,
        stop=tuple(stops),
        ignore_eos=body.ignore_eos,
        sampling=chat_sampling(body),
    )


def add_openai_routes(app: FastAPI, state: AppState) -> None:
    args = state.args

    @app.get(
        "/v1/models",
        tags=["openai"],
        summary="OpenAI-compatible model list.",
        responses=error_responses(401),
    )
    async def models():
        return {"object": "list", "data": [_model_card(args)]}

    @app.get(
        "/v1/models/{model_id:path}",
        tags=["openai"],
        summary="OpenAI-compatible model lookup.",
        responses=error_responses(401, 404),
    )
    async def model(model_id: str):
        if model_id != args.served_name:
            raise _not_served(args, model_id)
        return _model_card(args)

    @app.post(
        "/v1/chat/completions",
        tags=["openai"],
        summary="OpenAI-compatible chat completion (greedy, or sampled with a seed).",
        responses={
            200: {
                "description": "A chat.completion object, or with stream=true server-sent events of "
                "chat.completion.chunk objects ending with 'data: [DONE]'.",
                "content": {"application/json": {}, "text/event-stream": {}},
            },
            **MODEL_ROUTE_ERRORS,
        },
    )
    async def chat(body: ChatRequest, response: Response):
        start = time.perf_counter()
        if body.model and body.model != args.served_name:
            raise _not_served(args, body.model)
        request = chat_generation(body, args.max_choices)
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            first, rest = await state.chat_stream(request)
            return _event_stream(args, first, rest, cid, created, include_usage)
        n = body.n or 1
        if request.sampling.greedy:
            results = [await state.chat(request)] * n  # greedy choices are identical: decode once
        else:
            s = request.sampling
            requests = [
                dataclasses.replace(request, sampling=Sampling(s.temperature, s.top_p, (s.seed or 0) + i))
                for i in range(n)
            ]
            results = list(await asyncio.gather(*(state.chat(r) for r in requests)))
        completion_tokens = sum(r.completion_tokens for r in results)
        response.headers["Server-Timing"] = server_timing(results[0].timing, time.perf_counter() - start)
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": results[0].model or args.served_name,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": r.text},
                    "finish_reason": r.finish_reason,
                    "logprobs": None,
                }
                for i, r in enumerate(results)
            ],
            "usage": {
                "prompt_tokens": results[0].prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": results[0].prompt_tokens + completion_tokens,
            },
            "system_fingerprint": None,
        }


def _sse(data: Any) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _event_stream(
    args: ServeArgs,
    first: StreamItem,
    rest: AsyncIterator[StreamItem],
    cid: str,
    created: int,
    include_usage: bool,
) -> StreamingResponse:
    """Server-sent events in OpenAI's chat.completion.chunk format, ending with ``data: [DONE]``.

    ``first`` was awaited before the response starts, so request errors (prompt too long, server at
    capacity) still got a proper 4xx/503 JSON answer instead of a broken stream."""

    # The id of the model that answers (the replica's: while a new model rolls out, the ingress and the
    # replica serving this stream may be of different versions).
    model = getattr(first, "model", "") or args.served_name

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    async def events():
        yield _sse(chunk({"role": "assistant", "content": ""}))
        item = first
        try:
            while True:
                if isinstance(item, Rejection):
                    body = {
                        "message": item.message,
                        "type": type_for(item.status),
                        "param": item.param,
                        "code": item.code,
                        "status": item.status,
                    }
                    yield _sse({"error": body})
                    break
                if isinstance(item, StreamDelta):
                    yield _sse(chunk({"content": item.text}))
                if isinstance(item, StreamEnd):
                    yield _sse(chunk({}, item.finish_reason))
                    if include_usage:
                        usage = {
                            "prompt_tokens": item.prompt_tokens,
                            "completion_tokens": item.completion_tokens,
                            "total_tokens": item.prompt_tokens + item.completion_tokens,
                        }
                        yield _sse(
                            {
                                "id": cid,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": model,
                                "choices": [],
                                "usage": usage,
                            }
                        )
                    break
                try:
                    item = await rest.__anext__()
                except StopAsyncIteration:
                    break
        except BACKEND_ERRORS as exc:  # the stream has started: report in-band (replica died, deadline)
            log.warning("stream failed: %s", exc)
            err = backend_error(exc, args.request_timeout_s)
            body = {"message": err.message, "type": err.type, "param": None, "code": err.code}
            yield _sse({"error": {**body, "status": err.status}})
        except Exception as exc:  # noqa: BLE001 - the stream has started: report in-band
            log.warning("stream failed: %s", exc)
            yield _sse(
                {
                    "error": {
                        "message": f"stream failed: {type(exc).__name__}",
                        "type": "server_error",
                        "param": None,
                        "code": "stream_error",
                        "status": 500,
                    }
                }
            )
        yield b"data: [DONE]\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


__all__ = ["add_openai_routes", "chat_generation"]
