"""POST /v1/predict (alias /predict) and /v1/predict/batch."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from behaviorlm.errors import BehaviorLMError
from behaviorlm.scoring import ScoreResult
from service.auth import require_api_key
from service.errors import ApiError, describe_validation
from service.routers import ERRORS, RuntimeDep, log_fields
from service.runtime import Prepared, Runtime
from service.schemas import (
    BatchItem,
    BatchRequest,
    BatchResponse,
    ItemError,
    Prediction,
    PredictRequest,
    PredictResponse,
    PredictResult,
)

router = APIRouter(tags=["predict"], dependencies=[Depends(require_api_key)])


def _result(prepared: Prepared, result: ScoreResult) -> PredictResult:
    served = prepared.served
    return PredictResult(
        predictions=[
            Prediction(
                behavior=b,
                probability=min(1.0, max(0.0, p)),
                anchor=b in served.anchors,
                trained=b not in prepared.untrained,
            )
            for b, p in result.top(prepared.top_k)
        ],
        label_mass=float(result.label_mass),
        model=served.name,
        adapter_version=served.manifest.version,
        stage=served.manifest.stage,
        base_model=served.manifest.base_model.id,
        unknown_history_behaviors=prepared.unknown_history,
        history_events_used=prepared.history_used,
        user_id=prepared.user_id,
    )


def _deadline_error(runtime: Runtime) -> ApiError:
    runtime.metrics.rejected.labels("deadline").inc()
    return ApiError(
        504,
        f"prediction not finished within the {runtime.settings.request_deadline_s:g} s "
        "deadline; it was abandoned",
    )


async def _score(runtime: Runtime, prepared: Prepared) -> ScoreResult:
    try:
        return await runtime.score(prepared)
    except BehaviorLMError as exc:
        raise ApiError(500, f"engine error: {exc}", type="engine_error") from exc


@router.post("/predict", response_model=PredictResponse, responses=ERRORS)
@router.post("/v1/predict", response_model=PredictResponse, responses=ERRORS)
async def predict(body: PredictRequest, request: Request, runtime: RuntimeDep) -> PredictResponse:
    """Top-k next behaviors of one user, with probabilities."""
    runtime.require_ready()
    log_fields(request, history_events=len(body.history), adapter=body.adapter)
    prepared = runtime.prepare(body)
    async with runtime.admit(1):
        try:
            async with asyncio.timeout(runtime.settings.request_deadline_s):
                result = await _score(runtime, prepared)
        except TimeoutError:
            raise _deadline_error(runtime) from None
    return PredictResponse(
        request_id=request.scope["state"]["request_id"], **dict(_result(prepared, result))
    )


@router.post("/v1/predict/batch", response_model=BatchResponse, responses=ERRORS)
async def predict_batch(body: BatchRequest, request: Request, runtime: RuntimeDep) -> BatchResponse:
    """Many predictions in one call; a bad item gets an error, the others their results."""
    runtime.require_ready()
    limit = runtime.settings.max_batch_items
    if len(body.items) > limit:
        raise ApiError(
            422,
            f"batch has {len(body.items)} items; this server accepts at most {limit}",
            field="items",
        )
    log_fields(request, batch_items=len(body.items))
    out: list[BatchItem] = [BatchItem(index=i) for i in range(len(body.items))]
    prepared: dict[int, Prepared] = {}
    for i, raw in enumerate(body.items):
        try:
            prepared[i] = runtime.prepare(PredictRequest.model_validate(raw), f"items[{i}]")
        except ValidationError as exc:
            message, field = describe_validation(list(exc.errors()))
            out[i].error = ItemError(
                type="invalid_request", message=f"items[{i}].{message}", field=f"items[{i}].{field}"
            )
        except ApiError as exc:
            out[i].error = ItemError(**exc.body())
    if prepared:
        async with runtime.admit(len(prepared)):
            tasks = {i: asyncio.create_task(_score(runtime, p)) for i, p in prepared.items()}
            _, pending = await asyncio.wait(
                tasks.values(), timeout=runtime.settings.request_deadline_s
            )
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
            for i, task in tasks.items():
                if task in pending:
                    out[i].error = ItemError(**_deadline_error(runtime).body())
                elif isinstance(task.exception(), ApiError):
                    out[i].error = ItemError(**task.exception().body())  # type: ignore[union-attr]
                elif task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
                else:
                    out[i].result = _result(prepared[i], task.result())
    return BatchResponse(
        request_id=request.scope["state"]["request_id"],
        results=out,
        failed=sum(1 for item in out if item.error is not None),
    )
