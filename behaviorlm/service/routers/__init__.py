"""HTTP routes: the edge. Predictions go to ``behaviorlm.service.predictor.Predictor``; health,
models and admin read or steer ``behaviorlm.service.runtime.Runtime``. Faults raised below
become HTTP in ``behaviorlm.service.errors``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from behaviorlm.service.predictor import Predictor
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


def get_predictor(request: Request) -> Predictor:
    predictor: Predictor = request.app.state.predictor
    return predictor


def log_fields(request: Request, **fields: Any) -> None:
    """Attach fields (sizes, adapter, never contents) to this request's access log line."""
    request.scope.setdefault("state", {}).setdefault("log_fields", {}).update(fields)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
