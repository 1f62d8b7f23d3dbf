"""The service with a trained-head adapter over real HTTP: repeat features read the whole
history a request sends (longer than the prompt shows), new behaviors still score."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.head_helpers import models_with_count_head
from tests.service.service_helpers import ServerThread, history, settings_for


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Any, tiny_adapters: list[Any]
) -> Iterator[ServerThread]:
    models = models_with_count_head(
        tmp_path_factory.mktemp("head-service") / "models", tiny_adapters[0], tiny_model
    )
    srv = ServerThread(settings_for(models, tiny_model, default_adapter="a0-head")).start()
    yield srv
    srv.stop()


def _probs(client: httpx.Client, events: list[dict], adapter: str, **extra: Any) -> dict:
    body = {"history": events, "adapter": adapter, "top_k": 10, **extra}
    r = client.post("/v1/predict", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    return {**out, "by": {p["behavior"]: p["probability"] for p in out["predictions"]}}


def test_features_read_history_beyond_the_prompt(server: ServerThread) -> None:
    # 20 events, Gym 14 times in the first 14; the prompt shows only the last 6 (Bar, Office)
    events = history(14, ("Gym",)) + history(20, ("Bar", "Office"))[14:]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        full = _probs(client, events, "a0-head")
        short = _probs(client, events[-6:], "a0-head")
        plain_full = _probs(client, events, "a0")
        plain_short = _probs(client, events[-6:], "a0")
        models = client.get("/v1/models").json()
    assert full["history_events_used"] == 6 == short["history_events_used"]
    # the head's count feature saw the 14 Gyms only when the request sent them
    assert full["by"]["Gym"] > 5 * short["by"]["Gym"]
    # the label-word adapter renders the same prompt from both: the same answer
    for name, p in plain_full["by"].items():
        assert p == pytest.approx(plain_short["by"][name], abs=1e-9)
    info = {m["name"]: m for m in models["models"]}
    assert info["a0-head"]["scoring_format"] == 4 and info["a0-head"]["repeat_window"] == 40
    assert info["a0"]["scoring_format"] == 3 and info["a0"]["repeat_window"] == 0


def test_new_behaviors_score_by_name_with_a_trained_head(server: ServerThread) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        out = _probs(
            client,
            history(6),
            "a0-head",
            candidates=["Gym", "Bar", "Night Market"],
            allow_new_behaviors=True,
        )
    trained = {p["behavior"]: p["trained"] for p in out["predictions"]}
    assert trained == {"Gym": True, "Bar": True, "Night Market": False}
    assert sum(out["by"].values()) == pytest.approx(1.0, abs=1e-6)


def test_adapters_with_head_names_the_head_adapters(server: ServerThread) -> None:
    # What build_engine reads before choosing an engine for `auto` on a GPU machine.
    from behaviorlm.service.engine_client import adapters_with_head

    assert adapters_with_head(server.settings) == ["a0-head"]
    only_plain = server.settings.model_copy(update={"adapters": ["a0"]})
    assert adapters_with_head(only_plain) == []
