"""Request limits that do not need the model: body size (ASGI middleware) and numeric caps."""

from __future__ import annotations

from starlette.exceptions import HTTPException

from sqltune.serving.auth import error_body, send_json


class BodyTooLarge(HTTPException):
    """Raised while a body streams in past the limit (an HTTPException, so FastAPI's body reader
    re-raises it instead of reporting a parse error)."""

    def __init__(self, max_bytes: int):
        super().__init__(413, f"request body exceeds the limit of {max_bytes} bytes")


class BodySizeLimitMiddleware:
    """Answer 413 with a JSON error when the body exceeds ``max_bytes``.

    A declared ``Content-Length`` over the limit is refused before anything is read; a chunked body is
    counted as it streams in and refused as soon as it crosses the limit.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> bytes:
        return error_body(
            413,
            f"request body exceeds the limit of {self.max_bytes} bytes",
            param="body",
            code="request_too_large",
            type_="invalid_request_error",
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    body = error_body(
                        400,
                        "invalid Content-Length header",
                        param="Content-Length",
                        code="invalid_header",
                        type_="invalid_request_error",
                    )
                    return await send_json(send, 400, body)
                if declared > self.max_bytes:
                    return await send_json(send, 413, self._too_large())
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await send_json(send, 413, self._too_large())
