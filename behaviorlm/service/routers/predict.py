"""POST /v1/predict (alias /predict) and /v1/predict/batch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request

from behaviorlm.service.auth import require_api_key
from behaviorlm.service.routers import ERRORS, PredictorDep, log_fields
from behaviorlm.service.schemas import BatchRequest, BatchResponse, PredictRequest, PredictResponse

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


@router.post("/predict", response_model=PredictResponse, responses=ERRORS)
@router.post("/v1/predict", response_model=PredictResponse, responses=ERRORS)
async def predict(
    body: PredictRequest,
    request: Request,
    predictor: PredictorDep,
    x_deadline_ms: DeadlineHeader = None,
) -> PredictResponse:
    """Top-k next behaviors of one user, with probabilities."""
    log_fields(request, history_events=len(body.history), adapter=body.adapter)
    result = await predictor.predict(body, x_deadline_ms)
    return PredictResponse(request_id=request.scope["state"]["request_id"], **dict(result))


@router.post("/v1/predict/batch", response_model=BatchResponse, responses=ERRORS)
async def predict_batch(
    body: BatchRequest,
    request: Request,
    predictor: PredictorDep,
    x_deadline_ms: DeadlineHeader = None,
) -> BatchResponse:
    """Many predictions in one call; a bad item gets an error, the others their results. The
    batch is admitted or refused (429) as a whole."""
    log_fields(request, batch_items=len(body.items))
    out = await predictor.predict_batch(body.items, x_deadline_ms)
    return BatchResponse(
        request_id=request.scope["state"]["request_id"],
        results=out,
        failed=sum(1 for item in out if item.error is not None),
    )
