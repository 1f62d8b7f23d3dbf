"""Loading a new adapter version at runtime while predictions keep flowing."""

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
    settings_for,
    wait_until,
)

ADMIN = {"X-Admin-Token": ADMIN_TOKEN}


@pytest.fixture(scope="module")
def hot(models_dir: Path, tiny_model: Any) -> Iterator[ServerThread]:
    from tests.random_adapter import make_random_adapter

    make_random_adapter(
        tiny_model, models_dir / "staging" / "a0" / "v2", seed=7, name="a0", version="2"
    )
    srv = ServerThread(settings_for(models_dir, tiny_model, adapters="a0,a1")).start()
    yield srv
    srv.stop()


def test_new_version_swaps_in_without_dropping_requests(hot: ServerThread) -> None:
    req = {"history": history(4), "now": "2024-05-02T10:00:00+08:00", "top_k": 10}
    before = httpx.post(hot.url + "/v1/predict", json=req).json()
    assert before["adapter_version"] == "1"
    stop = threading.Event()
    seen: list[httpx.Response] = []
    per_worker: list[list[str]] = [[] for _ in range(4)]

    def hammer(mine: list[str]) -> None:
        with httpx.Client(base_url=hot.url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/v1/predict", json=req)
                seen.append(r)
                mine.append(r.json().get("adapter_version", "?"))

    workers = [threading.Thread(target=hammer, args=(mine,)) for mine in per_worker]
    for w in workers:
        w.start()
    try:
        wait_until(lambda: len(seen) >= 8, what="requests flowing before the load")
        r = httpx.post(
            hot.url + "/v1/admin/adapters",
            json={"name": "a0", "path": "staging/a0/v2"},
            headers=ADMIN,
            timeout=60,
        )
        # ... and keep flowing after it, until every client has seen the new version.
        wait_until(lambda: all("2" in v for v in per_worker), what="all clients on v2")
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert r.status_code == 200, r.text
    assert r.json()["version"] == "2" and r.json()["replaced_version"] == "1"
    assert all(x.status_code == 200 for x in seen), {x.status_code for x in seen}
    for versions in per_worker:
        # Each client's next request, sent after the swap, never goes back to the old version.
        assert versions[0] == "1" and versions[-1] == "2"
        assert versions == sorted(versions), versions
    after = httpx.post(hot.url + "/v1/predict", json=req).json()
    assert after["predictions"] != before["predictions"]
    models = httpx.get(hot.url + "/v1/models").json()["models"]
    assert next(m for m in models if m["name"] == "a0")["version"] == "2"
    metrics = httpx.get(hot.url + "/metrics").text
    assert 'behaviorlm_adapter_load_events_total{adapter="a0",event="unloaded"} 1.0' in metrics


def test_load_new_name_then_serve_it(hot: ServerThread) -> None:
    r = httpx.post(
        hot.url + "/v1/admin/adapters",
        json={"name": "fresh", "path": "a1"},
        headers=ADMIN,
        timeout=60,
    )
    assert r.status_code == 200 and r.json()["replaced_version"] is None
    p = httpx.post(hot.url + "/v1/predict", json={"history": history(2), "adapter": "fresh"})
    assert p.status_code == 200 and p.json()["model"] == "fresh"


@pytest.mark.parametrize(
    ("path", "needle"),
    [("../../etc", "outside the models directory"), ("missing", "no adapter manifest")],
)
def test_bad_adapter_paths_are_422(hot: ServerThread, path: str, needle: str) -> None:
    r = httpx.post(hot.url + "/v1/admin/adapters", json={"name": "x", "path": path}, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"]["message"] and r.json()["error"]["field"] == "path"


def test_admin_needs_token(hot: ServerThread) -> None:
    r = httpx.post(hot.url + "/v1/admin/adapters", json={"name": "x", "path": "a1"})
    assert r.status_code == 401 and r.json()["error"]["field"] == "X-Admin-Token"
