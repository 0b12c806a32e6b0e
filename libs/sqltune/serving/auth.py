"""Bearer-token authentication for the HTTP API (pure ASGI middleware).

The token comes from an environment variable (``SQLTUNE_API_TOKEN`` by default; on Kubernetes it is fed
by a Secret). Several tokens may be given, comma-separated, to rotate without downtime. When the variable
is unset or empty, authentication is off. Health probes (``/healthz``, ``/readyz``) and the OpenAPI
document stay open; everything else answers 401 with a JSON error on a missing or wrong token.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Iterable

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


def tokens_from_env(var: str) -> list[str]:
    raw = os.environ.get(var, "")
    return [t.strip() for t in raw.split(",") if t.strip()]


def app_path(scope: dict) -> str:
    """The request path relative to the application's route prefix."""
    path = scope.get("path", "") or "/"
    root = scope.get("root_path", "") or ""
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


def error_body(status: int, message: str, *, param: str | None = None, code: str, type_: str) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code, "status": status}}
    ).encode()


async def send_json(send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BearerAuthMiddleware:
    def __init__(self, app, tokens: list[str], open_paths: frozenset[str] = OPEN_PATHS):
        self.app = app
        self.tokens = [t.encode() for t in tokens]
        self.open_paths = open_paths

    def _authorized(self, scope: dict) -> bool:
        header = b""
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                header = v
                break
        scheme, _, value = header.partition(b" ")
        if scheme.lower() != b"bearer" or not value.strip():
            return False
        value = value.strip()
        ok = False
        for t in self.tokens:  # compare against every token in constant time
            ok |= hmac.compare_digest(value, t)
        return ok

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.tokens or app_path(scope) in self.open_paths:
            return await self.app(scope, receive, send)
        if scope.get("method") == "OPTIONS":
            return await self.app(scope, receive, send)
        if not self._authorized(scope):
            has_header = any(k == b"authorization" for k, _ in scope.get("headers", []))
            msg = (
                "invalid bearer token in the Authorization header"
                if has_header
                else "missing bearer token: send 'Authorization: Bearer <token>'"
            )
            body = error_body(
                401, msg, param="Authorization", code="invalid_api_key", type_="authentication_error"
            )
            return await send_json(send, 401, body, [(b"www-authenticate", b'Bearer realm="sqltune"')])
        return await self.app(scope, receive, send)
