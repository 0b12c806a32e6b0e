"""The HTTP error model: every error is a JSON body in OpenAI's shape,
``{"error": {"message", "type", "param", "code", "status"}}``, where ``param`` names the offending field.

Request errors are 4xx; the server answers 5xx only for its own failures (replica down, deadline,
database unavailable), never with a traceback.
"""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from sqltune.serving.backend import BackendTimeout, Overloaded
from sqltune.serving.protocol import Rejection


def type_for(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 404:
        return "not_found_error"
    if status in (503, 504):
        return "overloaded_error" if status == 503 else "timeout_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


class ApiError(Exception):
    """Raised by a route; answered with :func:`error_response`."""

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
        self.type = type_ or type_for(status)
        self.headers = headers

    @classmethod
    def from_rejection(cls, rejection: Rejection) -> ApiError:
        """A request the replica refused (its status, field and message)."""
        return cls(rejection.status, rejection.message, param=rejection.param, code=rejection.code)


def backend_error(exc: Exception, timeout_s: float) -> ApiError:
    """The HTTP error for one of :data:`~sqltune.serving.backend.BACKEND_ERRORS` (the call itself failed)."""
    if isinstance(exc, Overloaded):
        return ApiError(
            503,
            f"the model is at capacity, retry shortly ({exc})",
            code="overloaded",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, BackendTimeout):
        return ApiError(504, f"the request took longer than {timeout_s}s", code="timeout")
    return ApiError(500, f"the model replica failed: {exc}", code="model_error")


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
        "type": type_ or type_for(status),
        "param": param,
        "code": code,
        "status": status,
    }
    if details:
        err["details"] = details
    return JSONResponse({"error": err}, status_code=status, headers=headers)


def _loc_param(loc: tuple | list) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    if not parts:
        return "body"
    out = parts[0]
    for p in parts[1:]:
        out += f"[{p}]" if p.isdigit() else f".{p}"
    return out


def validation_error(exc: RequestValidationError) -> JSONResponse:
    """A body that does not match its schema: 400 when it is not a JSON object at all, else 422, naming
    every offending field (``details``) and the first in ``param``."""
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


__all__ = ["ApiError", "backend_error", "error_response", "type_for", "validation_error"]
