"""Fixtures of the service tests: a models directory of tiny adapters and the main server
(uvicorn on 127.0.0.1, real transformers engine on the tiny random Llama)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.service_helpers import ServerThread, make_models_dir, settings_for


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_adapters: list[Any]) -> Path:
    return make_models_dir(tmp_path_factory.mktemp("service"), tiny_adapters)


@pytest.fixture(scope="session")
def server(models_dir: Path, tiny_model: Any) -> Iterator[ServerThread]:
    """The main server: default limits, api key unset, admin token set."""
    srv = ServerThread(
        settings_for(models_dir, tiny_model, max_history_events=50, max_body_bytes=200_000)
    ).start()
    yield srv
    srv.stop()


@pytest.fixture()
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c
