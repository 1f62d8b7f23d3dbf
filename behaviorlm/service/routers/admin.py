"""Admin routes (X-Admin-Token): load a new adapter version at runtime, drain."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from behaviorlm.errors import BehaviorLMError
from behaviorlm.service.auth import require_admin
from behaviorlm.service.errors import ApiError
from behaviorlm.service.routers import ERRORS, RuntimeDep
from behaviorlm.service.schemas import (
    DrainRequest,
    HealthResponse,
    LoadAdapterRequest,
    LoadAdapterResponse,
)

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.post("/adapters", response_model=LoadAdapterResponse, responses=ERRORS)
async def load_adapter(body: LoadAdapterRequest, runtime: RuntimeDep) -> LoadAdapterResponse:
    """Load an adapter directory and serve it as ``name``; requests keep flowing throughout:
    those in flight finish on the old version, later ones use the new one."""
    runtime.require_engine()
    try:
        served, old, seconds = await runtime.load_adapter_from(body.name, body.path)
    except (BehaviorLMError, OSError, ValueError) as exc:
        # e.g. no manifest, a manifest for another base model, unreadable weights
        raise ApiError(422, f"cannot load adapter {body.name!r}: {exc}", field="path") from exc
    return LoadAdapterResponse(
        name=served.name,
        version=served.manifest.version,
        replaced_version=old.manifest.version if old else None,
        load_seconds=round(seconds, 4),
    )


@router.post("/drain", response_model=HealthResponse, responses=ERRORS)
async def drain(body: DrainRequest, runtime: RuntimeDep) -> HealthResponse:
    """Stop (or resume) accepting predictions, e.g. before taking the instance out of rotation."""
    runtime.set_draining(body.draining)
    return HealthResponse(
        status="ok" if runtime.ready else runtime.state,
        ready=runtime.ready,
        engine=runtime.engine_kind,
        adapters=sorted(runtime.served),
        detail=runtime.detail,
    )
