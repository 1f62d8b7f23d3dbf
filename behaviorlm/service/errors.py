"""The one error shape of the API and the handlers that produce it.

Every 4xx/5xx body is ``{"error": {"type", "message", "field", "request_id"}}``: validation
errors, HTTP errors raised by the framework (404, 405), the routes' own ``ApiError`` and the
faults the predictor and the runtime raise (``behaviorlm.service.faults``), whose HTTP status
is decided here and nowhere else.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from behaviorlm.service.faults import (
    AdapterNotFound,
    DeadlineExceeded,
    EngineFailed,
    InvalidRequest,
    NotReady,
    Overloaded,
    ServiceFault,
)
from behaviorlm.service.logs import current_request_id
from behaviorlm.service.validation import describe_validation

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


# The HTTP status of each fault (the first matching class, so subclasses may come first).
FAULT_STATUS: tuple[tuple[type[ServiceFault], int], ...] = (
    (InvalidRequest, 422),
    (AdapterNotFound, 404),
    (Overloaded, 429),
    (NotReady, 503),
    (EngineFailed, 503),
    (DeadlineExceeded, 504),
)


def fault_status(fault: ServiceFault) -> int:
    return next((status for kind, status in FAULT_STATUS if isinstance(fault, kind)), 500)


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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.field, exc.type, exc.headers)

    @app.exception_handler(ServiceFault)
    async def _fault(request: Request, exc: ServiceFault) -> JSONResponse:
        headers = None if exc.retry_after_s is None else {"Retry-After": str(exc.retry_after_s)}
        return error_response(fault_status(exc), exc.message, exc.field, exc.type, headers)

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
