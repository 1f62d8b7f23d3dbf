"""Strategies: which stages run on which samples, and what each stage leaves on disk.

- ``behaviorlm``: stage 1 on anchor targets (with the KL knowledge-preservation term),
  difficulty scoring with the stage-1 adapter, stage 2 continuing the same adapter on a
  class-balanced, difficulty-aware subset of all behaviors.
- ``sft``: one stage on all samples, uniform.
- ``balanced``: one stage on the class-balanced subset, drawn at random (no difficulty).

Output: ``<out>/<stage>/`` per stage (peft adapter, ``manifest.json``, ``config.yaml``,
``train_log.json``, ``loss.png``), ``<out>/difficulty.parquet`` (+ ``difficulty.png``),
``<out>/config.yaml`` and ``<out>/run.json``. A finished stage is one whose manifest exists
(written last); ``resume`` skips finished stages and continues an unfinished one from its
checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from behaviorlm.base_model import BaseModel
from behaviorlm.errors import InputError
from behaviorlm.events import Sample
from behaviorlm.manifest import AdapterManifest
from behaviorlm.trie import AnswerTrie, encode_answer
from behaviorlm.vocabulary import Vocabulary
from training.batching import Example, draw_order, encode_examples, length_grouped_batches
from training.checkpoint import checkpoint_path
from training.config import StageSettings, Strategy, TrainConfig
from training.difficulty import DIFFICULTY_FILE, load_or_score_difficulty
from training.plots import plot_stage_log
from training.sampling import (
    SubsetReport,
    add_natural_replay,
    anchor_subset,
    balanced_subset,
)
from training.trainer import DistInfo, StageRun, build_lora_model, pick_device, run_stage

log = logging.getLogger(__name__)
RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
STAGE_SEEDS = {"stage1": 1, "stage2": 2, "sft": 3, "balanced": 4}


@dataclass
class TrainingData:
    """The training split and its vocabulary (from a prepared dataset, or built in code)."""

    vocabulary: Vocabulary
    samples: Sequence[Sample]
    targets: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.samples) != len(self.targets):
            raise InputError("training data: samples and targets differ in length")
        unknown = sorted({t for t in self.targets if t not in self.vocabulary})
        if unknown:
            raise InputError(
                f"training data: {len(unknown)} target(s) not in the vocabulary, e.g. "
                f"{unknown[:5]}; prepare the dataset again"
            )
        if not self.targets:
            raise InputError("training data: the train split has no samples")

    @classmethod
    def from_prepared(cls, root: Path | str) -> TrainingData:
        from training.data.dataset import PreparedDataset

        ds = PreparedDataset.load(root)
        info = {
            "path": str(Path(root).resolve()),
            "name": ds.name,
            "train_samples": ds.num_samples("train"),
            "prepare": ds.info,
        }
        return cls(ds.vocabulary, ds.samples("train"), ds.targets("train"), info)

    def take(self, indices: Sequence[int]) -> list[Sample]:
        take = getattr(self.samples, "take", None)
        if take is not None:
            return list(take(list(indices)))
        return [self.samples[i] for i in indices]


@dataclass
class RunContext:
    """What every stage of one run shares."""

    out: Path
    strategy: str
    run_name: str
    data: TrainingData
    base: BaseModel
    config: TrainConfig
    resume: bool
    tokenizer: Any
    model: Any
    codes: list[tuple[int, ...]]
    trie: AnswerTrie
    root_children: Any
    dist: DistInfo
    device: Any


@dataclass
class RunResult:
    adapters: dict[str, Path]  # stage name -> adapter directory, in training order
    model: Any  # the peft model holding the last stage's adapter (tests, benchmarks)
    tokenizer: Any
    trie: AnswerTrie


def train(
    strategy: Strategy,
    data: TrainingData,
    base: BaseModel,
    config: TrainConfig,
    out: Path,
    run_name: str | None = None,
    resume: bool = False,
) -> RunResult:
    """Run a strategy; returns the adapters written (and the trained model)."""
    ctx = _setup(strategy, data, base, config, out, run_name or out.name, resume)
    t0 = time.perf_counter()
    done: dict[str, Path] = {}
    targets = data.targets
    if strategy == "behaviorlm":
        done["stage1"] = _stage(
            ctx, "stage1", config.stage1, anchor_subset(targets, data.vocabulary), {}
        )
        difficulty = load_or_score_difficulty(
            ctx.out, ctx.model, ctx.tokenizer, data, ctx.trie, config, ctx.dist
        )
        subset, report = _balanced_with_replay(targets, config, difficulty)
        wanted = round(config.subset.hard_fraction * config.subset.per_class_max)
        short = [
            c
            for c, n in report.hard.items()
            if n < wanted and report.per_class[c] == config.subset.per_class_max
        ]
        if short:
            log.warning(
                "stage2: %d behaviors got fewer than %d hard samples (only that many "
                "were scored; raise difficulty.per_class / max_samples)",
                len(short),
                wanted,
            )
        done["stage2"] = _stage(ctx, "stage2", config.stage2, subset, report.to_json())
    elif strategy == "sft":
        done["sft"] = _stage(ctx, "sft", config.baseline, list(range(len(targets))), {})
    elif strategy == "balanced":
        subset, report = _balanced_with_replay(targets, config, None)
        done["balanced"] = _stage(ctx, "balanced", config.baseline, subset, report.to_json())
    else:
        raise InputError(f"--strategy {strategy}: unknown; use behaviorlm, sft or balanced")
    if ctx.dist.main:
        shutil.rmtree(ctx.out / "checkpoints", ignore_errors=True)
        log.info(
            "run %s finished in %.0f s: %s",
            ctx.run_name,
            time.perf_counter() - t0,
            ", ".join(str(p) for p in done.values()),
        )
    return RunResult(done, ctx.model, ctx.tokenizer, ctx.trie)


def _balanced_with_replay(
    targets: Sequence[str], config: TrainConfig, difficulty: dict[int, float] | None
) -> tuple[list[int], SubsetReport]:
    """The class-balanced subset (hardest-first when ``difficulty`` is given, else random)
    plus the natural-distribution replay: stage 2's samples, and the ``balanced`` strategy's."""
    settings = config.subset
    subset, report = balanced_subset(
        targets,
        settings.per_class_max,
        settings.hard_fraction if difficulty is not None else 0.0,
        difficulty,
        np.random.default_rng([config.seed, 20]),
    )
    rng = np.random.default_rng([config.seed, 21])
    subset = add_natural_replay(subset, len(targets), settings.natural_fraction, rng, report)
    return subset, report


def _setup(
    strategy: str,
    data: TrainingData,
    base: BaseModel,
    config: TrainConfig,
    out: Path,
    run_name: str,
    resume: bool,
) -> RunContext:
    import torch
    from transformers import AutoTokenizer

    if config.threads:
        torch.set_num_threads(config.threads)
    dist = DistInfo.from_env()
    run_info = {
        "strategy": strategy,
        "run_name": run_name,
        "base_model": base.ref.model_dump(),
        "data": data.info,
    }
    _check_out_dir(out, config, run_info, resume)
    dist.barrier()  # every rank has checked --out before rank 0 writes into it
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(config.to_yaml())
        if (out / RUN_FILE).exists():  # keep what an earlier start recorded (stage1_from)
            kept = json.loads((out / RUN_FILE).read_text()).get("stage1_from")
            if kept:
                run_info["stage1_from"] = kept
        (out / RUN_FILE).write_text(json.dumps(run_info, indent=1, default=str) + "\n")
    device = pick_device(dist)
    tokenizer = AutoTokenizer.from_pretrained(str(base.path))
    codes = [encode_answer(tokenizer, n) for n in data.vocabulary.names]
    trie = AnswerTrie.build(list(data.vocabulary.names), codes)
    model = build_lora_model(base.path, config.lora, config.dtype, config.seed, device)
    return RunContext(
        out=out,
        strategy=strategy,
        run_name=run_name,
        data=data,
        base=base,
        config=config,
        resume=resume,
        tokenizer=tokenizer,
        model=model,
        codes=codes,
        trie=trie,
        root_children=torch.tensor(trie.root_children, dtype=torch.long),
        dist=dist,
        device=device,
    )


def _check_out_dir(out: Path, config: TrainConfig, run_info: dict[str, Any], resume: bool) -> None:
    saved = out / CONFIG_FILE
    if not resume:
        if out.exists() and any(out.iterdir()):
            raise InputError(
                f"--out {out}: directory exists and is not empty; pass --resume to continue "
                "that run or choose another --out"
            )
        return
    if not saved.exists():
        return  # nothing to resume: a fresh run
    if saved.read_text() != config.to_yaml():
        raise InputError(
            f"--resume: {saved} differs from this run's config; resume with the same preset "
            "and overrides (or choose another --out)"
        )
    old = json.loads((out / RUN_FILE).read_text())
    for key in ("strategy", "base_model"):
        if old.get(key) != json.loads(json.dumps(run_info[key], default=str)):
            raise InputError(
                f"--resume: {out / RUN_FILE} has {key}={old.get(key)!r}, this run {run_info[key]!r}"
            )


def _stage(
    ctx: RunContext,
    name: str,
    settings: StageSettings,
    subset: Sequence[int],
    subset_report: dict[str, Any],
) -> Path:
    """Train one stage (or, on resume, load its finished adapter) and save its adapter."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    stage_dir = ctx.out / name
    if ctx.resume and (stage_dir / "manifest.json").exists():
        weights = load_file(str(stage_dir / "adapter_model.safetensors"))
        set_peft_model_state_dict(ctx.model, weights)
        log.info("%s: already finished in %s, loaded its adapter", name, stage_dir)
        return stage_dir
    if not subset:
        raise InputError(f"{name}: no training samples for this stage (e.g. no anchors)")
    rng = np.random.default_rng([ctx.config.seed, STAGE_SEEDS[name]])
    order = draw_order(subset, settings.steps * settings.batch_size, rng)
    examples = _encode(ctx, sorted(set(order.tolist())))
    lengths = {i: ex.length for i, ex in examples.items()}
    batches = length_grouped_batches(
        order, lengths, settings.batch_size, ctx.config.length_pool, rng
    )
    t0 = time.perf_counter()
    history = run_stage(
        ctx.model,
        StageRun(
            name,
            settings,
            batches,
            examples,
            checkpoint_path(ctx.out, name),
            ctx.config.seed + STAGE_SEEDS[name],
        ),
        ctx.config,
        ctx.root_children,
        _pad_id(ctx.tokenizer),
        ctx.dist,
        ctx.device,
        ctx.resume,
    )
    seconds = time.perf_counter() - t0
    if ctx.dist.main:
        _save_stage(ctx, name, stage_dir, settings, history, seconds, subset, subset_report)
    ctx.dist.barrier()
    return stage_dir


def _encode(ctx: RunContext, indices: list[int]) -> dict[int, Example]:
    names = ctx.data.vocabulary.names
    codes = dict(zip(names, ctx.codes, strict=True))
    examples: dict[int, Example] = {}
    chunk = 4096  # bounded memory: Samples are built lazily by the prepared dataset
    for start in range(0, len(indices), chunk):
        part = indices[start : start + chunk]
        encoded = encode_examples(
            ctx.tokenizer, ctx.data.take(part), codes, ctx.data.vocabulary.index
        )
        examples.update(zip(part, encoded, strict=True))
    return examples


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    return int(pad if pad is not None else tokenizer.eos_token_id)


def _save_stage(
    ctx: RunContext,
    name: str,
    stage_dir: Path,
    settings: StageSettings,
    history: list[dict[str, float]],
    seconds: float,
    subset: Sequence[int],
    subset_report: dict[str, Any],
) -> None:
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / "manifest.json").unlink(missing_ok=True)
    ctx.model.save_pretrained(str(stage_dir))
    (stage_dir / CONFIG_FILE).write_text(ctx.config.to_yaml())
    (stage_dir / "train_log.json").write_text(json.dumps(history) + "\n")
    plot_stage_log(history, stage_dir / "loss.png", f"{ctx.run_name} {name}")
    weights = (stage_dir / "adapter_model.safetensors").read_bytes()
    version = f"{name}-{hashlib.sha256(weights).hexdigest()[:12]}"
    metrics = stage_metrics(history, seconds)
    lora = ctx.config.lora
    manifest = AdapterManifest.for_vocabulary(
        ctx.data.vocabulary,
        ctx.codes,
        name=ctx.run_name,
        version=version,
        stage=name,
        strategy=ctx.strategy,
        base_model=ctx.base.ref,
        lora={
            "r": lora.r,
            "alpha": lora.alpha,
            "dropout": lora.dropout,
            "target_modules": list(lora.target_modules),
        },
        training_config={"stage": name, "settings": settings.__dict__, **ctx.config.to_dict()},
        metrics=metrics,
        data={**ctx.data.info, "stage_samples": len(subset), "subset": subset_report},
    )
    manifest.save(stage_dir)  # last: its presence marks the stage finished
    log.info("%s: saved %s (%s)", name, stage_dir, json.dumps(metrics))


def stage_metrics(history: list[dict[str, float]], seconds: float) -> dict[str, float]:
    """Loss at the start and end of the stage and the throughput (steps may be resumed)."""
    if not history:
        return {}
    k = max(1, min(20, len(history) // 5))
    # Skipped (non-finite) steps are counted, not averaged into the losses.
    mean = lambda rows, key: float(  # noqa: E731
        np.mean([r[key] for r in rows if not r.get("skipped")] or [math.nan])
    )
    samples = sum(r["samples"] for r in history)
    busy = sum(r["seconds"] for r in history)
    return {
        "steps": len(history),
        "train_nll_first": mean(history[:k], "nll"),
        "train_nll_last": mean(history[-k:], "nll"),
        "train_kl_last": mean(history[-k:], "kl"),
        "samples": samples,
        "wall_seconds": round(seconds, 1),
        "samples_per_second": samples / busy if busy else 0.0,
        "padding_fraction": sum(r["padding"] for r in history)
        / max(1, sum(r["tokens"] + r["padding"] for r in history)),
        "skipped_steps": int(sum(r.get("skipped", 0) for r in history)),
    }


# What stage 1 and the difficulty scores depend on: a run may reuse another's only if these
# agree (difficulty candidates are drawn among behaviors above subset.per_class_max).
STAGE1_KEYS: tuple[str, ...] = (
    "seed",
    "dtype",
    "lora",
    "stage1",
    "difficulty",
    "subset.per_class_max",
)


def reuse_stage1(
    source: Path,
    out: Path,
    config: TrainConfig,
    data: TrainingData,
    subset: Sequence[int] | None = None,
) -> None:
    """Start run ``out`` from the finished stage 1 (and difficulty scores) of run ``source``.

    Stage 2 can then be rerun with other stage-2 / subset settings without training stage 1 or
    rescoring; ``train(..., resume=True)`` on ``out`` picks both up. Refuses when anything
    stage 1 depends on differs, naming the first such key.

    ``subset``: ``data`` is the source's training split restricted to these (sorted) sample
    indices, with the same anchors (the few-shot experiment removes tail samples, which stage 1
    never sees): difficulty scores are renumbered and those of removed samples dropped.
    """
    if not (source / "stage1" / "manifest.json").exists():
        raise InputError(f"--stage1-from {source}: no finished stage 1 (stage1/manifest.json)")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"--out {out}: directory exists and is not empty; choose a new --out")
    theirs = yaml.safe_load((source / CONFIG_FILE).read_text())
    ours = config.to_dict()
    for key in STAGE1_KEYS:
        section, _, field = key.partition(".")
        a, b = theirs.get(section), ours.get(section)
        if field:
            a, b = (a or {}).get(field), (b or {}).get(field)
        if a != b:
            raise InputError(
                f"--stage1-from {source}: {key} is {a!r} there and {b!r} here; stage 1 and its "
                "difficulty scores can only be reused with the same value"
            )
    old = json.loads((source / RUN_FILE).read_text())
    if old.get("strategy") != "behaviorlm":
        raise InputError(f"--stage1-from {source}: a {old.get('strategy')!r} run has no stage 1")
    theirs_data = old.get("data", {})
    ours_data = data.info
    if subset is not None:  # the source saw the whole split
        ours_data = {**data.info, "train_samples": data.info.get("source_train_samples")}
    if any(theirs_data.get(k) != ours_data.get(k) for k in ("name", "train_samples")):
        raise InputError(
            f"--stage1-from {source}: trained on other data ({theirs_data.get('path')}, "
            f"{theirs_data.get('train_samples')} train samples)"
        )
    theirs_anchors = set(AdapterManifest.load(source / "stage1").anchors)
    if theirs_anchors != set(data.vocabulary.anchors):
        raise InputError(
            f"--stage1-from {source}: its stage 1 was tuned on other anchors "
            f"({sorted(theirs_anchors ^ set(data.vocabulary.anchors))[:5]} differ)"
        )
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source / "stage1", out / "stage1")
    if (source / DIFFICULTY_FILE).exists():
        _copy_difficulty(source / DIFFICULTY_FILE, out / DIFFICULTY_FILE, subset)
    if (source / "difficulty.png").exists():
        shutil.copy2(source / "difficulty.png", out / "difficulty.png")
    (out / CONFIG_FILE).write_text(config.to_yaml())
    (out / RUN_FILE).write_text(json.dumps({**old, "stage1_from": str(source)}, indent=1) + "\n")
    log.info("stage 1 and difficulty reused from %s", source)


def _copy_difficulty(source: Path, dest: Path, subset: Sequence[int] | None) -> None:
    import pandas as pd

    if subset is None:
        shutil.copy2(source, dest)
        return
    frame = pd.read_parquet(source)
    position = {int(i): n for n, i in enumerate(subset)}
    keep = frame["index"].astype(int).isin(position)
    frame = frame[keep].copy()
    frame["index"] = [position[int(i)] for i in frame["index"]]
    frame.to_parquet(dest, index=False)
    log.info("difficulty: %d scores kept, %d of removed samples dropped", keep.sum(), (~keep).sum())
