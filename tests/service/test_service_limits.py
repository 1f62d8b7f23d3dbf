"""Overload (429), deadline (504), draining (503), auth (401) and graceful shutdown, each on a
real server whose limits make the condition certain rather than timing-dependent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.service_helpers import (
    ADMIN_TOKEN,
    ServerThread,
    history,
    models_dir_with_foreign_adapter,
    settings_for,
    wait_until,
)

API_KEY = "secret-key"


@pytest.fixture(scope="module")
def tight(models_dir: Path, tiny_model: Any) -> Iterator[ServerThread]:
    """Room for one prediction; the batcher waits 3 s to fill a batch but the deadline is
    1.5 s, so every prediction here times out while queued and is never scored."""
    srv = ServerThread(
        settings_for(
            models_dir,
            tiny_model,
            max_queue=1,
            max_batch_items=1,
            batch_max_wait_ms=3000,
            request_deadline_s=1.5,
            api_key=API_KEY,
        )
    ).start()
    yield srv
    srv.stop()


def _metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_api_key_required_on_prediction_routes(tight: ServerThread) -> None:
    req = {"history": history(2)}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}):
        r = httpx.post(tight.url + "/v1/predict", json=req, headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["type"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(tight.url + "/v1/models").status_code == 401
    ok = {"Authorization": f"Bearer {API_KEY}"}
    assert httpx.get(tight.url + "/v1/models", headers=ok).status_code == 200
    assert httpx.get(tight.url + "/v1/models", headers={"X-API-Key": API_KEY}).status_code == 200
    assert httpx.get(tight.url + "/health/ready").status_code == 200  # probes need no key
    assert httpx.get(tight.url + "/metrics").status_code == 200


def test_deadline_504_and_full_queue_429(tight: ServerThread) -> None:
    headers = {"X-API-Key": API_KEY}
    scored_before = _metric(tight.url, "behaviorlm_batch_size_count")
    first: dict[str, httpx.Response] = {}

    def send_first() -> None:
        first["r"] = httpx.post(
            tight.url + "/v1/predict", json={"history": history(2)}, headers=headers, timeout=10
        )

    t = threading.Thread(target=send_first)
    t.start()
    wait_until(lambda: tight.runtime.inflight == 1, what="first request admitted")
    r = httpx.post(tight.url + "/v1/predict", json={"history": history(2)}, headers=headers)
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "1" and r.json()["error"]["type"] == "overloaded"
    t.join()
    r1 = first["r"]
    assert r1.status_code == 504, r1.text
    assert (
        r1.json()["error"]["type"] == "deadline_exceeded"
        and "1.5 s" in r1.json()["error"]["message"]
    )
    # The batcher wakes up, finds the request abandoned and drops it unscored.
    wait_until(
        lambda: _metric(tight.url, "behaviorlm_abandoned_engine_requests_total") >= 1,
        what="abandoned request dropped",
    )
    assert _metric(tight.url, "behaviorlm_batch_size_count") == scored_before
    assert _metric(tight.url, 'behaviorlm_rejected_predictions_total{reason="queue_full"}') >= 1
    assert _metric(tight.url, 'behaviorlm_rejected_predictions_total{reason="deadline"}') >= 1
    assert _metric(tight.url, "behaviorlm_queue_depth") == 0


def test_drain_gives_503_then_resume(tight: ServerThread) -> None:
    admin = {"X-Admin-Token": ADMIN_TOKEN}
    bad = httpx.post(
        tight.url + "/v1/admin/drain", json={"draining": True}, headers={"X-Admin-Token": "nope"}
    )
    assert bad.status_code == 401
    r = httpx.post(tight.url + "/v1/admin/drain", json={"draining": True}, headers=admin)
    assert r.status_code == 200 and r.json()["ready"] is False
    ready = httpx.get(tight.url + "/health/ready")
    assert ready.status_code == 503 and "draining" in ready.json()["error"]["message"]
    assert httpx.get(tight.url + "/health/live").status_code == 200
    p = httpx.post(
        tight.url + "/v1/predict", json={"history": history(2)}, headers={"X-API-Key": API_KEY}
    )
    assert p.status_code == 503 and p.headers["retry-after"] == "5"
    r = httpx.post(tight.url + "/v1/admin/drain", json={"draining": False}, headers=admin)
    assert r.json()["ready"] is True
    assert httpx.get(tight.url + "/health/ready").status_code == 200


def test_graceful_shutdown_finishes_in_flight_requests(models_dir: Path, tiny_model: Any) -> None:
    srv = ServerThread(settings_for(models_dir, tiny_model, batch_max_wait_ms=2500)).start()
    results: list[httpx.Response] = []

    def send() -> None:
        results.append(
            httpx.post(srv.url + "/v1/predict", json={"history": history(3)}, timeout=30)
        )

    threads = [threading.Thread(target=send) for _ in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: srv.runtime.inflight == 3, what="three requests in the micro-batcher")
    runtime = srv.runtime
    srv.stop()  # what SIGTERM does: stop accepting, finish in-flight work, close the engine
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200, 200, 200]
    assert runtime.state == "stopped"
    with pytest.raises(httpx.TransportError):
        httpx.get(srv.url + "/health/live", timeout=2)


def test_startup_failure_stops_the_server_with_the_reason(
    models_dir: Path, tiny_model: Any, tmp_path: Path
) -> None:
    """An adapter for another base model: the server must not limp on unready, it stops."""
    bad = models_dir_with_foreign_adapter(models_dir, tmp_path)
    srv = ServerThread(settings_for(bad, tiny_model, default_adapter=None))
    with pytest.raises(RuntimeError, match="trained on base model"):
        srv.start()
    assert not srv.thread.is_alive()
    assert srv.runtime.state == "stopped"
