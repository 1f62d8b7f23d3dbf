"""The one error shape of the API and the handlers that produce it.

Every 4xx/5xx body is ``{"error": {"type", "message", "field", "request_id"}}``: validation
errors, HTTP errors raised by the framework (404, 405) and the service's own errors alike.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from behaviorlm.service.logs import current_request_id

log = logging.getLogger("behaviorlm.service.errors")

_TYPES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "overloaded",
    500: "internal_error",
    503: "unavailable",
    504: "deadline_exceeded",
}


class ApiError(Exception):
    """An error with an HTTP status that the client is meant to read."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPES_BY_STATUS.get(status, "error")
        self.field = field
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "field": self.field}


def error_body(
    status: int, message: str, field: str | None = None, type: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "type": type or _TYPES_BY_STATUS.get(status, "error"),
            "message": message,
            "field": field,
            "request_id": current_request_id(),
        }
    }


def error_response(
    status: int,
    message: str,
    field: str | None = None,
    type: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(status, message, field, type), status, headers=headers)


def validation_field(loc: tuple[Any, ...] | list[Any]) -> str:
    """'body.history.3.behavior' -> 'history[3].behavior' (the field as the client wrote it)."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "body"


def describe_validation(errors: list[Any]) -> tuple[str, str]:
    """(message, field) for the first pydantic / FastAPI validation error."""
    first = errors[0]
    field = validation_field(first.get("loc", ()))
    msg = first.get("msg", "invalid value")
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{field}: {msg}{more}", field


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.field, exc.type, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = describe_validation(list(exc.errors()))
        return error_response(422, message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(
            exc.status_code, str(exc.detail), headers=dict(exc.headers or {}) or None
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"error_class": type(exc).__name__})
        return error_response(500, "internal error; see the server log for this request id")
