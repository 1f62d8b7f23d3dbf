"""The OpenVINO backend of the transformers engine: the merged decoder as an OpenVINO graph,
on the tiny random Llama with a real (random) adapter, against the torch engine it replaces.

The tolerance it must keep (issue 34): the same probabilities as torch fp32 to 1e-4, so the
same top-5; measured on the demo adapter over 320 real prompts it is 3e-6
(``benchmarks/cpu_engine_benchmark.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from behaviorlm.errors import InputError
from behaviorlm.scoring import AdapterSpec, ScoreRequest
from behaviorlm.scoring.transformers_engine import TransformersEngine
from tests.behaviorlm.scoring.test_transformers_engine import PROMPTS
from tests.head_helpers import attach_head

pytest.importorskip("openvino")

TOLERANCE = 1e-4


def _pair(tiny_model: Any, spec: AdapterSpec) -> tuple[TransformersEngine, TransformersEngine]:
    torch_engine = TransformersEngine(tiny_model, dtype="float32", merge=True)
    openvino = TransformersEngine(tiny_model, dtype="float32", merge=True, backend="openvino")
    for engine in (torch_engine, openvino):
        engine.load_adapter(spec)
    return torch_engine, openvino


def _agree(a: TransformersEngine, b: TransformersEngine, requests: list[ScoreRequest]) -> None:
    for x, y in zip(a.score_batch(requests), b.score_batch(requests), strict=True):
        assert x.behaviors == y.behaviors
        np.testing.assert_allclose(x.probs, y.probs, atol=TOLERANCE)
        assert x.label_mass == pytest.approx(y.label_mass, abs=TOLERANCE)
        assert [n for n, _ in x.top(5)] == [n for n, _ in y.top(5)]


def test_openvino_equals_torch_label_word_head(
    tiny_model: Any, tiny_adapters: list[AdapterSpec]
) -> None:
    spec = tiny_adapters[1]
    names = tuple(spec.manifest.to_vocabulary().names)
    torch_engine, openvino = _pair(tiny_model, spec)
    # one prompt alone, and a padded batch of different lengths (right padding, as torch)
    _agree(torch_engine, openvino, [ScoreRequest(PROMPTS[0], names, spec.name)])
    _agree(torch_engine, openvino, [ScoreRequest(p, names, spec.name) for p in PROMPTS])


def test_openvino_equals_torch_trained_head(
    tiny_model: Any, tiny_adapters: list[AdapterSpec], tmp_path: Path
) -> None:
    spec = attach_head(tiny_adapters[0], tmp_path / "head", tiny_model, noise=0.05)
    names = tuple(spec.manifest.to_vocabulary().names)
    torch_engine, openvino = _pair(tiny_model, spec)
    _agree(torch_engine, openvino, [ScoreRequest(p, names, spec.name) for p in PROMPTS])


def test_openvino_needs_a_merged_fp32_model(tiny_model: Any) -> None:
    with pytest.raises(InputError, match="merge=True"):
        TransformersEngine(tiny_model, dtype="float32", backend="openvino")
    with pytest.raises(InputError, match="fp32"):
        TransformersEngine(tiny_model, dtype="bfloat16", merge=True, backend="openvino")
    with pytest.raises(InputError, match="backend"):
        TransformersEngine(tiny_model, dtype="float32", merge=True, backend="onnx")


def test_auto_picks_openvino_only_where_it_gives_the_same_answers_faster() -> None:
    from behaviorlm.scoring.openvino_decoder import choose_backend

    assert choose_backend("auto", merged=True, dtype="float32", cuda=False) == "openvino"
    # unmerged (several adapters, hot reload), bf16 (native bf16 is faster), or a GPU: torch
    assert choose_backend("auto", merged=False, dtype="float32", cuda=False) == "torch"
    assert choose_backend("auto", merged=True, dtype="bfloat16", cuda=False) == "torch"
    assert choose_backend("auto", merged=True, dtype="float32", cuda=True) == "torch"
    assert choose_backend("torch", merged=True, dtype="float32", cuda=False) == "torch"
    with pytest.raises(ValueError, match="cpu_backend"):
        choose_backend("onnx", merged=True, dtype="float32", cuda=False)
