"""The service on the OpenVINO CPU backend (issue 34): chosen by `cpu_backend`, recorded in
`GET /v1/models`, answering as the torch backend does, over real HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from behaviorlm.errors import InputError
from behaviorlm.service.settings import load_settings
from tests.service.service_helpers import ADMIN_TOKEN, ServerThread, history, settings_for

pytest.importorskip("openvino")


def _served(models_dir: Path, tiny_model: Any, **overrides: Any) -> tuple[dict, dict]:
    server = ServerThread(
        settings_for(models_dir, tiny_model, merge_adapter=True, **overrides)
    ).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            models = client.get("/v1/models").json()
            body = {"history": history(5), "top_k": 5}
            answer = client.post("/v1/predict", json=body)
            assert answer.status_code == 200, answer.text
            return models, answer.json()
    finally:
        server.stop()


def test_openvino_backend_serves_the_torch_answers(models_dir: Path, tiny_model: Any) -> None:
    torch_models, torch_answer = _served(models_dir, tiny_model, cpu_backend="torch")
    # auto: merged, fp32 and openvino installed -> openvino
    ov_models, ov_answer = _served(models_dir, tiny_model, cpu_backend="auto")
    assert (torch_models["engine_backend"], torch_models["dtype"]) == ("torch", "float32")
    assert (ov_models["engine"], ov_models["engine_backend"]) == ("transformers", "openvino")
    assert ov_models["dtype"] == "float32"
    got = [(p["behavior"], p["probability"]) for p in ov_answer["predictions"]]
    want = [(p["behavior"], p["probability"]) for p in torch_answer["predictions"]]
    assert [b for b, _ in got] == [b for b, _ in want]
    assert [p for _, p in got] == pytest.approx([p for _, p in want], abs=1e-4)


def test_openvino_without_merging_is_refused_by_name() -> None:
    with pytest.raises(InputError, match="BEHAVIORLM_MERGE_ADAPTER=true"):
        load_settings(cpu_backend="openvino", merge_adapter=False)


def test_a_merged_openvino_service_hot_swaps_a_new_version(
    models_dir: Path, tiny_model: Any
) -> None:
    """Merged serving keeps the admin hot load: the new version merges into its own copy of
    the base (and its own OpenVINO graph) while the old one answers, then replaces it."""
    from tests.random_adapter import make_random_adapter

    make_random_adapter(
        tiny_model, models_dir / "staging-ov" / "a0" / "v3", seed=11, name="a0", version="3"
    )
    settings = settings_for(
        models_dir, tiny_model, adapters="a0", merge_adapter=True, cpu_backend="openvino"
    )
    server = ServerThread(settings).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            body = {"history": history(5), "top_k": 3}
            assert client.post("/v1/predict", json=body).json()["adapter_version"] == "1"
            loaded = client.post(
                "/v1/admin/adapters",
                json={"name": "a0", "path": "staging-ov/a0/v3"},
                headers={"X-Admin-Token": ADMIN_TOKEN},
            )
            assert loaded.status_code == 200, loaded.text
            assert loaded.json()["replaced_version"] == "1"
            answer = client.post("/v1/predict", json=body)
            assert answer.status_code == 200 and answer.json()["adapter_version"] == "3"
            assert client.get("/v1/models").json()["engine_backend"] == "openvino"
    finally:
        server.stop()
