"""GET /v1/models: the served adapters and their manifests' public fields."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from behaviorlm.service.auth import require_api_key
from behaviorlm.service.conversion import Served
from behaviorlm.service.routers import ERRORS, RuntimeDep
from behaviorlm.service.schemas import ModelInfo, ModelsResponse, VocabularyItem

router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)])


def model_info(served: Served, default: bool) -> ModelInfo:
    m = served.manifest
    return ModelInfo(
        name=served.name,
        default=default,
        version=m.version,
        stage=m.stage,
        strategy=m.strategy,
        base_model=m.base_model.id,
        prompt_version=m.prompt_version,
        scoring_format=m.scoring_format,
        history_events=m.history_events,
        repeat_window=m.head.repeat_window if m.head is not None else 0,
        created_at=m.created_at,
        anchor_share=m.anchor_share,
        vocabulary=[
            VocabularyItem(name=e.name, count=e.count, anchor=e.anchor) for e in m.vocabulary
        ],
        anchors=[e.name for e in m.vocabulary if e.anchor],
        tails=[e.name for e in m.vocabulary if not e.anchor],
        calibration=m.calibration.model_dump(mode="json"),
        metrics=m.metrics,
        tuning=m.tuning,
        lora=m.lora,
    )


@router.get("/v1/models", response_model=ModelsResponse, responses=ERRORS)
async def list_models(runtime: RuntimeDep) -> ModelsResponse:
    """Loaded adapters (empty while the service is still loading)."""
    backend, dtype = runtime.engine.served_as if runtime.engine else (None, None)
    return ModelsResponse(
        engine=runtime.engine_kind or "loading",
        engine_backend=backend or None,
        dtype=dtype or None,
        default_adapter=runtime.default_adapter,
        models=[
            model_info(s, s.name == runtime.default_adapter)
            for _, s in sorted(runtime.served.items())
        ],
    )
