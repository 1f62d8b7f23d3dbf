"""TransformersEngine on the tiny random Llama with two real (random) peft adapters."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest

from behaviorlm.errors import EngineError, InputError, ManifestMismatch
from behaviorlm.events import Event
from behaviorlm.manifest import BaseModelRef, Calibration
from behaviorlm.prompt import PieceEncoder, Prompt, render_prompt
from behaviorlm.scoring import AdapterSpec, ScoreRequest
from behaviorlm.scoring.factory import choose_kind, make_engine
from behaviorlm.scoring.transformers_engine import TransformersEngine

T0 = datetime(2024, 5, 6, 8, 0)
PROMPTS: tuple[Prompt, ...] = (
    render_prompt([Event("Gym", T0)], T0 + timedelta(hours=3)),
    render_prompt(
        [
            Event("Bar", T0 + timedelta(days=1)),
            Event("Coffee Shop", T0 + timedelta(days=1, hours=1), {"weather": "rain"}),
        ],
        T0 + timedelta(days=2, hours=2),
    ),
)


@pytest.fixture(scope="module")
def engine(tiny_model: Any, tiny_adapters: list[AdapterSpec]) -> Any:
    eng = TransformersEngine(tiny_model, dtype="float32")
    for spec in tiny_adapters:
        eng.load_adapter(spec)
    yield eng
    eng.close()


def _vocab(spec: AdapterSpec) -> tuple[str, ...]:
    return tuple(spec.manifest.to_vocabulary().names)


def _reference(
    tiny_model: Any, adapter: AdapterSpec | None, prompt: Prompt, names: tuple[str, ...]
) -> tuple[np.ndarray, float]:
    """Brute force from the full logits: a separately loaded model (+ that one adapter), one
    unpadded forward, the last position's whole-vocabulary logits; each behavior's score is the
    mean of its name tokens' logits, softmaxed; label mass from the full softmax."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model: Any = AutoModelForCausalLM.from_pretrained(str(tiny_model.path), dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter.path))
    encoder = PieceEncoder(AutoTokenizer.from_pretrained(str(tiny_model.path)))
    ids = torch.tensor([encoder.encode(prompt)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1].double()
    tokens = [encoder.label_tokens(n) for n in names]
    scores = torch.stack([logits[list(t)].mean() for t in tokens])
    full = torch.log_softmax(logits, dim=-1)
    mass = float(sum(full[t].exp() for t in {t[0] for t in tokens}))
    return torch.softmax(scores, dim=-1).numpy(), mass


def test_two_adapters_and_base_in_one_batch(
    engine: TransformersEngine, tiny_model: Any, tiny_adapters: list[AdapterSpec]
) -> None:
    a0, a1 = tiny_adapters
    names = _vocab(a0)
    requests = [
        ScoreRequest(PROMPTS[0], names, "a0"),
        ScoreRequest(PROMPTS[1], names, "a1"),
        ScoreRequest(PROMPTS[1], names, None),
        ScoreRequest(PROMPTS[1], names, "a0"),
    ]
    results = engine.score_batch(requests)
    assert [r.behaviors for r in results] == [names] * 4
    for r in results:
        assert r.probs.sum() == pytest.approx(1.0)
        assert 0 < r.label_mass <= 1
        assert r.forward_passes == 1
    # Prompts of different lengths share a (right-padded) batch: each equals the brute force.
    for result, adapter, prompt in (
        (results[0], a0, PROMPTS[0]),
        (results[1], a1, PROMPTS[1]),
        (results[3], a0, PROMPTS[1]),
        (results[2], None, PROMPTS[1]),
    ):
        probs, mass = _reference(tiny_model, adapter, prompt, names)
        np.testing.assert_allclose(result.probs, probs, atol=1e-5)
        assert result.label_mass == pytest.approx(mass, rel=1e-4)
    # the adapters really differ from each other and from the base model
    assert not np.allclose(results[1].probs, results[2].probs, atol=1e-3)
    assert not np.allclose(results[1].probs, results[3].probs, atol=1e-3)


def test_subset_and_new_behaviors(engine: TransformersEngine, tiny_adapters: list[Any]) -> None:
    names = _vocab(tiny_adapters[0])
    full, sub, new = engine.score_batch(
        [
            ScoreRequest(PROMPTS[1], names, "a0"),
            ScoreRequest(PROMPTS[1], names[:3], "a0"),
            ScoreRequest(PROMPTS[1], (*names[:3], "Ramen Shop"), "a0"),  # few-shot addition
        ]
    )
    assert sub.behaviors == names[:3] and sub.probs.sum() == pytest.approx(1.0)
    assert sub.label_mass <= full.label_mass
    # A subset is the full distribution renormalised (one readout, same scores).
    np.testing.assert_allclose(sub.probs, full.probs[:3] / full.probs[:3].sum(), atol=1e-9)
    assert new.behaviors[-1] == "Ramen Shop" and new.probs[-1] > 0
    np.testing.assert_allclose(new.probs[:3] / new.probs[:3].sum(), sub.probs, atol=1e-9)
    with pytest.raises(InputError, match="same label tokens"):
        engine.score_batch([ScoreRequest(PROMPTS[0], ("Coffee Shop", "Shop Coffee"), "a0")])


def test_calibration_temperature_applied_unless_overridden(
    tiny_model: Any, tiny_adapters: list[AdapterSpec]
) -> None:
    spec = tiny_adapters[0]
    hot = replace(
        spec,
        name="hot",
        manifest=spec.manifest.model_copy(
            update={"calibration": Calibration(temperature=3.0, fitted_on=None)}
        ),
    )
    eng = TransformersEngine(tiny_model, dtype="float32")
    eng.load_adapter(spec)
    eng.load_adapter(hot)
    names = _vocab(spec)
    plain, calibrated, overridden = eng.score_batch(
        [
            ScoreRequest(PROMPTS[0], names, "a0"),
            ScoreRequest(PROMPTS[0], names, "hot"),
            ScoreRequest(PROMPTS[0], names, "hot", temperature=1.0),
        ]
    )
    expected = np.exp(np.log(plain.probs) / 3.0)
    np.testing.assert_allclose(calibrated.probs, expected / expected.sum(), atol=1e-6)
    np.testing.assert_allclose(overridden.probs, plain.probs, atol=1e-6)
    with pytest.raises(InputError, match="temperature"):
        eng.score_batch([ScoreRequest(PROMPTS[0], names, "a0", temperature=0.0)])
    eng.unload_adapter("hot")
    with pytest.raises(InputError, match="not loaded"):
        eng.score_batch([ScoreRequest(PROMPTS[0], names, "hot")])


def test_merged_equals_unmerged(
    engine: TransformersEngine, tiny_model: Any, tiny_adapters: list[AdapterSpec]
) -> None:
    names = _vocab(tiny_adapters[1])
    merged = TransformersEngine(tiny_model, dtype="float32", merge=True)
    merged.load_adapter(tiny_adapters[1])
    requests = [ScoreRequest(p, names, "a1") for p in PROMPTS]
    for a, b in zip(merged.score_batch(requests), engine.score_batch(requests), strict=True):
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
        assert a.label_mass == pytest.approx(b.label_mass, abs=1e-5)
    with pytest.raises(InputError, match="merges"):
        merged.score_batch([ScoreRequest(PROMPTS[0], names, None)])
    with pytest.raises(EngineError, match="already merged"):
        merged.load_adapter(tiny_adapters[1])


def test_merged_engine_hot_swaps_a_new_version(
    engine: TransformersEngine, tiny_model: Any, tiny_adapters: list[AdapterSpec]
) -> None:
    """The service's hot swap on a merged engine: the new version (another adapter's weights
    here) merges into its own copy of the base while the old one still answers, then the old
    one is unloaded; each answers as the unmerged engine does."""
    merged = TransformersEngine(tiny_model, dtype="float32", merge=True)
    merged.load_adapter(replace(tiny_adapters[0], name="m@1"))
    merged.load_adapter(replace(tiny_adapters[1], name="m@2"))
    for old, new in (("m@1", "a0"), ("m@2", "a1")):
        names = _vocab(tiny_adapters[int(new[1])])
        got = merged.score_batch([ScoreRequest(p, names, old) for p in PROMPTS])
        want = engine.score_batch([ScoreRequest(p, names, new) for p in PROMPTS])
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
    merged.unload_adapter("m@1")
    assert set(merged.adapters) == {"m@2"}
    names = _vocab(tiny_adapters[1])
    after = merged.score_batch([ScoreRequest(PROMPTS[0], names, "m@2")])
    before = engine.score_batch([ScoreRequest(PROMPTS[0], names, "a1")])
    np.testing.assert_allclose(after[0].probs, before[0].probs, atol=1e-5)


def test_merged_engine_merges_into_a_clean_base_after_the_last_unload(
    engine: TransformersEngine, tiny_model: Any, tiny_adapters: list[AdapterSpec]
) -> None:
    """merge_and_unload writes into the model it is given: once the only merged adapter is
    unloaded, the next one must not merge on top of its weights."""
    merged = TransformersEngine(tiny_model, dtype="float32", merge=True)
    merged.load_adapter(replace(tiny_adapters[0], name="first"))
    merged.unload_adapter("first")
    merged.load_adapter(replace(tiny_adapters[1], name="second"))
    names = _vocab(tiny_adapters[1])
    got = merged.score_batch([ScoreRequest(p, names, "second") for p in PROMPTS])
    want = engine.score_batch([ScoreRequest(p, names, "a1") for p in PROMPTS])
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)


def test_manifest_mismatch_refused(engine: TransformersEngine, tiny_adapters: list[Any]) -> None:
    spec = tiny_adapters[0]
    other_base = spec.manifest.model_copy(
        update={"base_model": BaseModelRef(id="someone-else", sha256="0" * 64)}
    )
    with pytest.raises(ManifestMismatch, match="someone-else"):
        engine.load_adapter(replace(spec, name="wrong", manifest=other_base))
    assert "wrong" not in engine.adapters


def test_bf16_engine_sums_to_one(tiny_model: Any, tiny_adapters: list[AdapterSpec]) -> None:
    eng = TransformersEngine(tiny_model, dtype="bfloat16", batch_size=1)
    eng.load_adapter(tiny_adapters[0])
    names = _vocab(tiny_adapters[0])
    results = eng.score_batch([ScoreRequest(p, names, "a0") for p in PROMPTS])
    for r in results:
        assert np.isfinite(r.probs).all() and r.probs.sum() == pytest.approx(1.0)
    assert results[0].top(3)[0][1] >= results[0].top(3)[1][1]


def test_factory(tiny_model: Any) -> None:
    assert choose_kind("transformers") == "transformers"
    assert choose_kind("auto") in ("transformers", "vllm")
    with pytest.raises(InputError, match="engine"):
        choose_kind("onnx")
    eng = make_engine("transformers", tiny_model, dtype="float32", batch_size=4)
    assert isinstance(eng, TransformersEngine) and eng.batch_size == 4


@pytest.mark.gpu
def test_cuda_engine_matches_the_cpu_engine(
    engine: TransformersEngine, tiny_model: Any, tiny_adapters: list[AdapterSpec]
) -> None:
    """The same adapters on a CUDA device give the CPU engine's probabilities (float32)."""
    cuda = TransformersEngine(tiny_model, dtype="float32", device="cuda")
    try:
        for spec in tiny_adapters:
            cuda.load_adapter(spec)
        names = _vocab(tiny_adapters[0])
        requests = [ScoreRequest(p, names, a) for p in PROMPTS for a in ("a0", "a1", None)]
        for on_gpu, on_cpu in zip(
            cuda.score_batch(requests), engine.score_batch(requests), strict=True
        ):
            np.testing.assert_allclose(on_gpu.probs, on_cpu.probs, atol=1e-4)
    finally:
        cuda.close()
