"""The service's engine and adapters: readiness, admission, scoring, hot adapter swaps, drain.

One ``Runtime`` lives on ``app.state.runtime`` for the app's lifetime (the lifespan starts and
closes it); the predictor (``behaviorlm.service.predictor``) calls it, and it calls the engine
through one ``EngineClient``. No HTTP here: what goes wrong is a ``faults`` fault, so the
runtime runs (and is tested) without FastAPI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from behaviorlm.errors import BehaviorLMError, InputError
from behaviorlm.manifest import AdapterManifest
from behaviorlm.scoring import AdapterSpec, ScoreResult, ScoringEngine
from behaviorlm.service.adapters import discover_adapters, pick_default, resolve_inside
from behaviorlm.service.admission import Admission
from behaviorlm.service.conversion import Prepared, Served, prepare
from behaviorlm.service.engine_client import (
    EngineClient,
    EngineFactory,
    build_engine,
    engine_client,
)
from behaviorlm.service.faults import (
    AdapterNotFound,
    EngineFailed,
    InvalidRequest,
    NotReady,
    Overloaded,
)
from behaviorlm.service.metrics import ServiceMetrics
from behaviorlm.service.schemas import PredictRequest
from behaviorlm.service.settings import ServiceSettings

log = logging.getLogger("behaviorlm.service.runtime")

State = Literal["loading", "ready", "failed", "recovering", "draining", "stopped"]


class Runtime:
    def __init__(
        self,
        settings: ServiceSettings,
        metrics: ServiceMetrics,
        engine_factory: EngineFactory = build_engine,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._engine_factory = engine_factory
        self.state: State = "loading"
        self.detail: str | None = "engine loading"
        self.engine: ScoringEngine | None = None
        self.client: EngineClient | None = None
        self.engine_kind: str | None = None
        self.served: dict[str, Served] = {}
        self.default_adapter: str | None = None
        self._inflight = 0
        self._refs: Counter[str] = Counter()
        self._idle = asyncio.Event()
        self._idle.set()
        self._admin_lock = asyncio.Lock()
        self._load_counter = 0
        self._retired: set[asyncio.Task[None]] = set()
        self._recovery: asyncio.Task[None] | None = None
        self.admission = Admission(settings.max_queue, settings.admission_margin, 0.0)

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load engine and adapters, run the canary; failures leave the service not ready."""
        try:
            engine, kind = await asyncio.to_thread(self._engine_factory, self.settings)
            self.engine, self.engine_kind = engine, kind
            self.client = engine_client(engine, self.settings, self.metrics, self.admission.observe)
            self.admission.fill_wait_s = self.client.fill_wait_s
            self.client.start()
            found = discover_adapters(self.settings.models_dir, self.settings.adapters)
            if not found:
                raise BehaviorLMError(
                    f"no adapters found in {self.settings.models_dir} (expected "
                    "<name>/manifest.json); set BEHAVIORLM_MODELS_DIR or BEHAVIORLM_ADAPTERS"
                )
            self.default_adapter = pick_default(list(found), self.settings.default_adapter)
            if engine.serves_one_adapter:  # e.g. merged into the weights: the default
                found = {self.default_adapter: found[self.default_adapter]}
            for name, path in found.items():
                await self.load_adapter(name, path)
            await self._canary()
        except Exception as exc:
            self.state, self.detail = "failed", f"{type(exc).__name__}: {exc}"
            log.error("startup failed", extra={"error": self.detail})
            return
        self.state, self.detail = "ready", None
        self.metrics.ready.set(1)
        log.info(
            "ready",
            extra={
                "engine": self.engine_kind,
                "engine_backend": self.engine.served_as[0] if self.engine else None,
                "dtype": self.engine.served_as[1] if self.engine else None,
                "adapters": sorted(self.served),
                "default_adapter": self.default_adapter,
            },
        )

    async def _canary(self) -> None:
        """A full batch of real predictions through the whole path before declaring readiness;
        its timing warms the admission's estimate at the rate the engine has under load."""
        assert self.default_adapter is not None
        prepared = self._canary_request(self.served[self.default_adapter])
        copies = self.settings.batch_max_size
        results = await asyncio.gather(*(self.score(prepared) for _ in range(copies)))
        for result in results:
            if not result.probs.size or not abs(float(result.probs.sum()) - 1.0) < 1e-3:
                raise BehaviorLMError(
                    f"canary prediction gave invalid probabilities: {result.probs}"
                )

    def _canary_request(self, served: Served) -> Prepared:
        """Three of the adapter's behaviors as history, its whole vocabulary as candidates."""
        names = [e.name for e in served.manifest.vocabulary[:3]]
        req = PredictRequest.model_validate(
            {
                "history": [{"behavior": n, "timestamp": "2024-05-04T09:00:00"} for n in names],
                "now": "2024-05-04T12:00:00",
                "top_k": 1,
            }
        )
        assert self.engine is not None
        return prepare(req, served, self.engine, where="canary")

    async def close(self) -> None:
        """Drain: refuse new work, let in-flight predictions finish (up to the grace), stop."""
        if self.state == "stopped":
            return
        self.state, self.detail = "draining", "shutting down"
        self.metrics.ready.set(0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.settings.shutdown_grace_s)
        if self._recovery is not None:
            self._recovery.cancel()
        if self.client is not None:
            await self.client.close()
        for task in list(self._retired):
            task.cancel()
        if self.engine is not None:
            await asyncio.to_thread(self.engine.close)
        self.state, self.detail = "stopped", "stopped"
        log.info("stopped")

    def set_draining(self, draining: bool) -> None:
        if draining and self.state == "ready":
            self.state, self.detail = "draining", "draining (admin)"
            self.metrics.ready.set(0)
        elif not draining and self.state == "draining" and self.engine is not None:
            self.state, self.detail = "ready", None
            self.metrics.ready.set(1)

    @property
    def inflight(self) -> int:
        """Predictions admitted and not finished (queued or in the engine)."""
        return self._inflight

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def require_ready(self) -> None:
        if self.state != "ready":
            raise NotReady(f"service not ready ({self.detail or self.state})", retry_after_s=5)

    def require_engine(self) -> ScoringEngine:
        """The engine, for work that needs it loaded but not ready (an admin adapter load)."""
        if self.engine is None or self.state in ("loading", "failed", "stopped"):
            raise NotReady(f"engine not available ({self.detail or self.state})")
        return self.engine

    # ---- predictions -----------------------------------------------------------------------

    def adapter(self, name: str | None, field: str = "adapter") -> Served:
        """The served adapter a request names (None: the default)."""
        served = self.served.get(name or self.default_adapter or "")
        if served is None:
            raise AdapterNotFound(
                f"unknown adapter {name!r}; loaded: {sorted(self.served)}", field=field
            )
        return served

    def deadline_for(self, requested_ms: int | None) -> float:
        """The deadline of a request in seconds: the client's (X-Deadline-Ms), capped by the
        server's ``request_deadline_s``."""
        server = self.settings.request_deadline_s
        return server if requested_ms is None else min(server, requested_ms / 1000)

    @contextlib.asynccontextmanager
    async def admit(self, n: int, deadline_s: float) -> AsyncIterator[None]:
        """Reserve room for ``n`` predictions that must finish within ``deadline_s``, or refuse
        them at once (``behaviorlm.service.admission`` has the rule)."""
        refusal = self.admission.check(self._inflight, n, deadline_s)
        if refusal is not None:
            self.metrics.rejected.labels(refusal.reason).inc(n)
            raise Overloaded(refusal.message, retry_after_s=refusal.retry_after_s)
        self._inflight += n
        self._idle.clear()
        self.metrics.queue_depth.set(self._inflight)
        try:
            yield
        finally:
            self._inflight -= n
            self.metrics.queue_depth.set(self._inflight)
            if self._inflight == 0:
                self._idle.set()

    async def score(self, prepared: Prepared) -> ScoreResult:
        """Score one prepared request (cancelling it drops or aborts the engine work). An
        engine failure is ``EngineFailed`` and starts recovery; a request the engine finds
        invalid is ``InvalidRequest``."""
        assert self.client is not None
        key = prepared.served.key
        self._refs[key] += 1
        try:
            result = await self.client.score(prepared.score)
        except asyncio.CancelledError:
            raise
        except InputError as exc:
            raise InvalidRequest(str(exc)) from exc
        except Exception as exc:
            self.engine_failed(exc)
            raise EngineFailed(
                f"engine error: {type(exc).__name__}: {exc}; the service is recovering",
                retry_after_s=math.ceil(self.settings.recovery_interval_s),
            ) from exc
        finally:
            self._refs[key] -= 1
        adapter = prepared.served.name
        self.metrics.predictions.labels(adapter).inc()
        self.metrics.label_mass.labels(adapter).observe(result.label_mass)
        if prepared.unknown_history:
            self.metrics.unknown_history.labels(adapter).inc(prepared.unknown_history)
        if prepared.untrained:
            self.metrics.untrained_candidates.labels(adapter).inc(len(prepared.untrained))
        return result

    # ---- engine faults ---------------------------------------------------------------------

    def engine_failed(self, exc: BaseException) -> None:
        """Not ready until a canary passes again (every ``recovery_interval_s``)."""
        self.metrics.engine_errors.inc()
        if self.state not in ("ready", "recovering"):
            return
        if self.state == "ready":
            self.state = "recovering"
            self.detail = f"engine error ({type(exc).__name__}: {exc}); retrying a canary"
            self.metrics.ready.set(0)
            log.error("engine error; not ready until a canary passes", extra={"error": str(exc)})
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        while self.state == "recovering":
            await asyncio.sleep(self.settings.recovery_interval_s)
            if self.state != "recovering":
                return
            try:
                await self._canary()
            except Exception as exc:  # still broken: try again later
                log.warning("canary failed; still not ready", extra={"error": str(exc)})
                continue
            self.state, self.detail = "ready", None
            self.metrics.ready.set(1)
            log.info("canary passed; ready again")

    # ---- adapters --------------------------------------------------------------------------

    async def load_adapter(self, name: str, path: Path) -> tuple[Served, Served | None, float]:
        """Load ``path`` and serve it as ``name``; an existing version keeps serving until the
        new one is loaded, then finishes its in-flight requests and is unloaded."""
        assert self.engine is not None
        async with self._admin_lock:
            started = time.perf_counter()
            try:
                manifest = await asyncio.to_thread(AdapterManifest.load, path)
                self._load_counter += 1
                key = f"{name}@{manifest.version}#{self._load_counter}"
                spec = AdapterSpec(name=key, path=path, manifest=manifest)
                await asyncio.to_thread(self.engine.load_adapter, spec)
            except Exception:
                self.metrics.adapter_loads.labels(name, "load_failed").inc()
                raise
            served = Served(
                name=name,
                key=key,
                manifest=manifest,
                vocabulary=frozenset(e.name for e in manifest.vocabulary),
                anchors=frozenset(manifest.anchors),
            )
            old = self.served.get(name)
            self.served[name] = served  # atomic swap: new requests get the new version
            elapsed = time.perf_counter() - started
            self.metrics.adapter_loads.labels(name, "loaded").inc()
            log.info(
                "adapter loaded",
                extra={
                    "adapter": name,
                    "version": manifest.version,
                    "path": str(path),
                    "seconds": round(elapsed, 3),
                    "replaced": old.manifest.version if old else None,
                },
            )
            if old is not None:
                task = asyncio.get_running_loop().create_task(self._retire(old))
                self._retired.add(task)
                task.add_done_callback(self._retired.discard)
            return served, old, elapsed

    async def load_adapter_from(
        self, name: str, raw_path: str
    ) -> tuple[Served, Served | None, float]:
        path = resolve_inside(self.settings.models_dir, raw_path)
        return await self.load_adapter(name, path)

    async def _retire(self, old: Served) -> None:
        while self._refs[old.key] > 0:
            await asyncio.sleep(0.05)
        assert self.engine is not None
        await asyncio.to_thread(self.engine.unload_adapter, old.key)
        del self._refs[old.key]
        self.metrics.adapter_loads.labels(old.name, "unloaded").inc()
        log.info(
            "adapter version retired", extra={"adapter": old.name, "version": old.manifest.version}
        )
