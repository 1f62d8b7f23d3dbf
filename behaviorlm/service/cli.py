"""``behaviorlm serve``: run the prediction service (uvicorn) with settings from the
environment (``BEHAVIORLM_*``) and these options, which take precedence."""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, Literal

from pydantic.fields import FieldInfo

from behaviorlm.service.settings import ServiceSettings


def settings_flags() -> dict[str, tuple[str, dict[str, Any]]]:
    """field -> (flag, argparse keywords) for every ``ServiceSettings`` field that has a flag:
    the flag is the field's name with dashes (or its ``flag`` extra), the type and choices
    come from its annotation, the help from its description. Fields marked ``env_only`` (the
    secrets) have none."""
    flags: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, info in ServiceSettings.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("env_only"):
            continue
        flag = str(extra.get("flag") or "--" + name.replace("_", "-"))
        kwargs = _kind_keywords(info)
        if "metavar" in extra:
            kwargs["metavar"] = extra["metavar"]
        kwargs["help"] = (
            f"{info.description} (env BEHAVIORLM_{name.upper()}; default {_default(info)})"
        )
        flags[name] = (flag, kwargs)
    return flags


def _kind_keywords(info: FieldInfo) -> dict[str, Any]:
    kind = info.annotation
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if typing.get_origin(kind) is Literal:
        return {"choices": [str(c) for c in typing.get_args(kind)]}
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(kind) is list:
        return {"action": "append"}
    if kind in (int, float):
        return {"type": kind}
    return {}  # str, Path: the text as given; the settings convert and validate it


def _default(info: FieldInfo) -> Any:
    return info.default_factory() if info.default_factory else info.default  # type: ignore[call-arg]


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
    for field, (flag, kwargs) in settings_flags().items():
        p.add_argument(flag, dest=field, default=None, **kwargs)
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

    overrides = {field: getattr(args, field) for field in settings_flags()}
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
