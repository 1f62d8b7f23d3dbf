"""Liveness, readiness (with /v2 aliases, as inference servers conventionally expose) and
Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from behaviorlm.service.errors import ApiError
from behaviorlm.service.routers import ERRORS, RuntimeDep
from behaviorlm.service.runtime import Runtime
from behaviorlm.service.schemas import HealthResponse

router = APIRouter(tags=["health"])


def _health(runtime: Runtime) -> HealthResponse:
    return HealthResponse(
        status="ok" if runtime.ready else runtime.state,
        ready=runtime.ready,
        engine=runtime.engine_kind,
        adapters=sorted(runtime.served),
        detail=runtime.detail,
    )


@router.get("/v2/health/live", response_model=HealthResponse, responses=ERRORS)
@router.get("/health/live", response_model=HealthResponse, responses=ERRORS)
async def live(runtime: RuntimeDep) -> HealthResponse:
    """The process is up and answering (it may still be loading)."""
    health = _health(runtime)
    health.status = "ok"
    return health


@router.get("/v2/health/ready", response_model=HealthResponse, responses=ERRORS)
@router.get("/health/ready", response_model=HealthResponse, responses=ERRORS)
async def ready(runtime: RuntimeDep) -> HealthResponse:
    """Engine up, adapters loaded, canary prediction passed, not draining; else 503."""
    if not runtime.ready:
        raise ApiError(
            503,
            f"not ready ({runtime.state}): {runtime.detail or runtime.state}",
            headers={"Retry-After": "5"},
        )
    return _health(runtime)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus text format",
        }
    },
)
async def metrics(request: Request) -> Response:
    m = request.app.state.metrics
    return Response(m.render(), media_type=m.content_type)
