"""ASGI middleware: request id, body size limit (413), access log and request metrics.

Pure ASGI (not BaseHTTPMiddleware) so a client that disconnects or a deadline that cancels the
handler propagates cancellation cleanly and streaming bodies can be cut off at the limit.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from behaviorlm.service.errors import error_body
from behaviorlm.service.logs import reset_request_id, set_request_id
from behaviorlm.service.metrics import ServiceMetrics

log = logging.getLogger("behaviorlm.service.access")

REQUEST_ID_HEADER = "x-request-id"
_HEADER_BYTES = REQUEST_ID_HEADER.encode()
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``; FastAPI re-raises HTTPExceptions met while reading a body."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes")


class RequestContextMiddleware:
    """Outermost layer: every response (errors included) carries ``X-Request-ID``."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = set_request_id(request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0] != _HEADER_BYTES]
                headers.append((_HEADER_BYTES, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if _declared_length(scope) > self.max_body_bytes:
                await self._too_large(send_with_id)
            else:
                await self.app(scope, self._limited(receive), send_with_id)
        except _BodyTooLarge:
            if not response_started:
                await self._too_large(send_with_id)
        except Exception:
            # Here rather than in Starlette's outer error middleware, so a 500 still gets the
            # request id and the one error shape.
            log.exception("unhandled error")
            if not response_started:
                await _send_json(
                    send_with_id,
                    500,
                    error_body(500, "internal error; see the server log for this request id"),
                )
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.request_latency.labels(route).observe(elapsed)
            log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    **scope["state"].get("log_fields", {}),
                },
            )
            reset_request_id(token)

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise _BodyTooLarge(self.max_body_bytes)
            return message

        return wrapped

    async def _too_large(self, send: Send) -> None:
        message = f"request body exceeds {self.max_body_bytes} bytes"
        await _send_json(send, 413, error_body(413, message, "body"))


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == _HEADER_BYTES:
            text = value.decode("latin-1")
            return text if _VALID_ID.match(text) else None
    return None


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
