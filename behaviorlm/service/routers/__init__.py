"""HTTP routes: thin adapters between requests and ``behaviorlm.service.runtime.Runtime``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from behaviorlm.service.runtime import Runtime
from behaviorlm.service.schemas import ErrorResponse

# Documented on every route: all errors share one body.
ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorResponse, "description": "client error (see error.type / field)"},
    "5XX": {"model": ErrorResponse, "description": "server error, overload or deadline"},
}


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def log_fields(request: Request, **fields: Any) -> None:
    """Attach fields (sizes, adapter, never contents) to this request's access log line."""
    request.scope.setdefault("state", {}).setdefault("log_fields", {}).update(fields)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
