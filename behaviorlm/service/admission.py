"""Admission that knows time: admit a prediction only when it can finish within its deadline.

A count bound alone (``max_queue``) admits far more work than the engine can finish before the
deadline: measured on the CPU demo before this module, 48 concurrent requests gave 8 answers and
40 timeouts of 10 s each, and no 429 a load balancer could act on. Here the service rate is
estimated from the engine's own recent calls (an exponentially weighted seconds per prediction,
warmed by the start-up canary), and a request of ``n`` predictions is admitted iff

    the server is idle, or  fill_wait + (inflight + n) * seconds_per_prediction
                             <= deadline * (1 - admission_margin)

where ``inflight`` counts the predictions admitted and not finished (queued or in the engine)
and ``fill_wait`` is the micro-batcher's longest wait for a batch to fill. Otherwise the answer
is 429 at once, with ``Retry-After`` the seconds until the work ahead has drained enough for
this request to fit. ``max_queue`` stays a hard cap on ``inflight`` (429, reason queue_full).
An idle server always admits, so a cold or slow engine is measured rather than refused forever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Weight of the newest engine call in the estimate: with micro-batches of ~8 this follows a
# change of load within ~5 batches and is not thrown by one slow batch.
EWMA_WEIGHT = 0.2
MAX_RETRY_AFTER_S = 60


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused, in the terms of the 429 it becomes."""

    reason: str  # metric label: overloaded | queue_full
    message: str
    retry_after_s: int


class Admission:
    def __init__(self, max_queue: int, margin: float, fill_wait_s: float) -> None:
        self.max_queue = max_queue
        self.margin = margin
        self.fill_wait_s = fill_wait_s
        self.seconds_per_prediction: float | None = None
        self._seen_full = False

    def observe(self, predictions: int, seconds: float, full: bool = True) -> None:
        """One engine call that finished ``predictions`` in ``seconds`` of wall time (for an
        engine serving requests concurrently: its latency divided by the concurrency).

        Once a full batch has been seen, only full batches update the estimate: a queue only
        forms when batches are full, and a lone prompt costs more per prediction than a full
        batch (a fixed cost per forward), so counting it would refuse work that fits.
        """
        if predictions <= 0 or seconds < 0 or (self._seen_full and not full):
            return
        self._seen_full = self._seen_full or full
        per = seconds / predictions
        old = self.seconds_per_prediction
        self.seconds_per_prediction = per if old is None else old + EWMA_WEIGHT * (per - old)

    def expected_seconds(self, inflight: int, n: int) -> float:
        """Expected time until ``n`` more predictions, queued behind ``inflight``, finish."""
        spp = self.seconds_per_prediction or 0.0
        return self.fill_wait_s + (inflight + n) * spp

    def check(self, inflight: int, n: int, deadline_s: float) -> Refusal | None:
        """None to admit, else the refusal."""
        if inflight + n > self.max_queue:
            return Refusal(
                "queue_full",
                f"server busy: {inflight} predictions in flight, {n} more would pass the limit "
                f"of {self.max_queue}; retry shortly",
                self._retry_after(inflight + n - self.max_queue),
            )
        if inflight == 0:
            return None
        budget = deadline_s * (1 - self.margin)
        expected = self.expected_seconds(inflight, n)
        if expected <= budget:
            return None
        return Refusal(
            "overloaded",
            f"server busy: {inflight} predictions ahead would finish in about {expected:.2f} s, "
            f"past this request's {deadline_s:g} s deadline (less a {self.margin:.0%} margin); "
            "retry later or elsewhere",
            self._retry_after_seconds(expected - budget),
        )

    def _retry_after(self, excess_predictions: int) -> int:
        spp = self.seconds_per_prediction or 0.0
        return self._retry_after_seconds(excess_predictions * spp)

    @staticmethod
    def _retry_after_seconds(seconds: float) -> int:
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(seconds)))
