"""The one interface between the runtime and a scoring engine: :class:`EngineClient`.

Which implementation serves is decided once, by what the engine does with concurrent
requests (``ScoringEngine.schedules_itself``):

- :class:`BatchingClient`: an engine that scores a list of prompts per call (transformers)
  gets a micro-batcher in front; admission learns seconds per prediction from each batch.
- :class:`DirectClient`: an engine that schedules concurrent requests itself (vLLM) gets them
  one by one; admission learns from the gaps between completions.

Both report to the same ``observe(predictions, seconds, full)`` feed and the same metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from behaviorlm.errors import BehaviorLMError, InputError
from behaviorlm.manifest import AdapterManifest
from behaviorlm.scoring import ScoreRequest, ScoreResult, ScoringEngine
from behaviorlm.service.adapters import discover_adapters
from behaviorlm.service.batcher import MicroBatcher, ObserveFn
from behaviorlm.service.metrics import ServiceMetrics
from behaviorlm.service.settings import ServiceSettings

log = logging.getLogger("behaviorlm.service.engine_client")

# Builds (engine, kind) from the settings; create_app's seam for tests that inject faults.
EngineFactory = Callable[[ServiceSettings], tuple[ScoringEngine, str]]


def build_engine(settings: ServiceSettings) -> tuple[ScoringEngine, str]:
    """The engine the settings ask for (slow: loads the base model)."""
    from behaviorlm.base_model import resolve_base_model
    from behaviorlm.scoring.factory import choose_kind, make_engine, vllm_readout

    kind = choose_kind(settings.engine)
    full = fully_tuned_adapters(settings) if kind == "vllm" and settings.engine == "auto" else []
    if full:
        # vLLM serves LoRA adapters on one base model; a fully tuned model is a model of its own
        log.info("engine auto: transformers, since %s are fully tuned models", ", ".join(full))
        kind = "transformers"
    # transformers-only options (make_engine drops them for vLLM); the engine resolves a
    # backend of auto from its own merge, dtype and device
    opts: dict[str, Any] = {"merge": settings.merge_adapter, "backend": settings.cpu_backend}
    if kind == "vllm":
        # a trained head needs the readout's hidden state: auto starts vLLM's pooling runner
        heads = adapters_with_head(settings) if settings.vllm_readout == "auto" else []
        opts["readout"] = vllm_readout(settings.vllm_readout, trained_head=bool(heads))
        if heads:
            log.info("vLLM readout hidden: %s have a trained head", ", ".join(heads))
    if settings.dtype != "auto":
        opts["dtype"] = settings.dtype
    return make_engine(kind, resolve_base_model(settings.base_model), **opts), kind


def adapters_with_head(settings: ServiceSettings) -> list[str]:
    """Served names of the configured adapters whose manifest records a trained head."""
    return [name for name, m in _configured_manifests(settings).items() if m.head is not None]


def fully_tuned_adapters(settings: ServiceSettings) -> list[str]:
    """Served names of the configured adapters that are whole tuned models (tuning full)."""
    return [name for name, m in _configured_manifests(settings).items() if m.tuning == "full"]


def _configured_manifests(settings: ServiceSettings) -> dict[str, AdapterManifest]:
    """The manifests of the adapters the settings serve, read before an engine is chosen.

    Reads only the manifests; an unreadable one is left to the adapter load to report."""
    try:
        found = discover_adapters(settings.models_dir, settings.adapters)
    except InputError:
        return {}
    manifests = {}
    for name, path in found.items():
        try:
            manifests[name] = AdapterManifest.load(path)
        except (BehaviorLMError, OSError):
            continue
    return manifests


class EngineClient(ABC):
    """Scores requests on ``engine``; started and closed by the runtime."""

    def __init__(self, engine: ScoringEngine) -> None:
        self.engine = engine

    @property
    def fill_wait_s(self) -> float:
        """Longest a prediction waits for its batch to fill (admission adds it)."""
        return 0.0

    def start(self) -> None:  # noqa: B027 - optional hook
        """Start background work (in the running event loop)."""

    @abstractmethod
    async def score(self, request: ScoreRequest) -> ScoreResult:
        """Score one request; cancelling drops or aborts the engine work."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Finish what was accepted, then stop background work (not the engine)."""


class BatchingClient(EngineClient):
    """Concurrent requests gathered into ``engine.score_batch`` calls by a micro-batcher."""

    def __init__(
        self,
        engine: ScoringEngine,
        settings: ServiceSettings,
        metrics: ServiceMetrics,
        observe: ObserveFn,
    ) -> None:
        super().__init__(engine)
        self._wait_s = settings.batch_max_wait_ms / 1000
        # The engine serialises its own calls (score, load, unload): one lock, there.
        self._batcher = MicroBatcher(
            engine.score_batch, settings.batch_max_size, self._wait_s, metrics, observe=observe
        )

    @property
    def fill_wait_s(self) -> float:
        return self._wait_s

    def start(self) -> None:
        self._batcher.start()

    async def score(self, request: ScoreRequest) -> ScoreResult:
        return await self._batcher.submit(request)

    async def close(self) -> None:
        await self._batcher.close()


class DirectClient(EngineClient):
    """Each request straight to ``engine.ascore``; the engine batches concurrent ones."""

    def __init__(self, engine: ScoringEngine, metrics: ServiceMetrics, observe: ObserveFn) -> None:
        super().__init__(engine)
        self._metrics = metrics
        self._observe = observe
        self._last_done = 0.0  # perf_counter of the last completion

    async def score(self, request: ScoreRequest) -> ScoreResult:
        started = time.perf_counter()
        try:
            result = await self.engine.ascore(request)
        except asyncio.CancelledError:
            self._metrics.abandoned.inc()
            raise
        done = time.perf_counter()
        self._metrics.engine_latency.observe(done - started)
        self._metrics.batch_size.observe(1)
        # The engine schedules concurrent requests itself, so a request's latency is not its
        # cost: the time since the previous completion (or since this request started, if the
        # engine was idle) is. Over a busy period these gaps add up to the busy time, so their
        # average is seconds per prediction at the engine's real concurrency.
        gap = done - max(self._last_done, started)
        self._last_done = done
        self._observe(1, gap, True)
        return result


def engine_client(
    engine: ScoringEngine, settings: ServiceSettings, metrics: ServiceMetrics, observe: ObserveFn
) -> EngineClient:
    """The client that suits ``engine``."""
    if engine.schedules_itself:
        return DirectClient(engine, metrics, observe)
    return BatchingClient(engine, settings, metrics, observe)
