"""``behaviorlm serve``: run the prediction service (uvicorn) with settings from the
environment (``BEHAVIORLM_*``) and these options, which take precedence."""

from __future__ import annotations

import argparse
from typing import Any

from behaviorlm.dtypes import DTYPE_CHOICES
from behaviorlm.scoring.factory import ENGINE_KINDS
from behaviorlm.service.settings import ServiceSettings

# option -> (settings field, help); the help text comes from the settings' own descriptions.
_OPTIONS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("--engine", "engine", {"choices": list(ENGINE_KINDS)}),
    ("--base-model", "base_model", {}),
    ("--models-dir", "models_dir", {}),
    ("--adapter", "adapters", {"action": "append", "metavar": "NAME=PATH|PATH"}),
    ("--default-adapter", "default_adapter", {}),
    ("--host", "host", {}),
    ("--port", "port", {"type": int}),
    ("--max-body-bytes", "max_body_bytes", {"type": int}),
    ("--max-history-events", "max_history_events", {"type": int}),
    ("--max-batch-items", "max_batch_items", {"type": int}),
    ("--request-deadline-s", "request_deadline_s", {"type": float}),
    ("--max-queue", "max_queue", {"type": int}),
    ("--admission-margin", "admission_margin", {"type": float}),
    ("--recovery-interval-s", "recovery_interval_s", {"type": float}),
    ("--batch-max-size", "batch_max_size", {"type": int}),
    ("--batch-max-wait-ms", "batch_max_wait_ms", {"type": float}),
    ("--merge-adapter", "merge_adapter", {"action": argparse.BooleanOptionalAction}),
    ("--dtype", "dtype", {"choices": list(DTYPE_CHOICES)}),
    ("--log-level", "log_level", {"choices": ["debug", "info", "warning", "error"]}),
    ("--shutdown-grace-s", "shutdown_grace_s", {"type": float}),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve predictions over HTTP (FastAPI; transformers or vLLM engine)",
        description=(
            "Serve the adapters in the models directory over HTTP: POST /v1/predict, "
            "/v1/predict/batch, GET /v1/models, /health/live, /health/ready, /metrics. Every "
            "option can also be set as an environment variable BEHAVIORLM_<OPTION> (e.g. "
            "BEHAVIORLM_ENGINE=vllm); options given here win. The API key "
            "(BEHAVIORLM_API_KEY) and admin token (BEHAVIORLM_ADMIN_TOKEN) are read from the "
            "environment only, so they do not show up in process listings."
        ),
    )
    fields = ServiceSettings.model_fields
    for flag, field, extra in _OPTIONS:
        info = fields[field]
        default = info.default_factory() if info.default_factory else info.default  # type: ignore[call-arg]
        help_text = f"{info.description} (env BEHAVIORLM_{field.upper()}; default {default})"
        p.add_argument(flag, dest=field, default=None, help=help_text, **extra)
    p.set_defaults(func=_serve)


def _draining_server_class() -> type:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn that turns readiness 503 the moment SIGTERM/SIGINT arrives, so requests
        still reaching it over kept-alive connections get 503 + Retry-After (never a hang)
        while the in-flight ones finish within the grace period."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            app: Any = self.config.app
            runtime = getattr(app.state, "runtime", None)
            if runtime is not None:
                runtime.set_draining(True)
            super().handle_exit(sig, frame)

    return DrainingServer


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from behaviorlm.errors import EngineError
    from behaviorlm.service.app import create_app
    from behaviorlm.service.logs import configure_logging
    from behaviorlm.service.settings import load_settings

    overrides = {field: getattr(args, field) for _, field, _ in _OPTIONS}
    settings = load_settings(**overrides)
    configure_logging(settings.log_level)
    failure: list[str] = []

    def stop_on_failure(detail: str) -> None:
        failure.append(detail)
        server.should_exit = True

    app = create_app(settings, on_startup_failure=stop_on_failure)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None,
    )
    server = _draining_server_class()(config)
    server.run()
    if failure:
        raise EngineError(f"the service failed to start: {failure[0]}")
    return 0
