"""Full fine-tuning (``tuning=full``) on the tiny model: every weight trains (fp32 master
weights), each stage saves the whole model beside its manifest, the KL term reads a frozen
copy of the base, a finished stage resumes from its saved model, and the transformers engine
(unmerged and merged) and the service serve exactly what training computed (vLLM's refusal:
tests/behaviorlm/scoring/test_vllm_engine.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from behaviorlm.manifest import AdapterManifest

torch = pytest.importorskip("torch")

FULL = [
    "tuning=full",
    "head.trained=true",
    "head.repeat_window=8",
    "stage1.steps=4",
    "stage2.steps=4",
    "baseline.steps=4",
    "threads=1",
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from behaviorlm.training.data.config import PrepareConfig
    from behaviorlm.training.data.pipeline import prepare_log
    from behaviorlm.training.data.synthetic import SYNTHETIC_COLUMNS, make_synthetic_log

    out = tmp_path_factory.mktemp("prepared") / "synth"
    log = make_synthetic_log(40, 2000, 30, seed=2)
    prepare_log(
        log, out, PrepareConfig(history_len=4, anchor_share=0.04), name="synth", **SYNTHETIC_COLUMNS
    )
    return out


@pytest.fixture(scope="module")
def run(prepared: Path, tiny_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from behaviorlm.training.config import load_config
    from behaviorlm.training.stages import TrainingData, train

    out = tmp_path_factory.mktemp("runs") / "full"
    config = load_config("tiny", FULL)
    return train("behaviorlm", TrainingData.from_prepared(prepared), tiny_model, config, out)


def _weights(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_every_weight_trains_and_each_stage_saves_the_model(run: Any, tiny_model: Any) -> None:
    from transformers import AutoModelForCausalLM

    from behaviorlm.training.tuning import full_tuning

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model.path), dtype=torch.float32)
    base_weights = {k: v for k, v in base.state_dict().items() if k != "lm_head.weight"}
    saved = {}
    for stage, path in run.adapters.items():
        manifest = AdapterManifest.load(path)
        manifest.check_compatible(tiny_model.ref)
        assert manifest.tuning == "full" and manifest.lora == {}
        assert manifest.head is not None and manifest.scoring_format == 4
        assert (path / "config.json").exists() and not (path / "adapter_model.safetensors").exists()
        assert manifest.weights_file(path) == path / "model.safetensors"
        saved[stage] = _weights(path)
        assert set(base_weights) <= set(saved[stage])
        assert all(v.dtype == torch.float32 for v in saved[stage].values())  # master weights
    # every kind of weight moved, the embedding and the norms included
    for kind in ("embed_tokens", "q_proj", "o_proj", "down_proj", "input_layernorm", "norm"):
        keys = [k for k in base_weights if kind in k]
        assert keys and all(not torch.equal(saved["stage1"][k], base_weights[k]) for k in keys)
    # stage 2 goes on from stage 1
    assert any(not torch.equal(saved["stage1"][k], saved["stage2"][k]) for k in base_weights)
    # the KL term reads a frozen copy of the base: 0 at the first step (the head starts at the
    # label-word scores), > 0 once the weights moved, and the copy itself never trained
    log = json.loads((run.adapters["stage1"] / "train_log.json").read_text())
    assert log[0]["kl"] < 1e-6 < log[-1]["kl"]
    reference = full_tuning(run.model).reference
    assert reference is not None
    for key, value in reference.state_dict().items():
        if key in base_weights:
            assert torch.equal(value, base_weights[key]), key
    assert (run.adapters["stage1"].parent / "difficulty.parquet").exists()


@pytest.mark.parametrize("merge", [False, True])
def test_served_scores_equal_training_scores(
    run: Any, tiny_model: Any, prepared: Path, merge: bool
) -> None:
    """The engine's probabilities for a training target = softmax of the training loss's
    scores at the same readout, with the fully tuned model loaded from its stage directory."""
    from behaviorlm.head import BehaviorHead
    from behaviorlm.labels import LabelHead
    from behaviorlm.prompt import render_sample
    from behaviorlm.scoring import AdapterSpec, ScoreRequest
    from behaviorlm.scoring.transformers_engine import TransformersEngine
    from behaviorlm.training.batching import collate
    from behaviorlm.training.data.dataset import PreparedDataset
    from behaviorlm.training.features import readout_features
    from behaviorlm.training.losses import HeadTensors, readout_scores
    from behaviorlm.training.packing import pack
    from behaviorlm.training.stages import TrainingData

    path = run.adapters["stage2"]
    manifest = AdapterManifest.load(path)
    data = TrainingData.from_prepared(prepared)
    names = tuple(data.vocabulary.names)
    rows = pack(run.encoder, data.table, data.readouts, 12)
    feats = readout_features(data.table, data.readouts, data.vocabulary, 8, data.history_len)
    label = LabelHead.from_encoder(run.encoder, names)
    tensors = HeadTensors.of(run.model, label, "cpu", data.vocabulary.counts, True, feats)
    assert tensors.trained is not None and manifest.head is not None
    tensors.trained.restore(BehaviorHead.load(path, manifest.head, list(names)))
    picked = list(range(4))
    firsts = [int(rows.readouts[r][0]) for r in picked]
    with torch.no_grad():
        batch = collate(rows, picked, data.readouts.labels, None, 0)
        scores = readout_scores(run.model.eval(), batch, tensors)
    position = {int(i): n for n, i in enumerate(batch.readout_index.tolist())}
    samples = PreparedDataset.load(prepared).samples("train")
    requests = [
        ScoreRequest(
            render_sample(samples[i]),
            names,
            "s2",
            temperature=1.0,
            past=samples.past(i, 8, data.history_len),
        )
        for i in firsts
    ]
    engine = TransformersEngine(tiny_model, dtype="float32", merge=merge)
    plain = TransformersEngine(tiny_model, dtype="float32")
    try:
        engine.load_adapter(AdapterSpec("s2", path, manifest))
        served = engine.score_batch(requests)
        base = None if merge else engine.score_batch(_base(requests))
        engine.unload_adapter("s2")
        assert "s2" not in engine.adapters
        want_base = plain.score_batch(_base(requests))
    finally:
        engine.close()
        plain.close()
    for i, result in zip(firsts, served, strict=True):
        expected = torch.softmax(scores[position[i]].double(), dim=-1).numpy()
        np.testing.assert_allclose(result.probs, expected, atol=1e-5)
    if base is not None:  # unmerged: base-model requests still score the untouched base
        for got, want in zip(base, want_base, strict=True):
            np.testing.assert_allclose(got.probs, want.probs, atol=1e-6)


def test_a_name_keeps_its_kind_when_reloaded(
    run: Any, tiny_model: Any, tiny_adapters: list[Any]
) -> None:
    """Unmerged: a fully tuned adapter reloaded under its name replaces its model; a LoRA
    adapter under that name (or the reverse) is refused, naming both kinds."""
    from behaviorlm.errors import EngineError
    from behaviorlm.scoring import AdapterSpec
    from behaviorlm.scoring.transformers_engine import TransformersEngine

    path = run.adapters["stage2"]
    full = AdapterSpec("x", path, AdapterManifest.load(path))
    lora = AdapterSpec("y", tiny_adapters[0].path, tiny_adapters[0].manifest)
    engine = TransformersEngine(tiny_model, dtype="float32")
    try:
        engine.load_adapter(full)
        engine.load_adapter(lora)
        first = engine._full["x"]
        engine.load_adapter(full)
        assert engine._full["x"] is not first and set(engine.adapters) == {"x", "y"}
        with pytest.raises(EngineError, match=r"'x' is loaded with tuning 'full'.*'lora'"):
            engine.load_adapter(AdapterSpec("x", lora.path, lora.manifest))
        with pytest.raises(EngineError, match=r"'y' is loaded with tuning 'lora'.*'full'"):
            engine.load_adapter(AdapterSpec("y", path, full.manifest))
    finally:
        engine.close()


def _base(requests: list[Any]) -> list[Any]:
    """The same prompts for the base model (no adapter, label-word head)."""
    from dataclasses import replace

    return [replace(r, adapter=None, past=None) for r in requests]


def test_a_finished_stage_resumes_from_its_saved_model(
    run: Any, tiny_model: Any, prepared: Path, tmp_path: Path
) -> None:
    """Stage 2 rerun on a copy whose stage 1 is finished: stage 1's model is loaded from its
    directory (not retrained), and stage 2 ends where the uninterrupted run ended."""
    import shutil

    from behaviorlm.training.config import load_config
    from behaviorlm.training.stages import TrainingData, train

    copy = tmp_path / "resumed"
    shutil.copytree(run.adapters["stage2"].parent, copy)
    shutil.rmtree(copy / "stage2")
    stage1 = {f: (copy / "stage1" / f).read_bytes() for f in ("train_log.json", "manifest.json")}
    config = load_config("tiny", FULL)
    again = train(
        "behaviorlm", TrainingData.from_prepared(prepared), tiny_model, config, copy, resume=True
    )
    for name, content in stage1.items():  # stage 1 was loaded, not trained again
        assert (copy / "stage1" / name).read_bytes() == content, name
    want, got = _weights(run.adapters["stage2"]), _weights(again.adapters["stage2"])
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=0)


def test_a_checkpoint_holds_every_weight(tiny_model: Any, tmp_path: Path) -> None:
    from behaviorlm.training.checkpoint import load_checkpoint, save_checkpoint
    from behaviorlm.training.tuning import build_model

    model = build_model(tiny_model.path, "full", None, "float32", 0, torch.device("cpu"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.tensor([[1, 2, 3]])).logits.sum().backward()
    optimizer.step()  # a moment estimate per weight, to be restored too
    before = {k: v.clone() for k, v in model.state_dict().items()}
    moments = [optimizer.state[p]["exp_avg"].clone() for p in model.parameters()]
    path = tmp_path / "ck.pt"
    save_checkpoint(path, step=2, model=model, optimizer=optimizer, log=[])
    model(torch.tensor([[3, 2, 1]])).logits.sum().backward()
    optimizer.step()
    step, _ = load_checkpoint(path, model=model, optimizer=optimizer)
    assert step == 2
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    for param, moment in zip(model.parameters(), moments, strict=True):
        assert torch.equal(optimizer.state[param]["exp_avg"], moment)


def test_bf16_forward_keeps_fp32_master_weights(
    prepared: Path, tiny_model: Any, tmp_path: Path
) -> None:
    """dtype bfloat16: the linear layers compute in bf16 (autocast), the weights stay (and save)
    in fp32, and the KL term's reference runs under the same autocast (0 at the first step)."""
    from behaviorlm.training.config import load_config
    from behaviorlm.training.stages import TrainingData, train

    outputs: set[Any] = set()

    def record(module: Any, _: Any, output: Any) -> None:
        if isinstance(module, torch.nn.Linear):
            outputs.add(output.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        config = load_config("tiny", [*FULL, "dtype=bfloat16"])
        data = TrainingData.from_prepared(prepared)
        result = train("behaviorlm", data, tiny_model, config, tmp_path / "b")
    finally:
        hook.remove()
    assert outputs == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    log = json.loads((result.adapters["stage1"] / "train_log.json").read_text())
    assert all(np.isfinite(r["loss"]) and not r["skipped"] for r in log)
    assert log[0]["kl"] < 1e-6 < log[-1]["kl"]
    assert all(v.dtype == torch.float32 for v in _weights(result.adapters["stage2"]).values())


def test_full_tuning_needs_a_trained_head() -> None:
    from behaviorlm.errors import InputError
    from behaviorlm.training.config import load_config

    with pytest.raises(InputError, match=r"tuning='full'.*head.trained=true"):
        load_config("tiny", ["tuning=full"])
    with pytest.raises(InputError, match=r"tuning='partial'.*one of \['lora', 'full'\]"):
        load_config("tiny", ["tuning=partial", "head.trained=true"])


def test_the_service_serves_a_fully_tuned_adapter(
    run: Any, tiny_model: Any, tmp_path: Path
) -> None:
    """Over HTTP: /v1/models says tuning full; the predictions over the whole vocabulary sum
    to 1 (what the engine computes is checked against training above); a new behavior scores
    by its name."""
    import shutil

    from behaviorlm.service.engine_client import fully_tuned_adapters
    from tests.service.service_helpers import ServerThread, history, settings_for

    models = tmp_path / "models"
    shutil.copytree(run.adapters["stage2"], models / "full")
    settings = settings_for(models, tiny_model, default_adapter="full")
    assert fully_tuned_adapters(settings) == ["full"]
    server = ServerThread(settings).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            info = client.get("/v1/models").json()
            size = len(info["models"][0]["vocabulary"])
            body = {"history": history(6), "top_k": 5}
            r = client.post("/v1/predict", json=body)
            every = client.post("/v1/predict", json={**body, "top_k": size})
            known = info["models"][0]["vocabulary"][0]["name"]
            new = client.post(
                "/v1/predict",
                json={**body, "candidates": [known, "Night Market"], "allow_new_behaviors": True},
            )
    finally:
        server.stop()
    assert r.status_code == 200, r.text
    (model,) = info["models"]
    assert model["tuning"] == "full" and model["lora"] == {} and model["scoring_format"] == 4
    assert every.status_code == 200, every.text
    predictions = every.json()["predictions"]
    assert len(predictions) == size and len(r.json()["predictions"]) == 5
    assert sum(p["probability"] for p in predictions) == pytest.approx(1.0, abs=1e-5)
    # a behavior outside the vocabulary scores by its name (the tuned model's embedding rows)
    assert new.status_code == 200, new.text
    trained = {p["behavior"]: p["trained"] for p in new.json()["predictions"]}
    assert trained == {known: True, "Night Market": False}
