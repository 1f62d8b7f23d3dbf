"""docker/entrypoint.sh run directly (no container engine here): it refuses bad settings with a
message naming the variable, and execs a real `behaviorlm serve` that shuts down gracefully."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.service_helpers import history, models_dir_with_foreign_adapter, wait_until

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEHAVIORLM_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"BEHAVIORLM_ENGINE": "tensorrt"}, "BEHAVIORLM_ENGINE must be transformers, vllm or auto"),
        ({"BEHAVIORLM_PORT": "http"}, "BEHAVIORLM_PORT must be a port number"),
        ({"BEHAVIORLM_PORT": "70000"}, "BEHAVIORLM_PORT must be a port number"),
        ({"BEHAVIORLM_MODELS_DIR": "/nonexistent/models"}, "BEHAVIORLM_MODELS_DIR"),
    ],
)
def test_entrypoint_rejects_bad_settings(
    settings: dict[str, str], needle: str, models_dir: Path
) -> None:
    env = _env(**{"BEHAVIORLM_MODELS_DIR": str(models_dir), **settings})
    r = subprocess.run([str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 64, r.stderr
    assert needle in r.stderr


def test_entrypoint_rejects_empty_models_dir(tmp_path: Path) -> None:
    env = _env(BEHAVIORLM_MODELS_DIR=str(tmp_path))
    r = subprocess.run([str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 64 and "no adapters in" in r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow  # a subprocess importing torch: ~10 s
def test_entrypoint_execs_serve_which_drains_on_sigterm(
    models_dir: Path, tiny_model: Any, tmp_path: Path
) -> None:
    port = _free_port()
    env = _env(
        BEHAVIORLM_ENGINE="transformers",
        BEHAVIORLM_BASE_MODEL=str(tiny_model.path),
        BEHAVIORLM_MODELS_DIR=str(models_dir),
        BEHAVIORLM_ADAPTERS="a0,a1",
        BEHAVIORLM_DTYPE="float32",
        BEHAVIORLM_HOST="127.0.0.1",
        BEHAVIORLM_PORT=str(port),
        BEHAVIORLM_BATCH_MAX_WAIT_MS="1000",
    )
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen([str(ENTRYPOINT)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, Path(log.name).read_text()
            try:
                if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("server did not become ready:\n" + Path(log.name).read_text())
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"serve" in cmdline and any(b"behaviorlm" in part for part in cmdline)

        result: dict[str, httpx.Response] = {}
        t = threading.Thread(
            target=lambda: result.setdefault(
                "r",
                httpx.post(
                    url + "/v1/predict",
                    json={"history": history(3)},
                    headers={"X-Request-ID": "term-1"},
                    timeout=30,
                ),
            )
        )
        t.start()
        # SIGTERM once the request waits in the micro-batcher for its batch to fill.
        wait_until(
            lambda: "behaviorlm_queue_depth 1.0" in httpx.get(url + "/metrics").text,
            what="request queued",
        )
        # A client on a kept-alive connection sends another request after SIGTERM: 503 at
        # once (readiness too), never a hang; new connections are refused once uvicorn closes
        # its socket.
        with httpx.Client(base_url=url, timeout=10) as kept:
            assert kept.get("/health/ready").status_code == 200
            proc.send_signal(signal.SIGTERM)
            try:
                late = kept.post("/v1/predict", json={"history": history(3)})
                assert late.status_code == 503, late.text
                assert late.json()["error"]["type"] == "unavailable"
            except httpx.TransportError:
                pass  # the connection was closed first: also a clear refusal
        t.join()
        assert result["r"].status_code == 200, result["r"].text
        # uvicorn re-raises the captured SIGTERM once its graceful shutdown is done.
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [json.loads(x) for x in Path(log.name).read_text().splitlines() if x.startswith("{")]
    access = [x for x in lines if x.get("request_id") == "term-1"]
    assert access and access[0]["status"] == 200 and access[0]["route"] == "/v1/predict"
    assert any(x["message"] == "stopped" for x in lines)


@pytest.mark.slow  # a subprocess importing torch: ~10 s
def test_serve_exits_with_the_reason_when_startup_fails(
    models_dir: Path, tiny_model: Any, tmp_path: Path
) -> None:
    bad = models_dir_with_foreign_adapter(models_dir, tmp_path)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "behaviorlm.cli",
            "serve",
            "--engine",
            "transformers",
            "--base-model",
            str(tiny_model.path),
            "--models-dir",
            str(bad),
            "--port",
            "0",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "error: the service failed to start" in r.stderr and "trained on base model" in r.stderr
    assert "Traceback" not in r.stderr
