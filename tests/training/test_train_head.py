"""Training with the trained behavior head (head.trained, repeat features): both stages train
it with the LoRA weights, it is saved with each adapter and the engine serves exactly what
training computed; a killed run resumes with the head's state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from behaviorlm.labels import HEAD_SCORING_FORMAT
from behaviorlm.manifest import AdapterManifest
from behaviorlm.repeats import FEATURES

torch = pytest.importorskip("torch")

HEAD = ["head.trained=true", "head.repeat_window=8", "head.lr=0.05", "threads=1"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from behaviorlm.training.data.config import PrepareConfig
    from behaviorlm.training.data.pipeline import prepare_log
    from behaviorlm.training.data.synthetic import SYNTHETIC_COLUMNS, make_synthetic_log

    out = tmp_path_factory.mktemp("prepared") / "synth"
    log = make_synthetic_log(40, 2000, 30, seed=1)
    prepare_log(
        log, out, PrepareConfig(history_len=4, anchor_share=0.04), name="synth", **SYNTHETIC_COLUMNS
    )
    return out


@pytest.fixture(scope="module")
def run(prepared: Path, tiny_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from behaviorlm.training.config import load_config
    from behaviorlm.training.stages import TrainingData, train

    out = tmp_path_factory.mktemp("runs") / "head"
    config = load_config("tiny", HEAD)
    return train("behaviorlm", TrainingData.from_prepared(prepared), tiny_model, config, out)


def test_both_stages_save_a_trained_head(run: Any, tiny_model: Any) -> None:
    from behaviorlm.head import BehaviorHead

    heads = {}
    for stage, path in run.adapters.items():
        manifest = AdapterManifest.load(path)
        manifest.check_compatible(tiny_model.ref)
        assert manifest.scoring_format == HEAD_SCORING_FORMAT
        assert manifest.head is not None and manifest.head.features == list(FEATURES)
        assert manifest.head.repeat_window == 8
        names = [e.name for e in manifest.vocabulary]
        heads[stage] = BehaviorHead.load(path, manifest.head, names)
    s1, s2 = heads["stage1"], heads["stage2"]
    assert not np.allclose(s1.weight, s2.weight)  # stage 2 goes on training it
    assert np.abs(s2.feature_weights).max() > 0  # the repeat weights learned something
    # the version names the head too: a new head is a new version
    assert AdapterManifest.load(run.adapters["stage2"]).version.startswith("stage2-")


def test_served_scores_equal_training_scores(run: Any, tiny_model: Any, prepared: Path) -> None:
    """The engine's probabilities for a training target = softmax of the training loss's
    scores at the same readout (a row's first readout sees exactly the served prompt)."""
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
    ds = PreparedDataset.load(prepared)
    names = tuple(data.vocabulary.names)
    rows = pack(run.encoder, data.table, data.readouts, 12)
    feats = readout_features(data.table, data.readouts, data.vocabulary, 8, data.history_len)
    label = LabelHead.from_encoder(run.encoder, names)
    tensors = HeadTensors.of(run.model, label, "cpu", data.vocabulary.counts, True, feats)
    assert tensors.trained is not None
    tensors.trained.restore(BehaviorHead.load(path, manifest.head, list(names)))
    picked = list(range(5))
    firsts = [int(rows.readouts[r][0]) for r in picked]
    with torch.no_grad():
        batch = collate(rows, picked, data.readouts.labels, None, 0)
        scores = readout_scores(run.model.eval(), batch, tensors)
    first_of_row = {int(rows.readouts[r][0]): k for k, r in enumerate(picked)}
    position = {int(i): n for n, i in enumerate(batch.readout_index.tolist())}
    samples = ds.samples("train")
    engine = TransformersEngine(tiny_model, dtype="float32")
    try:
        engine.load_adapter(AdapterSpec("s2", path, manifest))
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
        served = engine.score_batch(requests)
    finally:
        engine.close()
    assert len(first_of_row) == len(firsts)
    for i, result in zip(firsts, served, strict=True):
        expected = torch.softmax(scores[position[i]].double(), dim=-1).numpy()
        np.testing.assert_allclose(result.probs, expected, atol=1e-5)


def test_resume_restores_the_head(
    run: Any, tiny_model: Any, prepared: Path, tmp_path: Path
) -> None:
    """Stage 2 resumed after a finished stage 1 starts from stage 1's saved head: it ends
    where the uninterrupted run ended."""
    import shutil

    from behaviorlm.head import BehaviorHead
    from behaviorlm.training.config import load_config
    from behaviorlm.training.stages import TrainingData, train

    source = run.adapters["stage2"].parent
    copy = tmp_path / "resumed"
    shutil.copytree(source, copy)
    shutil.rmtree(copy / "stage2")
    config = load_config("tiny", HEAD)
    again = train(
        "behaviorlm", TrainingData.from_prepared(prepared), tiny_model, config, copy, resume=True
    )
    heads = []
    for path in (run.adapters["stage2"], again.adapters["stage2"]):
        manifest = AdapterManifest.load(path)
        heads.append(BehaviorHead.load(path, manifest.head, [e.name for e in manifest.vocabulary]))
    np.testing.assert_allclose(heads[0].weight, heads[1].weight, atol=1e-5)
    np.testing.assert_allclose(heads[0].feature_weights, heads[1].feature_weights, atol=1e-5)


def test_checkpoint_holds_the_head(tmp_path: Path) -> None:
    from behaviorlm.training.checkpoint import load_checkpoint, save_checkpoint
    from behaviorlm.training.losses import TrainedHead

    head = TrainedHead(np.ones((3, 2), np.float32), np.zeros(3, np.float32), 2, "cpu")
    optimizer = torch.optim.AdamW(head.parameters(), lr=0.1)
    path = tmp_path / "ck.pt"
    model = _peft_tiny()
    save_checkpoint(path, step=3, model=model, optimizer=optimizer, log=[], head=head)
    with torch.no_grad():
        head.weight.add_(1.0)
        head.feature_weights.add_(2.0)
    step, _ = load_checkpoint(path, model=model, optimizer=optimizer, head=head)
    assert step == 3
    assert torch.equal(head.weight, torch.ones(3, 2)) and not head.feature_weights.any()
    with pytest.raises(RuntimeError, match="trained behavior head"):
        load_checkpoint(path, model=model, optimizer=optimizer, head=None)


def _peft_tiny() -> Any:
    from peft import LoraConfig, get_peft_model

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q_proj = torch.nn.Linear(2, 2)

    return get_peft_model(Tiny(), LoraConfig(r=1, target_modules=["q_proj"]))


def test_repeat_window_needs_a_trained_head() -> None:
    from behaviorlm.errors import InputError
    from behaviorlm.training.config import load_config

    with pytest.raises(InputError, match=r"head\.repeat_window.*needs head\.trained=true"):
        load_config("tiny", ["head.repeat_window=5"])


def test_feature_lr_moves_the_repeat_weights_further(
    prepared: Path, tiny_model: Any, tmp_path: Path
) -> None:
    """head.feature_lr trains the repeat-feature weights at their own rate (the head screen:
    at the stage's lr they barely leave 0), and leaves the behavior rows at head.lr."""
    from behaviorlm.head import BehaviorHead
    from behaviorlm.training.config import load_config
    from behaviorlm.training.stages import TrainingData, train

    base = ["head.trained=true", "head.repeat_window=8", "threads=1", "baseline.steps=6"]
    moved = []
    for name, extra in (("plain", []), ("fast", ["head.feature_lr=0.5"])):
        config = load_config("tiny", base + extra)
        result = train(
            "sft", TrainingData.from_prepared(prepared), tiny_model, config, tmp_path / name
        )
        manifest = AdapterManifest.load(result.adapters["sft"])
        head = BehaviorHead.load(
            result.adapters["sft"], manifest.head, [e.name for e in manifest.vocabulary]
        )
        moved.append(float(np.abs(head.feature_weights).max()))
        assert manifest.training_config["head"]["feature_lr"] == (0.5 if extra else 0.0)
    assert moved[1] > 5 * moved[0] > 0


def test_feature_lr_needs_repeat_features() -> None:
    from behaviorlm.errors import InputError
    from behaviorlm.training.config import load_config

    with pytest.raises(InputError, match=r"head\.feature_lr.*needs head\.repeat_window"):
        load_config("tiny", ["head.trained=true", "head.feature_lr=0.1"])
