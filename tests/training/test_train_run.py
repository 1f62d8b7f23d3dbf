"""Full training runs on the tiny model and a small synthetic prepared dataset.

Real parts throughout: the data pipeline writes a prepared dataset, the trainer runs both
stages with peft LoRA on packed rows, difficulty reads every training target, and reloaded
adapters are scored by the TransformersEngine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from behaviorlm.manifest import MANIFEST_FILE, AdapterManifest
from behaviorlm.prompt import PieceEncoder, render_sample

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]
# The shared run: tiny preset with enough stage-1 steps for the kill/resume test to land inside.
RUN_OVERRIDES = ["stage1.steps=24", "checkpoint_every=4", "threads=1"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from behaviorlm.training.data.config import PrepareConfig
    from behaviorlm.training.data.pipeline import prepare_log
    from behaviorlm.training.data.synthetic import SYNTHETIC_COLUMNS, make_synthetic_log

    out = tmp_path_factory.mktemp("prepared") / "synth"
    log = make_synthetic_log(60, 3000, 40, seed=0)
    ds = prepare_log(
        log, out, PrepareConfig(history_len=4, anchor_share=0.04), name="synth", **SYNTHETIC_COLUMNS
    )
    assert ds.vocabulary.anchors and ds.vocabulary.tails
    return out


def _config(*extra: str) -> Any:
    from behaviorlm.training.config import load_config

    return load_config("tiny", [*RUN_OVERRIDES, *extra])


def _cli_run_args(prepared: Path, tiny_model: Any, out: Path) -> list[str]:
    """`behaviorlm.training.cli` arguments of the shared tiny run (for the subprocess tests)."""
    return [
        "--data",
        str(prepared),
        "--preset",
        "tiny",
        "--base-model",
        str(tiny_model.path),
        "--out",
        str(out),
        *RUN_OVERRIDES,
    ]


@pytest.fixture(scope="module")
def two_stage(prepared: Path, tiny_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from behaviorlm.training.stages import TrainingData, train

    out = tmp_path_factory.mktemp("runs") / "two-stage"
    return train("behaviorlm", TrainingData.from_prepared(prepared), tiny_model, _config(), out)


def _weights(adapter_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


def test_two_stage_run_writes_adapters_with_manifests(
    two_stage: Any, tiny_model: Any, smollm2_tokenizer: Any, prepared: Path
) -> None:
    out = two_stage.adapters["stage1"].parent
    assert list(two_stage.adapters) == ["stage1", "stage2"]
    for stage, path in two_stage.adapters.items():
        manifest = AdapterManifest.load(path)
        assert manifest.stage == stage and manifest.strategy == "behaviorlm"
        assert manifest.base_model == tiny_model.ref
        manifest.check_compatible(tiny_model.ref, smollm2_tokenizer)
        vocab = manifest.to_vocabulary()
        encoder = PieceEncoder(smollm2_tokenizer)
        assert manifest.label_tokens == [encoder.label_tokens(n) for n in vocab.names]
        assert manifest.history_events == 4
        assert manifest.metrics["steps"] == (24 if stage == "stage1" else 6)
        # every readout of a row trains: far more targets than rows per step
        assert manifest.metrics["targets"] >= 2 * manifest.metrics["rows"]
        assert (path / "config.yaml").exists() and (path / "loss.png").stat().st_size > 0
        # only LoRA matrices are saved
        keys = list(_weights(path))
        assert keys and all("lora_A" in k or "lora_B" in k for k in keys)
    assert not (out / "checkpoints").exists()
    s1 = json.loads((two_stage.adapters["stage1"] / "train_log.json").read_text())
    assert any(r["kl"] > 0 for r in s1)
    s2 = AdapterManifest.load(two_stage.adapters["stage2"])
    assert s2.data["subset"]["readouts_with_weight"] == s2.data["stage_readouts"]
    assert sum(s2.data["subset"]["hard"].values()) > 0
    s1m = AdapterManifest.load(two_stage.adapters["stage1"])
    assert s1m.data["stage_readouts"] < s2.data["stage_readouts"]  # anchors only


def test_difficulty_is_saved_for_every_training_target(two_stage: Any, prepared: Path) -> None:
    import pandas as pd

    from behaviorlm.training.data.dataset import PreparedDataset

    frame = pd.read_parquet(two_stage.adapters["stage1"].parent / "difficulty.parquet")
    assert len(frame) == PreparedDataset.load(prepared).num_samples("train")
    assert frame["index"].tolist() == list(range(len(frame)))
    assert ((frame["difficulty"] >= 0) & (frame["difficulty"] <= 1)).all()
    assert (frame["difficulty"] + frame["p_true"] - 1).abs().max() < 1e-9


def test_stage2_continues_stage1(two_stage: Any) -> None:
    s1, s2 = _weights(two_stage.adapters["stage1"]), _weights(two_stage.adapters["stage2"])
    assert s1.keys() == s2.keys()
    assert any(not torch.equal(s1[k], s2[k]) for k in s1)
    assert any(float(v.abs().max()) > 0 for k, v in s1.items() if "lora_B" in k)


def test_only_lora_weights_change(two_stage: Any, tiny_model: Any) -> None:
    from transformers import AutoModelForCausalLM

    fresh = AutoModelForCausalLM.from_pretrained(str(tiny_model.path), dtype=torch.float32)
    base = dict(two_stage.model.get_base_model().named_parameters())
    for name, param in fresh.named_parameters():
        key = name.replace(".weight", ".base_layer.weight") if name not in base else name
        trained = base[key] if key in base else base[name]
        assert torch.equal(param, trained), name
        assert not trained.requires_grad, name


def test_saved_adapter_reloads_to_identical_scores(
    two_stage: Any, tiny_model: Any, prepared: Path
) -> None:
    from behaviorlm.labels import LabelHead
    from behaviorlm.scoring import AdapterSpec, ScoreRequest
    from behaviorlm.scoring.readout import score_prompts
    from behaviorlm.scoring.transformers_engine import TransformersEngine
    from behaviorlm.training.data.dataset import PreparedDataset

    path = two_stage.adapters["stage2"]
    manifest = AdapterManifest.load(path)
    samples = list(PreparedDataset.load(prepared).samples("test")[:6])
    prompts = [render_sample(s) for s in samples]
    names = tuple(manifest.to_vocabulary().names)
    head = LabelHead.from_encoder(two_stage.encoder, names)
    ids = [two_stage.encoder.encode(p) for p in prompts]
    in_memory = score_prompts(two_stage.model, ids, [head] * len(ids), [1.0] * len(ids), 0)
    engine = TransformersEngine(tiny_model, dtype="float32")
    try:
        engine.load_adapter(AdapterSpec("s2", path, manifest))
        results = engine.score_batch([ScoreRequest(p, names, "s2") for p in prompts])
    finally:
        engine.close()
    for (probs, _), result in zip(in_memory, results, strict=True):
        assert result.behaviors == names
        assert abs(result.probs - probs).max() < 1e-6


def test_kl_weight_zero_and_a_logit_adjusted_stage2(
    prepared: Path, tiny_model: Any, tmp_path: Path
) -> None:
    from behaviorlm.training.stages import TrainingData, train

    result = train(
        "behaviorlm",
        TrainingData.from_prepared(prepared),
        tiny_model,
        _config("stage1.kl_weight=0", "stage1.steps=4", "stage2.logit_adjust_tau=1.0"),
        tmp_path / "kl0",
    )
    log = json.loads((result.adapters["stage1"] / "train_log.json").read_text())
    assert all(r["kl"] == 0 and r["loss"] == r["nll"] for r in log)
    stage1 = AdapterManifest.load(result.adapters["stage1"])
    stage2 = AdapterManifest.load(result.adapters["stage2"])
    assert stage1.calibration.trained_logit_adjust_tau == 0.0
    assert stage2.calibration.trained_logit_adjust_tau == 1.0
    assert stage2.training_config["settings"]["logit_adjust_tau"] == 1.0


@pytest.mark.parametrize("strategy", ["sft", "balanced"])
def test_baseline_strategies(
    strategy: str, prepared: Path, tiny_model: Any, tmp_path: Path
) -> None:
    import yaml

    from behaviorlm.dtypes import resolve_dtype_here
    from behaviorlm.training.stages import TrainingData, train

    data = TrainingData.from_prepared(prepared)
    config = _config("baseline.steps=4", "dtype=auto")
    result = train(strategy, data, tiny_model, config, tmp_path / strategy)
    assert list(result.adapters) == [strategy]
    # "auto" is made concrete for this machine before the run records its config
    saved = yaml.safe_load((tmp_path / strategy / "config.yaml").read_text())
    assert saved["dtype"] == resolve_dtype_here("auto") != "auto"
    manifest = AdapterManifest.load(result.adapters[strategy])
    assert manifest.stage == strategy and manifest.strategy == strategy
    assert manifest.data["stage_readouts"] == len(data.targets)  # weights > 0 everywhere
    if strategy == "balanced":
        assert max(manifest.data["subset"]["per_class"].values()) <= 6 + 1e-6


def test_epochs_set_the_steps(prepared: Path, tiny_model: Any, tmp_path: Path) -> None:
    """baseline.epochs=1 of sft trains every training target exactly once, in as many steps
    as the pass has batches; the manifest records the steps it made."""
    from behaviorlm.errors import InputError
    from behaviorlm.training.stages import TrainingData, train

    data = TrainingData.from_prepared(prepared)
    result = train("sft", data, tiny_model, _config("baseline.epochs=1"), tmp_path / "e1")
    manifest = AdapterManifest.load(result.adapters["sft"])
    settings = manifest.training_config["settings"]
    assert settings["epochs"] == 1 and settings["steps"] == manifest.metrics["steps"]
    assert settings["steps"] != 12  # not the preset's baseline.steps
    assert manifest.metrics["targets"] == len(data.targets)
    with pytest.raises(InputError, match=r"baseline.epochs=-1.*>= 0"):
        _config("baseline.epochs=-1")


def test_a_non_finite_step_is_skipped_and_a_run_of_them_stops_training(
    prepared: Path, tiny_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NaN loss (as a GPU attention kernel once produced) must not reach the weights."""
    from behaviorlm.errors import TrainingError
    from behaviorlm.training import trainer
    from behaviorlm.training.stages import TrainingData, train

    real_loss = trainer._loss
    bad_steps: set[int] = {2}
    calls = {"n": 0}

    def sometimes_nan(*args: Any) -> Any:
        calls["n"] += 1
        loss, nll, kl = real_loss(*args)
        if calls["n"] in bad_steps or "all" in bad_steps:
            loss = loss * float("nan")
        return loss, nll, kl

    monkeypatch.setattr(trainer, "_loss", sometimes_nan)
    data = TrainingData.from_prepared(prepared)
    result = train("sft", data, tiny_model, _config("baseline.steps=4"), tmp_path / "one")
    log = json.loads((result.adapters["sft"] / "train_log.json").read_text())
    assert [r["skipped"] for r in log] == [0.0, 1.0, 0.0, 0.0]
    assert AdapterManifest.load(result.adapters["sft"]).metrics["skipped_steps"] == 1
    from safetensors.torch import load_file

    weights = load_file(str(result.adapters["sft"] / "adapter_model.safetensors"))
    assert all(bool(torch.isfinite(w).all()) for w in weights.values())
    # readable by a service running as another user (the images' uid 10001)
    for saved in result.adapters["sft"].iterdir():
        assert saved.stat().st_mode & 0o044 == 0o044, saved.name

    bad_steps.add("all")  # type: ignore[arg-type]
    with pytest.raises(TrainingError, match="5 steps in a row"):
        train("sft", data, tiny_model, _config("baseline.steps=8"), tmp_path / "all")


def test_stage2_reruns_from_another_runs_stage1(
    two_stage: Any, prepared: Path, tiny_model: Any, tmp_path: Path
) -> None:
    """--stage1-from: retry stage 2 (here with anchor replay) without stage 1 or rescoring."""
    from safetensors.torch import load_file

    from behaviorlm.errors import InputError
    from behaviorlm.training.stages import TrainingData, reuse_stage1, train

    source = two_stage.adapters["stage1"].parent
    data = TrainingData.from_prepared(prepared)
    config = _config("subset.natural_fraction=0.5", "stage2.steps=3")
    out = tmp_path / "retry"
    reuse_stage1(source, out, config, data)
    result = train("behaviorlm", data, tiny_model, config, out, resume=True)
    ours = load_file(str(result.adapters["stage1"] / "adapter_model.safetensors"))
    theirs = load_file(str(two_stage.adapters["stage1"] / "adapter_model.safetensors"))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    stage2 = AdapterManifest.load(result.adapters["stage2"])
    assert stage2.data["subset"]["natural"] > 0
    assert json.loads((out / "run.json").read_text())["stage1_from"] == str(source)
    with pytest.raises(InputError, match=r"stage1 is"):
        reuse_stage1(source, tmp_path / "other", _config("stage1.steps=5"), data)


def test_difficulty_scoring_resumes_from_partial_scores(
    two_stage: Any, prepared: Path, tiny_model: Any, tmp_path: Path
) -> None:
    """A kill during scoring leaves difficulty.partial.npz: the restart keeps what it holds
    (planted values survive), reads only the missing targets, and ignores a file that was
    read with another stage-1 adapter."""
    import numpy as np
    import pandas as pd

    from behaviorlm.training.difficulty import PARTIAL_FILE, adapter_identity, save_partial
    from behaviorlm.training.stages import TrainingData, reuse_stage1, train

    source = two_stage.adapters["stage1"].parent
    truth = pd.read_parquet(source / "difficulty.parquet")["p_true"].to_numpy()
    data = TrainingData.from_prepared(prepared)
    config = _config("stage2.steps=1")
    planted = np.full(len(truth), 0.123456)
    missing = len(truth) // 2
    planted[missing] = np.nan

    def rescored(identity: str, name: str) -> np.ndarray:
        out = tmp_path / name
        reuse_stage1(source, out, config, data)
        (out / "difficulty.parquet").unlink()
        save_partial(out / PARTIAL_FILE, identity, planted)
        train("behaviorlm", data, tiny_model, config, out, resume=True)
        assert not (out / PARTIAL_FILE).exists()
        return pd.read_parquet(out / "difficulty.parquet")["p_true"].to_numpy()

    resumed = rescored(adapter_identity(source / "stage1" / "adapter_model.safetensors"), "resumed")
    kept = resumed == 0.123456
    # Only the batch holding the missing target is read again, and it reads true scores.
    assert 0 < (~kept).sum() < len(truth) // 2
    np.testing.assert_allclose(resumed[~kept], truth[~kept], atol=1e-6)
    other = rescored("0" * 64, "other-adapter")
    np.testing.assert_allclose(other, truth, atol=1e-6)


def test_a_run_saved_before_an_option_existed_is_reused(
    two_stage: Any, prepared: Path, tmp_path: Path
) -> None:
    """A config.yaml without an option added later (the run behaved as its default) is the
    same config: its stage 1 can be reused."""
    import shutil

    import yaml

    from behaviorlm.training.stages import TrainingData, reuse_stage1

    source = tmp_path / "old"
    shutil.copytree(two_stage.adapters["stage1"].parent, source)
    saved = yaml.safe_load((source / "config.yaml").read_text())
    for stage in ("stage1", "stage2", "baseline"):
        saved[stage].pop("logit_adjust_tau")
    (source / "config.yaml").write_text(yaml.safe_dump(saved))
    out = tmp_path / "new"
    reuse_stage1(
        source, out, _config("stage2.logit_adjust_tau=1.0"), TrainingData.from_prepared(prepared)
    )
    assert (out / "stage1" / MANIFEST_FILE).is_file()


def test_existing_run_needs_resume(two_stage: Any, prepared: Path, tiny_model: Any) -> None:
    from behaviorlm.errors import InputError
    from behaviorlm.training.stages import TrainingData, train

    out = two_stage.adapters["stage1"].parent
    with pytest.raises(InputError, match="--resume"):
        train("behaviorlm", TrainingData.from_prepared(prepared), tiny_model, _config(), out)
    with pytest.raises(InputError, match=r"differs .* in seed=5 \(saved: 0\)"):
        train(
            "behaviorlm",
            TrainingData.from_prepared(prepared),
            tiny_model,
            _config("seed=5"),
            out,
            resume=True,
        )


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(
    two_stage: Any, prepared: Path, tiny_model: Any, tmp_path: Path
) -> None:
    """SIGKILL after the first checkpoint, --resume, compare with the uninterrupted run."""
    from behaviorlm.training.stages import TrainingData, train

    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "behaviorlm.training.cli",
        "--strategy",
        "behaviorlm",
        *_cli_run_args(prepared, tiny_model, out),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    checkpoint = out / "checkpoints" / "stage1.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert checkpoint.exists() and not (out / "stage2" / MANIFEST_FILE).exists()

    result = train(
        "behaviorlm", TrainingData.from_prepared(prepared), tiny_model, _config(), out, resume=True
    )
    for stage in ("stage1", "stage2"):
        want, got = _weights(two_stage.adapters[stage]), _weights(result.adapters[stage])
        assert want.keys() == got.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_torchrun_two_processes_match_one(
    two_stage: Any, prepared: Path, tiny_model: Any, tmp_path: Path
) -> None:
    """DDP over gloo on CPU: 2 ranks split each global batch; same weights as 1 process."""
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [
        str(torchrun),
        "--nproc_per_node",
        "2",
        "-m",
        "behaviorlm.training.cli",
        *_cli_run_args(prepared, tiny_model, out),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=400)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    want, got = _weights(two_stage.adapters["stage1"]), _weights(out / "stage1")
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=0)
    assert (out / "stage2" / MANIFEST_FILE).exists()
