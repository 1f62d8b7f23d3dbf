import json

import pytest

from behaviorlm.errors import InputError, ManifestMismatch
from behaviorlm.manifest import MANIFEST_FILE, AdapterManifest, BaseModelRef, Calibration
from behaviorlm.prompt import PieceEncoder
from behaviorlm.vocabulary import Vocabulary

BASE = BaseModelRef(id="SmolLM2-135M-Instruct", sha256="ab" * 32)


def _manifest(tokenizer) -> AdapterManifest:
    vocab = Vocabulary.from_counts({"Coffee Shop": 90, "Chinese Restaurant": 9, "Gym": 1})
    return AdapterManifest.for_vocabulary(
        vocab,
        [PieceEncoder(tokenizer).label_tokens(n) for n in vocab.names],
        history_events=10,
        name="demo",
        version="3",
        stage="stage2",
        strategy="behaviorlm",
        base_model=BASE,
        calibration=Calibration(temperature=1.3, fitted_on="validation"),
        lora={"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]},
        training_config={"stage1": {"steps": 10}},
        metrics={"tail_macro_f1": 0.1},
    )


def test_round_trip(tmp_path, smollm2_tokenizer) -> None:
    m = _manifest(smollm2_tokenizer)
    m.save(tmp_path)
    loaded = AdapterManifest.load(tmp_path)
    assert loaded == m
    assert loaded.to_vocabulary().anchors == ("Coffee Shop", "Chinese Restaurant")
    assert loaded.anchors == ["Coffee Shop", "Chinese Restaurant"]
    loaded.check_compatible(BASE, smollm2_tokenizer)  # same base, prompt, tokenizer: accepted


def test_refuses_another_base_model(smollm2_tokenizer) -> None:
    other = BaseModelRef(id="tiny", sha256="cd" * 32)
    with pytest.raises(ManifestMismatch, match="trained on base model 'SmolLM2-135M-Instruct'"):
        _manifest(smollm2_tokenizer).check_compatible(other)


def test_refuses_another_prompt_version(smollm2_tokenizer) -> None:
    m = _manifest(smollm2_tokenizer).model_copy(update={"prompt_version": "v0"})
    with pytest.raises(ManifestMismatch, match="prompt version 'v0'"):
        m.check_compatible(BASE)


def test_refuses_another_tokenizer(smollm2_tokenizer) -> None:
    m = _manifest(smollm2_tokenizer)
    entries = list(m.vocabulary)
    entries[0] = entries[0].model_copy(update={"tokens": [1, 2, 3]})
    with pytest.raises(ManifestMismatch, match="'Coffee Shop' encodes to"):
        m.model_copy(update={"vocabulary": entries}).check_compatible(BASE, smollm2_tokenizer)


def test_load_errors_name_file_and_field(tmp_path, smollm2_tokenizer) -> None:
    with pytest.raises(InputError, match="no adapter manifest"):
        AdapterManifest.load(tmp_path)
    raw = json.loads(_manifest(smollm2_tokenizer).model_dump_json())
    raw["calibration"]["temperature"] = -1
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(InputError, match=r"manifest.json: field 'calibration.temperature'"):
        AdapterManifest.load(tmp_path)
    raw["schema_version"] = 99
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(ManifestMismatch, match="schema_version is 99"):
        AdapterManifest.load(tmp_path)


def test_refuses_answer_tree_adapters_and_other_scoring(tmp_path, smollm2_tokenizer) -> None:
    raw = json.loads(_manifest(smollm2_tokenizer).model_dump_json())
    old = {**raw, "schema_version": 1, "prompt_version": "v1"}
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(old))
    with pytest.raises(ManifestMismatch, match=r"scoring format 2 \(answer tree.*retrain"):
        AdapterManifest.load(tmp_path)
    m = _manifest(smollm2_tokenizer).model_copy(update={"scoring_format": 2})
    with pytest.raises(ManifestMismatch, match=r"scoring format 2.*retrain"):
        m.check_compatible(BASE)


def test_label_head_from_manifest(smollm2_tokenizer) -> None:
    m = _manifest(smollm2_tokenizer)
    head = m.label_head()
    assert head.names == tuple(e.name for e in m.vocabulary)
    assert head.tokens[0] == PieceEncoder(smollm2_tokenizer).label_tokens("Coffee Shop")
    assert m.history_events == 10


def test_a_fully_tuned_manifest_has_its_own_schema(tmp_path, smollm2_tokenizer) -> None:
    """tuning full is written as schema 3 (a release that cannot serve it refuses it by its
    schema); LoRA manifests stay schema 2; both load, and the weights file follows the kind."""
    lora = _manifest(smollm2_tokenizer)
    assert lora.schema_version == 2 and lora.tuning == "lora"
    assert lora.weights_file(tmp_path) == tmp_path / "adapter_model.safetensors"
    raw = {**json.loads(lora.model_dump_json()), "tuning": "full", "lora": {}}
    full = AdapterManifest.model_validate(raw)
    assert full.schema_version == 3
    full.save(tmp_path)
    assert json.loads((tmp_path / MANIFEST_FILE).read_text())["schema_version"] == 3
    loaded = AdapterManifest.load(tmp_path)
    assert loaded == full and loaded.weights_file(tmp_path) == tmp_path / "model.safetensors"
    raw["tuning"] = "partial"
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(InputError, match=r"field 'tuning'"):
        AdapterManifest.load(tmp_path)
