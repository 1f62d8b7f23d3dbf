"""The serving layer the routes call: one prediction or a batch, API request to API result.

A request is checked and rendered (``behaviorlm.service.conversion``), admitted against its
deadline, scored by the runtime and turned into the API's answer. Whatever goes wrong is a
``behaviorlm.service.faults`` fault; the routes (the edge) turn faults into HTTP. The engine,
the served adapters and admission belong to ``behaviorlm.service.runtime.Runtime``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from behaviorlm.scoring import ScoreResult
from behaviorlm.service.conversion import Prepared, prepare, to_result
from behaviorlm.service.faults import DeadlineExceeded, InvalidRequest, ServiceFault
from behaviorlm.service.runtime import Runtime
from behaviorlm.service.schemas import (
    BatchItem,
    ItemError,
    PredictRequest,
    PredictResult,
)
from behaviorlm.service.validation import describe_validation


class Predictor:
    """Predictions through one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def predict(self, req: PredictRequest, deadline_ms: int | None) -> PredictResult:
        """Top-k next behaviors of one request, within its deadline (the client's
        ``deadline_ms``, capped by the server's)."""
        self.runtime.require_ready()
        prepared = self.prepare(req)
        deadline_s = self.runtime.deadline_for(deadline_ms)
        async with self.runtime.admit(1, deadline_s):
            try:
                async with asyncio.timeout(deadline_s):
                    result = await self.runtime.score(prepared)
            except TimeoutError:
                raise self._deadline_fault(deadline_s) from None
        return to_result(prepared, result)

    async def predict_batch(self, items: Sequence[Any], deadline_ms: int | None) -> list[BatchItem]:
        """Every item's result or error, in order; the valid items are admitted (or refused)
        as a whole and share the deadline."""
        self.runtime.require_ready()
        limit = self.runtime.settings.max_batch_items
        if len(items) > limit:
            raise InvalidRequest(
                f"batch has {len(items)} items; this server accepts at most {limit}",
                field="items",
            )
        out = [BatchItem(index=i) for i in range(len(items))]
        prepared = self._prepare_items(items, out)
        if prepared:
            deadline_s = self.runtime.deadline_for(deadline_ms)
            async with self.runtime.admit(len(prepared), deadline_s):
                scored = await self._score_all(prepared, deadline_s)
            for i, outcome in scored.items():
                if isinstance(outcome, ServiceFault):
                    out[i].error = item_error(outcome)
                else:
                    out[i].result = to_result(prepared[i], outcome)
        return out

    def prepare(self, req: PredictRequest, where: str = "") -> Prepared:
        """Check a request against the served adapters and render its prompt (``where``: the
        field path prefix of error messages, e.g. ``items[3]``)."""
        prefix = f"{where}." if where else ""
        limit = self.runtime.settings.max_history_events
        if len(req.history) > limit:
            raise InvalidRequest(
                f"history has {len(req.history)} events; this server accepts at most {limit}",
                field=f"{prefix}history",
            )
        served = self.runtime.adapter(req.adapter, field=f"{prefix}adapter")
        return prepare(req, served, self.runtime.require_engine(), where)

    def _prepare_items(self, items: Sequence[Any], out: list[BatchItem]) -> dict[int, Prepared]:
        """The items that are valid, by index; the others get their error in ``out``."""
        prepared: dict[int, Prepared] = {}
        for i, raw in enumerate(items):
            where = f"items[{i}]"
            try:
                prepared[i] = self.prepare(PredictRequest.model_validate(raw), where)
            except ValidationError as exc:
                message, field = describe_validation(list(exc.errors()))
                out[i].error = ItemError(
                    type="invalid_request", message=f"{where}.{message}", field=f"{where}.{field}"
                )
            except ServiceFault as exc:
                out[i].error = item_error(exc)
        return prepared

    async def _score_all(
        self, prepared: dict[int, Prepared], deadline_s: float
    ) -> dict[int, ScoreResult | ServiceFault]:
        """Score the items concurrently; those not done by the deadline are cancelled."""
        tasks = {i: asyncio.create_task(self.runtime.score(p)) for i, p in prepared.items()}
        _, pending = await asyncio.wait(tasks.values(), timeout=deadline_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        outcomes: dict[int, ScoreResult | ServiceFault] = {}
        for i, task in tasks.items():
            if task in pending:
                outcomes[i] = self._deadline_fault(deadline_s)
                continue
            exc = task.exception()
            if exc is not None and not isinstance(exc, ServiceFault):
                raise exc
            outcomes[i] = exc if exc is not None else task.result()
        return outcomes

    def _deadline_fault(self, deadline_s: float) -> DeadlineExceeded:
        self.runtime.metrics.rejected.labels("deadline").inc()
        return DeadlineExceeded(
            f"prediction not finished within the {deadline_s:g} s deadline; it was abandoned"
        )


def item_error(fault: ServiceFault) -> ItemError:
    """A batch item's error body."""
    return ItemError(type=fault.type, message=fault.message, field=fault.field)
