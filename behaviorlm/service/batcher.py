"""Micro-batcher for engines that score a list of prompts per call (the transformers engine).

Concurrent requests are queued; one worker takes up to ``max_size`` of them, waiting at most
``max_wait_s`` for the batch to fill, and scores them in one engine call in a thread. Requests
whose caller gave up (deadline, disconnect) before their batch started are dropped, never
scored. Admission (the bounded queue, 429) is the runtime's job: the batcher accepts what it
is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from behaviorlm.scoring import ScoreRequest, ScoreResult
from behaviorlm.service.metrics import ServiceMetrics

log = logging.getLogger("behaviorlm.service.batcher")

ScoreFn = Callable[[Sequence[ScoreRequest]], list[ScoreResult]]
# (predictions, seconds, full batch?) of each engine call that succeeded: the admission's
# rate estimate.
ObserveFn = Callable[[int, float, bool], None]


@dataclass
class _Item:
    request: ScoreRequest
    future: asyncio.Future[ScoreResult]
    enqueued: float


class MicroBatcher:
    def __init__(
        self,
        score: ScoreFn,
        max_size: int,
        max_wait_s: float,
        metrics: ServiceMetrics,
        observe: ObserveFn | None = None,
    ) -> None:
        self._score = score
        self._observe = observe
        self._max_size = max_size
        self._max_wait_s = max_wait_s
        self._metrics = metrics
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def close(self) -> None:
        """Score everything already queued, then stop."""
        if self._worker is None:
            return
        self._queue.put_nowait(None)
        await self._worker
        self._worker = None

    async def submit(self, request: ScoreRequest) -> ScoreResult:
        if self._worker is None or self._worker.done():
            raise RuntimeError("micro-batcher is not running")
        future: asyncio.Future[ScoreResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(request, future, time.perf_counter()))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The caller gave up: if the batch has not started, the worker skips the item.
            if not future.done():
                future.cancel()
            raise

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            deadline = time.perf_counter() + self._max_wait_s
            while len(batch) < self._max_size:
                remaining = deadline - time.perf_counter()
                try:
                    item = (
                        self._queue.get_nowait()
                        if remaining <= 0
                        else await asyncio.wait_for(self._queue.get(), remaining)
                    )
                except (asyncio.QueueEmpty, TimeoutError):
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            await self._score_batch(batch)

    async def _score_batch(self, batch: list[_Item]) -> None:
        live = [item for item in batch if not item.future.done()]
        dropped = len(batch) - len(live)
        if dropped:
            self._metrics.abandoned.inc(dropped)
        if not live:
            return
        started = time.perf_counter()
        for item in live:
            self._metrics.queue_latency.observe(started - item.enqueued)
        self._metrics.batch_size.observe(len(live))
        try:
            results = await asyncio.to_thread(self._score, [i.request for i in live])
        except Exception as exc:
            if len(live) == 1:
                _resolve(live[0], exc=exc)
            else:
                # One bad request must not fail its neighbours: score them one by one.
                log.warning("batch of %d failed (%s); retrying one by one", len(live), exc)
                for item in live:
                    await self._score_batch([item])
            return
        finally:
            self._metrics.engine_latency.observe(time.perf_counter() - started)
        if self._observe is not None:
            elapsed = time.perf_counter() - started
            self._observe(len(live), elapsed, len(live) >= self._max_size)
        for item, result in zip(live, results, strict=True):
            _resolve(item, result=result)


def _resolve(
    item: _Item, result: ScoreResult | None = None, exc: BaseException | None = None
) -> None:
    if item.future.done():  # gave up while its batch was running
        return
    with contextlib.suppress(asyncio.InvalidStateError):
        if exc is not None:
            item.future.set_exception(exc)
        else:
            assert result is not None
            item.future.set_result(result)
