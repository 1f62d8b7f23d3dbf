"""The runtime and the predictor without FastAPI: the real transformers engine on the tiny
model, driven directly, failing with the service's faults (no HTTP status below the routes)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from behaviorlm.service.faults import (
    AdapterNotFound,
    InvalidRequest,
    NotReady,
    Overloaded,
)
from behaviorlm.service.metrics import ServiceMetrics
from behaviorlm.service.predictor import Predictor
from behaviorlm.service.runtime import Runtime
from behaviorlm.service.schemas import PredictRequest
from tests.service.service_helpers import history, settings_for


def test_the_request_path_imports_no_web_framework() -> None:
    """predictor -> runtime -> engine client import neither FastAPI nor Starlette."""
    code = (
        "import sys\n"
        "import behaviorlm.service.predictor, behaviorlm.service.runtime\n"
        "import behaviorlm.service.engine_client\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_runtime_and_predictor_without_http(models_dir: Path, tiny_model: Any) -> None:
    settings = settings_for(models_dir, tiny_model, adapters="a0,a1", max_queue=64)

    async def scenario() -> None:
        runtime = Runtime(settings, ServiceMetrics())
        predictor = Predictor(runtime)
        req = PredictRequest.model_validate({"history": history(4), "top_k": 3})
        with pytest.raises(NotReady) as not_ready:
            await predictor.predict(req, None)
        assert not_ready.value.retry_after_s == 5 and "loading" in not_ready.value.message

        await runtime.start()
        try:
            assert runtime.state == "ready", runtime.detail
            assert runtime.client is not None and runtime.client.fill_wait_s == pytest.approx(
                settings.batch_max_wait_ms / 1000
            )
            result = await predictor.predict(req, None)
            assert result.model == "a0" and len(result.predictions) == 3
            assert all(0 <= p.probability <= 1 for p in result.predictions)

            other = PredictRequest.model_validate({"history": history(2), "adapter": "zz"})
            with pytest.raises(AdapterNotFound) as missing:
                await predictor.predict(other, None)
            assert missing.value.field == "adapter" and "'zz'" in missing.value.message

            bad = PredictRequest.model_validate(
                {"history": history(2), "candidates": ["Nowhere Known"]}
            )
            with pytest.raises(InvalidRequest) as invalid:
                await predictor.predict(bad, None)
            assert invalid.value.type == "unknown_candidate"
            assert invalid.value.field == "candidates"

            blank = [{"behavior": " ", "timestamp": "2024-05-01T09:00:00+08:00"}]
            items = [{"history": history(3)}, {"history": blank}, {"history": history(2)}]
            out = await predictor.predict_batch(items, None)
            assert [i.error is None for i in out] == [True, False, True]
            assert out[1].error is not None and out[1].error.field == "items[1].history[0].behavior"

            # Admission: a batch larger than the queue is refused as a whole, at once.
            many = [{"history": history(2)}] * settings.max_batch_items
            runtime.admission.max_queue = settings.max_batch_items - 1
            with pytest.raises(Overloaded) as refused:
                await predictor.predict_batch(many, None)
            assert refused.value.retry_after_s is not None and refused.value.retry_after_s >= 1
        finally:
            await runtime.close()
        assert runtime.state == "stopped"

    asyncio.run(scenario())


# Stands in for an install of the `engine` and `serve` extras only (the CPU image): the data and
# plotting stack of `train` cannot be imported.
_SERVE_ONLY = """
import importlib.abc, importlib.machinery, json, sys, time
from pathlib import Path

TRAIN_ONLY = {"pandas", "pyarrow", "duckdb", "matplotlib"}


class NotInstalled(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        return importlib.machinery.ModuleSpec(name, self) if top in TRAIN_ONLY else None

    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r}", name=spec.name)

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, NotInstalled())
from fastapi.testclient import TestClient

from behaviorlm.service.app import create_app
from behaviorlm.service.settings import ServiceSettings

settings = ServiceSettings(
    engine="transformers", base_model=sys.argv[2], models_dir=Path(sys.argv[1]),
    adapters=["a0"], default_adapter="a0", dtype="float32", log_level="warning",
)
history = [{"behavior": "Gym", "timestamp": "2024-05-01T09:15:00+08:00"}]
with TestClient(create_app(settings)) as client:
    deadline = time.monotonic() + 240  # the engine loads in the background
    while (ready := client.get("/health/ready")).status_code != 200:
        if time.monotonic() > deadline or ready.json().get("status") == "failed":
            sys.exit(f"not ready: {ready.text}")
        time.sleep(0.2)
    answer = client.post("/v1/predict", json={"history": history, "top_k": 2})
loaded = sorted({m.split(".")[0] for m in sys.modules} & TRAIN_ONLY)
print(json.dumps({"status": answer.status_code, "n": len(answer.json().get("predictions", [])),
                  "loaded": loaded}))
"""


def test_serving_needs_no_training_stack(models_dir: Path, tiny_model: Any) -> None:
    """The CPU image installs `engine` + `serve`: a prediction must not need pandas, Arrow,
    DuckDB or matplotlib (they come with `train`)."""
    done = subprocess.run(
        [sys.executable, "-c", _SERVE_ONLY, str(models_dir), str(tiny_model.path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "status": 200,
        "n": 2,
        "loaded": [],
    }
