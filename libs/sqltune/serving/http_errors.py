"""The HTTP error model: every error is a JSON body in OpenAI's shape,
``{"error": {"message", "type", "param", "code", "status"}}``, where ``param`` names the offending field.

Request errors are 4xx; the server answers 5xx only for its own failures (replica down, deadline,
database unavailable), never with a traceback. :func:`error_responses` declares every status a route
can answer in the OpenAPI document, with :class:`ErrorResponse` as its body.
"""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from sqltune.serving.backend import BackendFailure, BackendTimeout, Overloaded
from sqltune.serving.protocol import Rejection

INVALID_UNICODE = "invalid_unicode"
"""The validation error type of text holding a lone surrogate (answered 400, naming the field)."""

DATABASE_ERROR = "database_error"
"""The error type (and metrics outcome ``database_unavailable``) of a configured database that is down."""


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


def safe_text(text: str) -> str:
    """``text`` with lone surrogates (which UTF-8 cannot encode) written as ``\\udXXX`` escapes."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


class ErrorDetail(BaseModel):
    param: str | None = Field(None, description="The offending field.")
    message: str
    type: str


class ErrorBody(BaseModel):
    message: str = Field(description="What is wrong and how to fix it.")
    type: str = Field(
        description="invalid_request_error | authentication_error | not_found_error | overloaded_error | "
        "timeout_error | database_error | server_error."
    )
    param: str | None = Field(description="The offending field ('body' for the body as a whole), or null.")
    code: str = Field(description="A stable machine-readable code (too_long, overloaded, ...).")
    status: int = Field(description="The HTTP status, repeated.")
    details: list[ErrorDetail] | None = Field(None, description="Every offending field (422).")


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorBody


_ERROR_TEXT = {
    400: "Malformed body (not JSON, not UTF-8, text with invalid Unicode) or a request over a length limit.",
    401: "Missing or wrong bearer token (when the server has one configured).",
    404: "Unknown model or database.",
    413: "The request body is larger than the server's limit.",
    422: "A field has the wrong type or value (every offending field is named in 'details').",
    500: "An internal error of the server (a bug): a JSON body, never a traceback.",
    503: "At capacity, no model replica, the replica died, or a configured database is unreachable. "
    "Retry after the number of seconds in the Retry-After header.",
    504: "The request did not finish within the server's deadline.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entries of the given error statuses (body: :class:`ErrorResponse`)."""
    return {s: {"model": ErrorResponse, "description": _ERROR_TEXT[s]} for s in statuses}


MODEL_ROUTE_ERRORS = error_responses(400, 401, 404, 413, 422, 500, 503, 504)
"""What a route that reaches the model can answer besides 200."""


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
        outcome: str | None = None,
    ):
        super().__init__(message)
        self.outcome = outcome
        """The metrics' outcome label, when the status alone does not tell (see metrics.outcome_of)."""
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
    if isinstance(exc, BackendFailure):
        return ApiError(
            503,
            "the model replica serving this request stopped; retry shortly",
            code="replica_unavailable",
            headers={"Retry-After": "1"},
            outcome="replica_failed",
        )
    return ApiError(500, f"the model replica failed: {type(exc).__name__}", code="model_error")


def database_unavailable(name: str | None) -> ApiError:
    """A configured database that cannot be reached: the server's problem, typed apart from overload."""
    what = f"database {name!r}" if name else "the database"
    return ApiError(
        503,
        f"{what} is unavailable; retry later or ask the operator to check it",
        param="database",
        code="database_unavailable",
        type_=DATABASE_ERROR,
        headers={"Retry-After": "5"},
        outcome="database_unavailable",
    )


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
        "message": safe_text(message),
        "type": type_ or type_for(status),
        "param": None if param is None else safe_text(param),
        "code": code,
        "status": status,
    }
    if details:
        err["details"] = [{k: safe_text(v) if isinstance(v, str) else v for k, v in d.items()} for d in details]
    return JSONResponse({"error": err}, status_code=status, headers=headers)


def _loc_param(loc: tuple | list) -> str | None:
    # A union's branch shows up in loc as a tag such as "function-after[...]" or "list[...]": not a field.
    parts = [str(p) for p in loc if p != "body" and not (isinstance(p, str) and "[" in p)]
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
    unicode_errors = [e for e in errors if e.get("type") == INVALID_UNICODE]
    if unicode_errors:  # the other branches of a union (str | list) failing too would only confuse
        errors = unicode_errors
    details = []
    status = 422
    code = "invalid_unicode" if unicode_errors else "invalid_request"
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
        elif etype == INVALID_UNICODE:
            status = 400
        details.append({"param": param, "message": msg, "type": etype})
    first = details[0] if details else {"param": "body", "message": "invalid request"}
    message = "; ".join(f"{d['param']}: {d['message']}" for d in details[:5]) or "invalid request"
    if first["param"] == "body":
        message = first["message"]
    return error_response(status, message, param=first["param"], code=code, details=details)


def body_parse_error(exc: BaseException | None) -> JSONResponse:
    """A body the JSON parser could not read at all (not UTF-8, nested too deep, an integer too long)."""
    if isinstance(exc, UnicodeDecodeError):
        why = f"the body is not UTF-8 ({exc.reason} at byte {exc.start})"
    elif isinstance(exc, RecursionError):
        why = "the JSON body is nested too deeply"
    elif isinstance(exc, ValueError):
        why = f"the JSON body holds a value that cannot be read ({exc})"
    else:
        why = "the body cannot be parsed"
    return error_response(400, f"{why}; send a UTF-8 JSON object", param="body", code="invalid_json")


__all__ = [
    "DATABASE_ERROR",
    "INVALID_UNICODE",
    "MODEL_ROUTE_ERRORS",
    "ApiError",
    "ErrorResponse",
    "backend_error",
    "body_parse_error",
    "database_unavailable",
    "error_response",
    "error_responses",
    "safe_text",
    "type_for",
    "validation_error",
]
