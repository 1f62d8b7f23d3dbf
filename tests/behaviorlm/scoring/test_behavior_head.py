"""The trained behavior head (scoring format 4) in the transformers engine: an untrained head
equals the label-word head, a trained one is what gets served, manifests are checked, new
behaviors score by their names, and repeat features read the request's past."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from behaviorlm.errors import ManifestMismatch
from behaviorlm.events import Event
from behaviorlm.head import HEAD_FILE, BehaviorHead, init_rows
from behaviorlm.prompt import render_prompt
from behaviorlm.repeats import FEATURES, RepeatInput
from tests.head_helpers import attach_head

torch = pytest.importorskip("torch")


def _requests(spec: Any, behaviors: tuple[str, ...], past: RepeatInput | None = None) -> list[Any]:
    from behaviorlm.scoring import ScoreRequest

    t0 = datetime(2018, 3, 3, 8, 0)
    prompts = [
        render_prompt(
            [Event("Coffee Shop", t0), Event("Gym", t0 + timedelta(hours=2 + i))],
            t0 + timedelta(hours=5 + i),
        )
        for i in range(3)
    ]
    return [
        ScoreRequest(p, behaviors, adapter=spec.name, temperature=1.0, past=past) for p in prompts
    ]


@pytest.fixture(scope="module")
def engine(tiny_model: Any) -> Any:
    from behaviorlm.scoring.transformers_engine import TransformersEngine

    eng = TransformersEngine(tiny_model, dtype="float32")
    yield eng
    eng.close()


def test_untrained_head_equals_label_words(
    engine: Any, tiny_model: Any, tiny_adapters: list[Any], tmp_path: Path
) -> None:
    plain = tiny_adapters[0]
    head = attach_head(plain, tmp_path / "h", tiny_model)
    engine.load_adapter(plain)
    engine.load_adapter(head)
    names = tuple(e.name for e in plain.manifest.vocabulary)
    a = engine.score_batch(_requests(plain, names))
    b = engine.score_batch(_requests(head, names))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x.probs, y.probs, atol=1e-5)
        assert x.label_mass == pytest.approx(y.label_mass, abs=1e-9)


def test_trained_rows_are_served_and_new_names_use_the_rule(
    engine: Any, tiny_model: Any, tiny_adapters: list[Any], tmp_path: Path
) -> None:
    plain = tiny_adapters[1]
    head = attach_head(plain, tmp_path / "h", tiny_model, noise=0.5)
    engine.load_adapter(plain)
    engine.load_adapter(head)
    names = tuple(e.name for e in plain.manifest.vocabulary)
    a = engine.score_batch(_requests(plain, names))[0]
    b = engine.score_batch(_requests(head, names))[0]
    assert np.abs(a.probs - b.probs).max() > 1e-3  # the trained rows changed the answer
    # A new behavior beside two known ones: the known rows are the trained ones, the new one
    # is scored by its name, as the label-word head scores it.
    cands = (names[0], names[1], "Night Market")
    c_head = engine.score_batch(_requests(head, cands))[0]
    loaded = BehaviorHead.load(head.path, head.manifest.head, names)
    # the two known behaviors keep their trained logit difference
    lh = np.log(c_head.probs)
    known = np.log(b.probs[[0, 1]])
    assert lh[0] - lh[1] == pytest.approx(known[0] - known[1], abs=1e-4)
    # the rows served: trained ones for known names, the rule's (mean of the name's output
    # rows, bias 0) for the new one
    label = engine.label_head(cands)
    rows = engine._trained_rows(head.name, label)
    np.testing.assert_allclose(rows.weight[:2].numpy(), loaded.weight[:2], atol=1e-6)
    out = engine._model.get_output_embeddings().weight.detach().numpy()
    rule, _ = init_rows(label, out[label.union], None)
    np.testing.assert_allclose(rows.weight[2].numpy(), rule[2], atol=1e-6)
    assert float(rows.bias[2]) == 0.0
    assert loaded.weight.shape == (len(names), tiny_model_hidden(tiny_model))


def tiny_model_hidden(base: Any) -> int:
    return int(json.loads((Path(base.path) / "config.json").read_text())["hidden_size"])


def test_repeat_features_read_the_past(
    engine: Any, tiny_model: Any, tiny_adapters: list[Any], tmp_path: Path
) -> None:
    plain = tiny_adapters[0]
    weights = np.zeros(len(FEATURES), np.float32)
    weights[FEATURES.index("log_count")] = 2.0
    head = attach_head(plain, tmp_path / "h", tiny_model, repeat_window=3, feature_weights=weights)
    engine.load_adapter(head)
    names = tuple(e.name for e in plain.manifest.vocabulary)
    t = datetime(2018, 3, 3, 8)
    # "Gym" 4 times, but only the last 3 events are in the window: log(1 + 2) * 2 added
    past = RepeatInput.of_events(["Gym", "Gym", "Bar", "Gym"], [t] * 4, t, shown=2)
    none = engine.score_batch(_requests(head, names))[0]
    with_past = engine.score_batch(_requests(head, names, past))[0]
    gym, bar = names.index("Gym"), names.index("Bar")
    shift = np.log(with_past.probs) - np.log(none.probs)
    assert shift[gym] - shift[0 if gym else 1] == pytest.approx(2 * np.log(3), abs=1e-4)
    assert shift[bar] - shift[0 if gym else 1] == pytest.approx(2 * np.log(2), abs=1e-4)


def test_manifest_checks_refuse_a_mismatched_head(
    engine: Any, tiny_model: Any, tiny_adapters: list[Any], tmp_path: Path
) -> None:
    from behaviorlm.scoring import AdapterSpec

    plain = tiny_adapters[0]
    head = attach_head(plain, tmp_path / "h", tiny_model)
    # another head's file: the hash no longer matches
    other = attach_head(plain, tmp_path / "other", tiny_model, noise=0.1)
    shutil.copy2(other.path / HEAD_FILE, head.path / HEAD_FILE)
    with pytest.raises(ManifestMismatch, match="sha256"):
        engine.load_adapter(head)
    # the file is missing
    (head.path / HEAD_FILE).unlink()
    with pytest.raises(ManifestMismatch, match="does not exist"):
        engine.load_adapter(head)
    # format 4 without a head, and a head under format 3
    no_head = head.manifest.model_copy(update={"head": None})
    with pytest.raises(ManifestMismatch, match="needs a trained behavior head"):
        engine.load_adapter(AdapterSpec("x", head.path, no_head))
    stray = other.manifest.model_copy(update={"scoring_format": 3})
    with pytest.raises(ManifestMismatch, match="reads no trained head"):
        engine.load_adapter(AdapterSpec("y", other.path, stray))
    # a head for another hidden size
    wrong = other.manifest.model_copy(
        update={"head": other.manifest.head.model_copy(update={"hidden_size": 7})}
    )
    with pytest.raises(ManifestMismatch, match="shape"):
        engine.load_adapter(AdapterSpec("z", other.path, wrong))


def test_auto_engine_and_vllm_readout_for_a_trained_head() -> None:
    # cuda=True stands in for a GPU (none here): with vLLM installed auto picks it, and a
    # trained head makes vLLM read the hidden state (the only readout that can apply it).
    import importlib.util

    from behaviorlm.errors import InputError
    from behaviorlm.scoring.factory import choose_kind, vllm_readout

    assert choose_kind("auto", cuda=False) == "transformers"
    if importlib.util.find_spec("vllm") is not None:
        assert choose_kind("auto", cuda=True) == "vllm"
    assert choose_kind("vllm") == "vllm"
    assert vllm_readout("auto", trained_head=True) == "hidden"
    assert vllm_readout("auto", trained_head=False) == "logprobs"
    assert vllm_readout("logprobs", trained_head=True) == "logprobs"  # refused at load
    assert vllm_readout("hidden", trained_head=False) == "hidden"
    with pytest.raises(InputError, match="vllm_readout"):
        vllm_readout("pooled", trained_head=False)
