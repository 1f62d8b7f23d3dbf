"""Helpers for the service tests: real servers, uvicorn on 127.0.0.1 (a free port) in a background
thread, the real transformers engine on the tiny random Llama and the tiny LoRA adapters."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from behaviorlm.manifest import MANIFEST_FILE

ADMIN_TOKEN = "test-admin-token"


class ServerThread:
    """uvicorn serving ``create_app(settings)`` in a thread; ``stop()`` is a graceful shutdown
    (the same path as SIGTERM: stop accepting, finish in-flight requests, close the engine)."""

    def __init__(self, settings: Any, engine_factory: Any = None) -> None:
        import uvicorn

        from behaviorlm.service.app import create_app

        self.settings = settings
        self.failure: list[str] = []
        extra = {"engine_factory": engine_factory} if engine_factory is not None else {}
        self.app = create_app(settings, on_startup_failure=self._failed, **extra)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._sock = sock
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=30,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    def start(self, wait_ready: bool = True, timeout: float = 120) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.failure:
                self.thread.join(timeout=30)
                raise RuntimeError(f"server failed to start: {self.failure[0]}")
            try:
                r = httpx.get(self.url + "/health/ready", timeout=5)
                if r.status_code == 200 or not wait_ready:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server at {self.url} not ready after {timeout} s")

    def _failed(self, detail: str) -> None:
        self.failure.append(detail)
        self.server.should_exit = True

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
        self._sock.close()

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime


def make_models_dir(root: Path, adapters: list[Any]) -> Path:
    """models/<adapter name>/ with each tiny adapter's weights and manifest."""
    models = root / "models"
    for spec in adapters:
        shutil.copytree(spec.path, models / spec.name)
    return models


def settings_for(models: Path, tiny_model: Any, **overrides: Any) -> Any:
    from behaviorlm.service.settings import ServiceSettings

    fields: dict[str, Any] = {
        "engine": "transformers",
        "base_model": str(tiny_model.path),
        "models_dir": models,
        "default_adapter": "a0",
        "dtype": "float32",
        "admin_token": ADMIN_TOKEN,
        "log_level": "warning",
    }
    fields.update(overrides)
    return ServiceSettings(**fields)


def history(n: int = 4, behaviors: tuple[str, ...] = ("Coffee Shop", "Gym", "Bar")) -> list[dict]:
    return [
        {
            "behavior": behaviors[i % len(behaviors)],
            "timestamp": f"2024-05-0{1 + i // 24}T{i % 24:02d}:15:00+08:00",
        }
        for i in range(n)
    ]


def wait_until(condition: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    """Poll instead of sleeping a guessed time: the machine may be busy."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(0.01)


def models_dir_with_foreign_adapter(models_dir: Path, tmp_path: Path) -> Path:
    """A models directory whose only adapter claims another base model (startup must fail)."""
    import json

    bad = tmp_path / "models"
    shutil.copytree(models_dir / "a0", bad / "other-base")
    manifest_path = bad / "other-base" / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest["base_model"]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    return bad
