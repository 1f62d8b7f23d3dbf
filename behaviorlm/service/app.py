"""``create_app(settings)``: the FastAPI app; its lifespan owns the engine (``app.state.runtime``).

The engine loads in the background after the server starts listening, so liveness answers at
once and readiness turns 200 when the engine, the adapters and a canary prediction are up.
On shutdown the server stops accepting connections, in-flight requests finish (uvicorn waits
for them, then the runtime drains its queue), and only then is the engine closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from behaviorlm import __version__
from behaviorlm.service.engine_client import EngineFactory, build_engine
from behaviorlm.service.errors import install_error_handlers
from behaviorlm.service.metrics import ServiceMetrics
from behaviorlm.service.middleware import RequestContextMiddleware
from behaviorlm.service.predictor import Predictor
from behaviorlm.service.routers import admin, health, models, predict
from behaviorlm.service.runtime import Runtime
from behaviorlm.service.settings import ServiceSettings

log = logging.getLogger("behaviorlm.service.app")

DESCRIPTION = (
    "Predict a user's next behavior with a probability for every behavior of an adapter's "
    "vocabulary (BehaviorLM). Every error has the body "
    '`{"error": {"type", "message", "field", "request_id"}}`; every response carries '
    "`X-Request-ID`."
)


def create_app(
    settings: ServiceSettings,
    on_startup_failure: Callable[[str], None] | None = None,
    engine_factory: EngineFactory = build_engine,
) -> FastAPI:
    """The app; ``on_startup_failure(detail)`` is called if the engine or an adapter fails to
    load (``behaviorlm serve`` then stops the server and exits with the error).
    ``engine_factory`` builds the engine from the settings (tests wrap the real engine in one
    that injects faults)."""
    metrics = ServiceMetrics()

    async def start(runtime: Runtime) -> None:
        await runtime.start()
        if runtime.state == "failed" and on_startup_failure is not None:
            on_startup_failure(runtime.detail or "startup failed")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings, metrics, engine_factory)
        app.state.runtime = runtime
        app.state.predictor = Predictor(runtime)
        starting = asyncio.create_task(start(runtime), name="runtime-start")
        try:
            yield
        finally:
            if not starting.done():
                # Shutdown during startup: let the load finish so the engine can be closed.
                await asyncio.shield(starting)
            await runtime.close()

    app = FastAPI(
        title="BehaviorLM prediction service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_middleware(
        RequestContextMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes
    )
    for module in (predict, models, health, admin):
        app.include_router(module.router)
    return app
