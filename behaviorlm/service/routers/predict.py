"""POST /v1/predict (alias /predict) and /v1/predict/batch."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from pydantic import ValidationError

from behaviorlm.service.auth import require_api_key
from behaviorlm.service.errors import ApiError, describe_validation
from behaviorlm.service.predictor import Prepared, to_result
from behaviorlm.service.routers import ERRORS, RuntimeDep, log_fields
from behaviorlm.service.runtime import Runtime
from behaviorlm.service.schemas import (
    BatchItem,
    BatchRequest,
    BatchResponse,
    ItemError,
    PredictRequest,
    PredictResponse,
)

router = APIRouter(tags=["predict"], dependencies=[Depends(require_api_key)])


# A client's own deadline, capped by the server's: used for admission and for the abort.
DeadlineHeader = Annotated[
    int | None,
    Header(
        alias="X-Deadline-Ms",
        gt=0,
        le=3_600_000,
        description="this request's deadline in milliseconds (capped by the server's "
        "request_deadline_s); admission refuses at once (429) what cannot finish within it",
    ),
]


def _deadline_error(runtime: Runtime, deadline_s: float) -> ApiError:
    runtime.metrics.rejected.labels("deadline").inc()
    return ApiError(
        504, f"prediction not finished within the {deadline_s:g} s deadline; it was abandoned"
    )


@router.post("/predict", response_model=PredictResponse, responses=ERRORS)
@router.post("/v1/predict", response_model=PredictResponse, responses=ERRORS)
async def predict(
    body: PredictRequest,
    request: Request,
    runtime: RuntimeDep,
    x_deadline_ms: DeadlineHeader = None,
) -> PredictResponse:
    """Top-k next behaviors of one user, with probabilities."""
    runtime.require_ready()
    log_fields(request, history_events=len(body.history), adapter=body.adapter)
    prepared = runtime.prepare(body)
    deadline_s = runtime.deadline_for(x_deadline_ms)
    async with runtime.admit(1, deadline_s):
        try:
            async with asyncio.timeout(deadline_s):
                result = await runtime.score(prepared)
        except TimeoutError:
            raise _deadline_error(runtime, deadline_s) from None
    return PredictResponse(
        request_id=request.scope["state"]["request_id"], **dict(to_result(prepared, result))
    )


@router.post("/v1/predict/batch", response_model=BatchResponse, responses=ERRORS)
async def predict_batch(
    body: BatchRequest,
    request: Request,
    runtime: RuntimeDep,
    x_deadline_ms: DeadlineHeader = None,
) -> BatchResponse:
    """Many predictions in one call; a bad item gets an error, the others their results. The
    batch is admitted or refused (429) as a whole."""
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
    deadline_s = runtime.deadline_for(x_deadline_ms)
    if prepared:
        async with runtime.admit(len(prepared), deadline_s):
            tasks = {i: asyncio.create_task(runtime.score(p)) for i, p in prepared.items()}
            _, pending = await asyncio.wait(tasks.values(), timeout=deadline_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
            for i, task in tasks.items():
                if task in pending:
                    out[i].error = ItemError(**_deadline_error(runtime, deadline_s).body())
                elif isinstance(task.exception(), ApiError):
                    out[i].error = ItemError(**task.exception().body())  # type: ignore[union-attr]
                elif task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
                else:
                    out[i].result = to_result(prepared[i], task.result())
    return BatchResponse(
        request_id=request.scope["state"]["request_id"],
        results=out,
        failed=sum(1 for item in out if item.error is not None),
    )
