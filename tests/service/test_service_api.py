"""The HTTP API over real HTTP: predictions, batch, models, health, metrics, errors, logs."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator

import httpx
import pytest

from behaviorlm.service.logs import JsonFormatter
from tests.service.service_helpers import ServerThread, history, wait_until

VOCAB = {
    "Coffee Shop",
    "Chinese Restaurant",
    "Chinese Breakfast Place",
    "Shopping Mall",
    "Bus Stop",
    "Gym",
    "Bar",
    "Office",
    "Malay Restaurant",
    "Art Museum",
}


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"type", "message", "field", "request_id"}
    assert err["request_id"] == r.headers["x-request-id"]
    return err


def test_predict_returns_top_k_with_probabilities(client: httpx.Client) -> None:
    r = client.post("/v1/predict", json={"history": history(6), "top_k": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["request_id"] == r.headers["x-request-id"]
    assert body["model"] == "a0" and body["adapter_version"] == "1"
    assert body["stage"] == "stage2" and body["base_model"] == "tiny-random-llama"
    preds = body["predictions"]
    assert len(preds) == 4 and {p["behavior"] for p in preds} <= VOCAB
    probs = [p["probability"] for p in preds]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
    assert 0 < body["label_mass"] <= 1


def test_full_distribution_sums_to_one_and_alias_matches(client: httpx.Client) -> None:
    req = {"history": history(5), "now": "2024-05-02T10:00:00+08:00", "top_k": 10}
    a = client.post("/v1/predict", json=req).json()
    b = client.post("/predict", json=req).json()
    assert math.isclose(sum(p["probability"] for p in a["predictions"]), 1.0, rel_tol=1e-6)
    assert a["predictions"] == b["predictions"]  # same prompt, same answer via the alias
    assert a["request_id"] != b["request_id"]


def test_candidates_restrict_and_renormalise(client: httpx.Client) -> None:
    cands = ["Gym", "Bar", "Office"]
    r = client.post("/v1/predict", json={"history": history(4), "candidates": cands, "top_k": 10})
    preds = r.json()["predictions"]
    assert {p["behavior"] for p in preds} == set(cands)
    assert math.isclose(sum(p["probability"] for p in preds), 1.0, rel_tol=1e-6)


def test_second_adapter_gives_other_probabilities(client: httpx.Client) -> None:
    req = {"history": history(5), "top_k": 10, "now": "2024-05-02T10:00:00+08:00"}
    a0 = client.post("/v1/predict", json=req).json()
    a1 = client.post("/v1/predict", json={**req, "adapter": "a1"}).json()
    assert a1["model"] == "a1"
    p0 = {p["behavior"]: p["probability"] for p in a0["predictions"]}
    p1 = {p["behavior"]: p["probability"] for p in a1["predictions"]}
    assert max(abs(p0[k] - p1[k]) for k in p0) > 1e-4


def test_unknown_history_behaviors_allowed_and_counted(client: httpx.Client) -> None:
    before = _metric(client, 'behaviorlm_unknown_history_behaviors_total{adapter="a0"}')
    hist = [*history(3), {"behavior": "Underwater Basket Weaving"}, {"behavior": "Zorbing"}]
    r = client.post("/v1/predict", json={"history": hist})
    assert r.status_code == 200, r.text
    assert r.json()["unknown_history_behaviors"] == 2
    after = _metric(client, 'behaviorlm_unknown_history_behaviors_total{adapter="a0"}')
    assert after - before == 2


def test_unknown_candidate_and_adapter_are_4xx_naming_them(client: httpx.Client) -> None:
    err = _error(
        client.post("/v1/predict", json={"history": history(2), "candidates": ["Gym", "Moon"]}),
        422,
    )
    assert err["type"] == "unknown_candidate" and "'Moon'" in err["message"]
    assert "'Gym'" not in err["message"] and err["field"] == "candidates"
    assert "allow_new_behaviors" in err["message"]
    err = _error(client.post("/v1/predict", json={"history": history(2), "adapter": "nope"}), 404)
    assert err["type"] == "adapter_not_found" and "'nope'" in err["message"]
    assert err["field"] == "adapter"


def test_new_behaviors_by_name_when_asked_for(client: httpx.Client) -> None:
    """Open vocabulary: with allow_new_behaviors a candidate outside the vocabulary is scored by
    its name like the others, marked trained=false and counted."""
    metric = 'behaviorlm_untrained_candidates_total{adapter="a0"}'
    before = _metric(client, metric)
    cands = ["Gym", "Bar", "Rooftop Cinema", "Night Market"]
    req = {"history": history(4), "candidates": cands, "top_k": 10, "allow_new_behaviors": True}
    r = client.post("/v1/predict", json=req)
    assert r.status_code == 200, r.text
    preds = {p["behavior"]: p for p in r.json()["predictions"]}
    assert set(preds) == set(cands)
    assert math.isclose(sum(p["probability"] for p in preds.values()), 1.0, rel_tol=1e-6)
    assert [preds[c]["trained"] for c in cands] == [True, True, False, False]
    assert all(preds[c]["probability"] > 0 for c in cands)
    assert _metric(client, metric) - before == 2
    # The trained candidates keep their relative odds: one readout, the same scores.
    known = client.post(
        "/v1/predict", json={"history": history(4), "candidates": ["Gym", "Bar"], "top_k": 2}
    ).json()["predictions"]
    k = {p["behavior"]: p["probability"] for p in known}
    assert math.isclose(
        preds["Gym"]["probability"] / preds["Bar"]["probability"], k["Gym"] / k["Bar"], rel_tol=1e-6
    )
    # Two names the head cannot tell apart are refused, naming both.
    clash = {**req, "candidates": ["Gym", "Shop Coffee", "Coffee Shop"]}
    err = _error(client.post("/v1/predict", json=clash), 422)
    assert "'Coffee Shop'" in err["message"] and "'Shop Coffee'" in err["message"]
    assert err["field"] == "candidates"


def test_prompt_shows_the_adapters_history_window(client: httpx.Client) -> None:
    r = client.post("/v1/predict", json={"history": history(40)})
    assert r.status_code == 200 and r.json()["history_events_used"] == 6  # fixture's window
    r = client.post("/v1/predict", json={"history": history(3)})
    assert r.json()["history_events_used"] == 3


def test_validation_errors_use_the_one_error_shape(client: httpx.Client) -> None:
    err = _error(client.post("/v1/predict", json={"history": [{"behavior": ""}]}), 422)
    assert err["field"] == "history[0].behavior"
    err = _error(client.post("/v1/predict", json={"history": [], "top_k": 0}), 422)
    assert err["field"] == "top_k"
    long_value = [{"behavior": "Gym", "context": {"place": "x" * 201}}]
    err = _error(client.post("/v1/predict", json={"history": long_value}), 422)
    assert err["field"].startswith("history[0].context") and "200" in err["message"]
    err = _error(
        client.post(
            "/v1/predict", content=b"{not json", headers={"content-type": "application/json"}
        ),
        422,
    )
    assert err["type"] == "invalid_request"
    out_of_order = [history(2)[1], history(2)[0]]
    err = _error(client.post("/v1/predict", json={"history": out_of_order}), 422)
    assert "time order" in err["message"] and err["field"] == "history"
    _error(client.get("/v1/predict"), 405)
    _error(client.get("/no/such/route"), 404)


def test_history_limit_is_422(client: httpx.Client) -> None:
    err = _error(client.post("/v1/predict", json={"history": history(51)}), 422)
    assert err["field"] == "history" and "at most 50" in err["message"]


def test_body_limit_is_413(client: httpx.Client) -> None:
    big = {"history": [{"behavior": "x" * 150, "context": {"k": "v" * 150}}] * 900}
    err = _error(client.post("/v1/predict", json=big), 413)
    assert "200000 bytes" in err["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        yield b'{"history": ['
        for _ in range(3000):
            yield b'{"behavior": "' + b"y" * 100 + b'"},'
        yield b'{"behavior": "z"}]}'

    r = client.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    _error(r, 413)


def test_batch_one_bad_item_fails_alone(client: httpx.Client) -> None:
    items = [
        {"history": history(3)},
        {"history": "not a list"},
        {"history": history(3), "candidates": ["Gym", "Moon"]},
        {"history": history(3), "adapter": "a1", "top_k": 2},
    ]
    r = client.post("/v1/predict/batch", json={"items": items})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["failed"] == 2 and [x["index"] for x in body["results"]] == [0, 1, 2, 3]
    ok0, bad1, bad2, ok3 = body["results"]
    assert ok0["error"] is None and ok0["result"]["model"] == "a0"
    assert bad1["result"] is None and bad1["error"]["field"] == "items[1].history"
    assert bad2["error"]["type"] == "unknown_candidate" and "Moon" in bad2["error"]["message"]
    assert ok3["result"]["model"] == "a1" and len(ok3["result"]["predictions"]) == 2
    single = client.post("/v1/predict", json=items[0]).json()
    assert single["predictions"] == ok0["result"]["predictions"]


def test_models_lists_manifests_public_fields(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()
    assert body["engine"] == "transformers" and body["default_adapter"] == "a0"
    names = [m["name"] for m in body["models"]]
    assert "a0" in names and "a1" in names
    a0 = next(m for m in body["models"] if m["name"] == "a0")
    assert a0["default"] is True and {v["name"] for v in a0["vocabulary"]} == VOCAB
    assert set(a0["anchors"]) | set(a0["tails"]) == VOCAB
    assert a0["calibration"]["temperature"] == 1.0 and a0["prompt_version"] == "v2"
    assert a0["scoring_format"] == 3
    assert "tokens" not in a0["vocabulary"][0]


def test_health_live_and_ready(client: httpx.Client) -> None:
    for path in ("/health/live", "/v2/health/live", "/health/ready", "/v2/health/ready"):
        r = client.get(path)
        assert r.status_code == 200, (path, r.text)
        assert r.json()["status"] == "ok" and "a0" in r.json()["adapters"]


def test_request_id_is_echoed_or_generated(client: httpx.Client) -> None:
    r = client.post("/v1/predict", json={"history": history(2)}, headers={"X-Request-ID": "abc-1"})
    assert r.headers["x-request-id"] == "abc-1" and r.json()["request_id"] == "abc-1"
    r = client.get("/health/live", headers={"X-Request-ID": "bad id with spaces"})
    assert (
        r.headers["x-request-id"] != "bad id with spaces" and len(r.headers["x-request-id"]) == 32
    )
    r = client.get("/nowhere", headers={"X-Request-ID": "err-2"})
    assert r.headers["x-request-id"] == "err-2" and r.json()["error"]["request_id"] == "err-2"


def _metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_metrics_content(client: httpx.Client) -> None:
    client.post("/v1/predict", json={"history": history(3)})
    client.post("/v1/predict", json={"history": history(3), "adapter": "nope"})
    text = client.get("/metrics").text
    for needle in (
        'behaviorlm_http_requests_total{method="POST",route="/v1/predict",status="200"}',
        'behaviorlm_http_requests_total{method="POST",route="/v1/predict",status="404"}',
        "behaviorlm_request_latency_seconds_bucket",
        "behaviorlm_queue_latency_seconds_bucket",
        "behaviorlm_engine_latency_seconds_bucket",
        "behaviorlm_batch_size_bucket",
        "behaviorlm_queue_depth",
        'behaviorlm_label_mass_bucket{adapter="a0"',
        'behaviorlm_adapter_load_events_total{adapter="a0",event="loaded"}',
        'behaviorlm_predictions_total{adapter="a0"}',
        "behaviorlm_ready 1.0",
    ):
        assert needle in text, needle
    assert "user" not in text.lower()


def test_json_logs_have_request_id_and_no_history(
    client: httpx.Client, server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="behaviorlm.service.access")
    secret = "Secret Place Nobody Should Log"
    r = client.post(
        "/v1/predict",
        json={"history": [{"behavior": secret}]},
        headers={"X-Request-ID": "log-test-1"},
    )
    assert r.status_code == 200

    def access_lines() -> list[dict]:
        records = [rec for rec in caplog.records if rec.name == "behaviorlm.service.access"]
        return [json.loads(JsonFormatter().format(rec)) for rec in records]

    # the access line is written by the server thread after the response went out: on a busy
    # machine the client can read the response first
    wait_until(
        lambda: any(line.get("request_id") == "log-test-1" for line in access_lines()),
        what="the access log line",
    )
    lines = access_lines()
    mine = [line for line in lines if line.get("request_id") == "log-test-1"]
    assert mine and mine[0]["route"] == "/v1/predict" and mine[0]["status"] == 200
    assert mine[0]["history_events"] == 1
    assert all(secret not in json.dumps(line) for line in lines)


def test_mixed_timezone_kinds_are_422_and_user_id_is_echoed(client: httpx.Client) -> None:
    mixed = [
        {"behavior": "Gym", "timestamp": "2024-05-01T08:00:00"},
        {"behavior": "Bar", "timestamp": "2024-05-01T09:00:00+08:00"},
    ]
    err = _error(client.post("/v1/predict", json={"history": mixed}), 422)
    assert "UTC offset" in err["message"] and err["field"] == "history"
    r = client.post("/v1/predict", json={"history": history(2), "user_id": "u-17"})
    assert r.json()["user_id"] == "u-17"
    batch = client.post("/v1/predict/batch", json={"items": [{"history": [], "user_id": "u-1"}]})
    assert batch.json()["results"][0]["result"]["user_id"] == "u-1"
