"""Strategies: which stages run on which readouts, and what each stage leaves on disk.

Every strategy trains on the same packed rows of the train split (``packing.py``: one user's
consecutive events per row, every target a readout); a stage is a weight per readout
(``sampling.py``):

- ``behaviorlm``: stage 1 on anchor-target readouts (with the KL knowledge-preservation term),
  difficulty of EVERY training target with the stage-1 adapter (one pass), stage 2 continuing
  the same adapter on a class-balanced, difficulty-aware weighting of all behaviors (+ replay).
- ``sft``: one stage, every readout weight 1.
- ``balanced``: one stage on the class-balanced weighting without difficulty (+ replay).

Output: ``<out>/<stage>/`` per stage (peft adapter or the fully tuned model, ``manifest.json``,
``config.yaml``, ``train_log.json``, ``loss.png``), ``<out>/difficulty.parquet``
(+ ``difficulty.png``), ``<out>/config.yaml`` and ``<out>/run.json``. A finished stage is one
whose manifest exists (written last); ``resume`` skips finished stages and continues an
unfinished one from its checkpoint.
"""

from __future__ import annotations

import dataclasses
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
from behaviorlm.head import BehaviorHead
from behaviorlm.labels import HEAD_SCORING_FORMAT, SCORING_FORMAT, LabelHead
from behaviorlm.manifest import MANIFEST_FILE, AdapterManifest, Calibration
from behaviorlm.prompt import PieceEncoder
from behaviorlm.training.batching import plan_batches, plan_passes
from behaviorlm.training.checkpoint import checkpoint_path
from behaviorlm.training.config import (
    StageSettings,
    Strategy,
    TrainConfig,
    config_differences,
    config_from_dict,
)
from behaviorlm.training.data.dataset import EventTable
from behaviorlm.training.difficulty import (
    DIFFICULTY_FILE,
    PARTIAL_FILE,
    adapter_identity,
    load_difficulty,
    save_difficulty,
    score_difficulty,
)
from behaviorlm.training.features import readout_features
from behaviorlm.training.losses import HeadTensors
from behaviorlm.training.packing import PackedRows, Readouts, describe, pack
from behaviorlm.training.plots import plot_stage_log
from behaviorlm.training.sampling import SubsetReport, anchor_weights, balanced_weights
from behaviorlm.training.trainer import DistInfo, StageRun, pick_device, run_stage
from behaviorlm.training.tuning import build_model, load_weights, save_weights, weights_file
from behaviorlm.vocabulary import Vocabulary

log = logging.getLogger(__name__)
RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
STAGE_SEEDS = {"stage1": 1, "stage2": 2, "sft": 3, "balanced": 4}
FULL_LR_WARN = 3e-4  # above this a full-tuning lr is a LoRA one (see TrainConfig.tuning)


@dataclass
class TrainingData:
    """The training targets of a prepared dataset: its events, the train split's targets as
    readouts (vocabulary indices) and the vocabulary."""

    vocabulary: Vocabulary
    table: EventTable
    readouts: Readouts
    history_len: int
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.readouts) == 0:
            raise InputError("training data: the train split has no samples")
        if int(self.readouts.labels.max()) >= len(self.vocabulary):
            raise InputError("training data: a target is not in the vocabulary; prepare again")

    @classmethod
    def from_prepared(cls, root: Path | str) -> TrainingData:
        from behaviorlm.training.data.dataset import PreparedDataset

        ds = PreparedDataset.load(root)
        rows, starts, targets = ds.split_arrays("train")
        unknown = sorted({str(t) for t in targets} - set(ds.vocabulary.names))
        if unknown:
            raise InputError(
                f"{root}: {len(unknown)} train target(s) not in the vocabulary, e.g. "
                f"{unknown[:5]}; prepare the dataset again"
            )
        labels = np.asarray([ds.vocabulary.index[str(t)] for t in targets], dtype=np.int64)
        info = {
            "path": str(Path(root).resolve()),
            "name": ds.name,
            "train_samples": len(labels),
            "prepare": ds.info,
        }
        return cls(ds.vocabulary, ds.table, Readouts(rows, starts, labels), ds.history_len, info)

    @property
    def targets(self) -> list[str]:
        names = self.vocabulary.names
        return [names[i] for i in self.readouts.labels.tolist()]

    def subset(self, indices: Sequence[int], vocabulary: Vocabulary, **info: Any) -> TrainingData:
        """These targets only (the others stay in the rows as history), relabelled for
        ``vocabulary`` (which must hold every kept target); ``info`` is added to the info."""
        kept = self.readouts.take(indices)
        names = np.asarray(self.vocabulary.names, dtype=object)[kept.labels]
        labels = np.asarray([vocabulary.index[str(n)] for n in names], dtype=np.int64)
        return TrainingData(
            vocabulary,
            self.table,
            Readouts(kept.rows, kept.starts, labels),
            self.history_len,
            {**self.info, "train_samples": len(labels), **info},
        )


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
    dist: DistInfo
    device: Any
    model: Any
    encoder: PieceEncoder
    rows: PackedRows
    head: HeadTensors


@dataclass
class RunResult:
    adapters: dict[str, Path]  # stage name -> adapter directory, in training order
    model: Any  # the trained model after the last stage (peft, or the full model; tests)
    encoder: PieceEncoder
    rows: dict[str, Any]  # sizes of the packed rows


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
    config = config.with_dtype_resolved()
    ctx = _setup(strategy, data, base, config, out, run_name or out.name, resume)
    t0 = time.perf_counter()
    done: dict[str, Path] = {}
    labels = data.readouts.labels
    if strategy == "behaviorlm":
        done["stage1"] = _stage(
            ctx, "stage1", config.stage1, anchor_weights(labels, data.vocabulary), None
        )
        weights, report = _balanced(ctx, _difficulty(ctx))
        done["stage2"] = _stage(ctx, "stage2", config.stage2, weights, report)
    elif strategy == "sft":
        done["sft"] = _stage(ctx, "sft", config.baseline, np.ones(len(labels)), None)
    elif strategy == "balanced":
        weights, report = _balanced(ctx, None)
        done["balanced"] = _stage(ctx, "balanced", config.baseline, weights, report)
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
    return RunResult(done, ctx.model, ctx.encoder, describe(ctx.rows))


def _balanced(ctx: RunContext, difficulty: np.ndarray | None) -> tuple[np.ndarray, SubsetReport]:
    """The class-balanced weighting (hardest-first when ``difficulty`` is given, else even)
    plus natural replay: stage 2's readout weights, and the ``balanced`` strategy's."""
    settings = ctx.config.subset
    return balanced_weights(
        ctx.data.readouts.labels,
        ctx.data.vocabulary.names,
        settings.per_class_max,
        settings.hard_fraction if difficulty is not None else 0.0,
        difficulty,
        settings.natural_fraction,
    )


def _difficulty(ctx: RunContext) -> np.ndarray:
    """Difficulty of every training target under the stage-1 adapter (saved, reused)."""
    path = ctx.out / DIFFICULTY_FILE
    n = len(ctx.data.readouts)
    if path.exists():
        return load_difficulty(path, n)
    log.info("difficulty: scoring all %d training targets with the stage-1 adapter", n)
    # Every rank scores the rows itself: same result, no gather needed.
    frame = score_difficulty(
        ctx.model,
        ctx.rows,
        ctx.data.readouts.labels,
        ctx.head,
        ctx.data.vocabulary,
        ctx.config.difficulty.batch_tokens,
        _pad_id(ctx.encoder),
        ctx.device,
        # Only the main rank keeps partial scores (every rank reads the same ones).
        partial=ctx.out / PARTIAL_FILE if ctx.dist.main else None,
        identity=adapter_identity(weights_file(ctx.out / "stage1", ctx.config.tuning)),
    )
    if ctx.dist.main:
        save_difficulty(frame, path, ctx.data.vocabulary)
        (ctx.out / PARTIAL_FILE).unlink(missing_ok=True)
    ctx.dist.barrier()
    return frame["difficulty"].to_numpy(dtype=np.float64)


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
    device = pick_device(dist)
    encoder = PieceEncoder(AutoTokenizer.from_pretrained(str(base.path)))
    started = time.perf_counter()
    rows = pack(encoder, data.table, data.readouts, config.chunk_events)
    sizes = describe(rows)
    log.info("packed rows: %s (%.1f s)", json.dumps(sizes), time.perf_counter() - started)
    if dist.main:
        run_info["rows"] = sizes
        (out / RUN_FILE).write_text(json.dumps(run_info, indent=1, default=str) + "\n")
    head = LabelHead.from_encoder(encoder, data.vocabulary.names)
    model = build_model(
        base.path,
        config.tuning,
        config.lora,
        config.dtype,
        config.seed,
        device,
        reference=any(s.kl_weight > 0 for s in _stage_settings(strategy, config)),
    )
    if config.tuning == "full":
        _warn_full_lr(strategy, config)
    features = None
    if config.head.trained and config.head.repeat_window:
        features = readout_features(
            data.table, data.readouts, data.vocabulary, config.head.repeat_window, data.history_len
        )
    return RunContext(
        out=out,
        strategy=strategy,
        run_name=run_name,
        data=data,
        base=base,
        config=config,
        resume=resume,
        dist=dist,
        device=device,
        model=model,
        encoder=encoder,
        rows=rows,
        head=HeadTensors.of(
            model, head, device, data.vocabulary.counts, config.head.trained, features
        ),
    )


def _stage_settings(strategy: str, config: TrainConfig) -> list[StageSettings]:
    if strategy == "behaviorlm":
        return [config.stage1, config.stage2]
    return [config.baseline]


def _warn_full_lr(strategy: str, config: TrainConfig) -> None:
    """Full tuning at a LoRA rate moves a 135M model's weights ~10x too far per step."""
    high = [s.lr for s in _stage_settings(strategy, config) if s.lr > FULL_LR_WARN]
    if high:
        log.warning(
            "tuning=full with lr %s: the presets' rates are LoRA's; full tuning usually takes "
            "about a tenth (e.g. baseline.lr=1e-4)",
            ", ".join(f"{lr:g}" for lr in high),
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
    differences = config_differences(_saved_config(saved), config.to_dict())
    if differences:
        raise InputError(
            f"--resume: {saved} differs from this run's config in {', '.join(differences)}; "
            "resume with the same preset and overrides (pass the saved values as key=value) "
            "or choose another --out"
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
    weights: np.ndarray,
    report: SubsetReport | None,
) -> Path:
    """Train one stage (or, on resume, load its finished adapter) and save its adapter."""
    stage_dir = ctx.out / name
    if ctx.resume and (stage_dir / MANIFEST_FILE).exists():
        load_weights(ctx.model, stage_dir)
        manifest = AdapterManifest.load(stage_dir)
        if ctx.head.trained is not None and manifest.head is not None:
            ctx.head.trained.restore(
                BehaviorHead.load(stage_dir, manifest.head, ctx.data.vocabulary.names)
            )
        log.info("%s: already finished in %s, loaded its adapter", name, stage_dir)
        return stage_dir
    eligible, batches, settings = _plan_stage(ctx, name, settings, weights)
    t0 = time.perf_counter()
    history = run_stage(
        ctx.model,
        StageRun(
            name=name,
            settings=settings,
            batches=batches,
            rows=ctx.rows,
            labels=ctx.data.readouts.labels,
            weights=weights,
            head=ctx.head,
            checkpoint=checkpoint_path(ctx.out, name),
            seed=ctx.config.seed + STAGE_SEEDS[name],
            pad_id=_pad_id(ctx.encoder),
        ),
        ctx.config,
        ctx.dist,
        ctx.device,
        ctx.resume,
    )
    seconds = time.perf_counter() - t0
    if ctx.dist.main:
        selection = {
            "stage_readouts": int((weights > 0).sum()),
            "stage_rows": len(eligible),
            "subset": report.to_json() if report is not None else {},
        }
        _save_stage(ctx, name, stage_dir, settings, history, seconds, selection)
    ctx.dist.barrier()
    return stage_dir


def _plan_stage(
    ctx: RunContext, name: str, settings: StageSettings, weights: np.ndarray
) -> tuple[np.ndarray, list[list[int]], StageSettings]:
    """The rows this stage can read (those with a readout of weight > 0), its batches and its
    settings with ``steps`` made concrete (``epochs`` > 0: the batches of that many passes)."""
    eligible = np.asarray(
        [r for r, idx in enumerate(ctx.rows.readouts) if (weights[idx] > 0).any()], np.int64
    )
    if len(eligible) == 0:
        raise InputError(f"{name}: no training targets for this stage (e.g. no anchors)")
    rng = np.random.default_rng([ctx.config.seed, STAGE_SEEDS[name]])
    pool = ctx.config.length_pool
    if settings.epochs > 0:
        batches = plan_passes(
            ctx.rows.lengths, eligible, settings.batch_tokens, pool, settings.epochs, rng
        )
        log.info(
            "%s: %g epochs over %d rows = %d steps",
            name,
            settings.epochs,
            len(eligible),
            len(batches),
        )
        return eligible, batches, dataclasses.replace(settings, steps=len(batches))
    batches = plan_batches(
        ctx.rows.lengths, eligible, settings.batch_tokens, pool, settings.steps, rng
    )
    return eligible, batches, settings


def _pad_id(encoder: PieceEncoder) -> int:
    tokenizer: Any = encoder.tokenizer
    pad = tokenizer.pad_token_id
    return int(pad if pad is not None else tokenizer.eos_token_id)


def _save_stage(
    ctx: RunContext,
    name: str,
    stage_dir: Path,
    settings: StageSettings,
    history: list[dict[str, float]],
    seconds: float,
    selection: dict[str, Any],
) -> None:
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / MANIFEST_FILE).unlink(missing_ok=True)
    weights = save_weights(ctx.model, stage_dir)
    # safetensors writes the weights owner-only (0600): a service running as another user
    # (the images' uid 10001) could not read them. An adapter is meant to be shipped.
    for saved in stage_dir.iterdir():
        saved.chmod(0o644)
    (stage_dir / CONFIG_FILE).write_text(ctx.config.to_yaml())
    (stage_dir / "train_log.json").write_text(json.dumps(history) + "\n")
    plot_stage_log(history, stage_dir / "loss.png", f"{ctx.run_name} {name}")
    digest = hashlib.sha256()
    with open(weights, "rb") as f:  # streamed: a fully tuned model is ~540 MB
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    head_info = None
    if ctx.head.trained is not None:
        exported = ctx.head.trained.export(ctx.data.vocabulary.names, ctx.config.head.repeat_window)
        head_info = exported.save(stage_dir)
        digest.update(head_info.sha256.encode())
    version = f"{name}-{digest.hexdigest()[:12]}"
    metrics = stage_metrics(history, seconds)
    lora = ctx.config.lora
    vocab = ctx.data.vocabulary
    manifest = AdapterManifest.for_vocabulary(
        vocab,
        [ctx.encoder.label_tokens(n) for n in vocab.names],
        name=ctx.run_name,
        version=version,
        stage=name,
        strategy=ctx.strategy,
        base_model=ctx.base.ref,
        history_events=ctx.data.history_len,
        tuning=ctx.config.tuning,
        lora={
            "r": lora.r,
            "alpha": lora.alpha,
            "dropout": lora.dropout,
            "target_modules": list(lora.target_modules),
        }
        if ctx.config.tuning == "lora"
        else {},
        training_config={"stage": name, "settings": settings.__dict__, **ctx.config.to_dict()},
        calibration=Calibration(trained_logit_adjust_tau=settings.logit_adjust_tau),
        head=head_info,
        scoring_format=HEAD_SCORING_FORMAT if head_info is not None else SCORING_FORMAT,
        metrics=metrics,
        data={**ctx.data.info, "rows": describe(ctx.rows), **selection},
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
    readouts = sum(r["readouts"] for r in history)
    busy = sum(r["seconds"] for r in history)
    return {
        "steps": len(history),
        "train_nll_first": mean(history[:k], "nll"),
        "train_nll_last": mean(history[-k:], "nll"),
        "train_kl_last": mean(history[-k:], "kl"),
        "targets": readouts,
        "weighted_targets": round(sum(r["weighted_targets"] for r in history), 1),
        "rows": sum(r["rows"] for r in history),
        "wall_seconds": round(seconds, 1),
        "targets_per_second": readouts / busy if busy else 0.0,
        "tokens_per_second": sum(r["tokens"] for r in history) / busy if busy else 0.0,
        "padding_fraction": sum(r["padding"] for r in history)
        / max(1, sum(r["tokens"] + r["padding"] for r in history)),
        "skipped_steps": int(sum(r.get("skipped", 0) for r in history)),
    }


# What stage 1 and the difficulty scores depend on: a run may reuse another's only if these
# agree (the rows and their schedule depend on chunk_events and length_pool).
STAGE1_KEYS: tuple[str, ...] = (
    "seed",
    "dtype",
    "tuning",
    "lora",
    "head",
    "stage1",
    "difficulty",
    "chunk_events",
    "length_pool",
)


def reuse_stage1(
    source: Path,
    out: Path,
    config: TrainConfig,
    data: TrainingData,
    subset: Sequence[int] | None = None,
    source_samples: int | None = None,
) -> None:
    """Start run ``out`` from the finished stage 1 (and difficulty scores) of run ``source``.

    Stage 2 can then be rerun with other stage-2 / subset settings without training stage 1 or
    rescoring; ``train(..., resume=True)`` on ``out`` picks both up. Refuses when anything
    stage 1 depends on differs, naming the first such key.

    ``subset``: ``data`` is the source's training split (``source_samples`` targets)
    restricted to these (sorted) target indices, with the same anchors (the few-shot experiment
    removes tail targets, which stage 1 never trains on): difficulty scores are renumbered and
    those of removed targets dropped.
    """
    old = _check_reusable(source, out, config, data, subset, source_samples)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source / "stage1", out / "stage1")
    if (source / DIFFICULTY_FILE).exists():
        _copy_difficulty(source / DIFFICULTY_FILE, out / DIFFICULTY_FILE, subset)
    if (source / "difficulty.png").exists():
        shutil.copy2(source / "difficulty.png", out / "difficulty.png")
    (out / CONFIG_FILE).write_text(config.to_yaml())
    (out / RUN_FILE).write_text(json.dumps({**old, "stage1_from": str(source)}, indent=1) + "\n")
    log.info("stage 1 and difficulty reused from %s", source)


def _saved_config(path: Path) -> dict[str, Any]:
    """A run's saved config with the options added since filled in with their defaults (the
    run behaved as the default does), so an older run can be resumed or reused."""
    try:
        return config_from_dict(yaml.safe_load(path.read_text()) or {}).to_dict()
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc


def _check_reusable(
    source: Path,
    out: Path,
    config: TrainConfig,
    data: TrainingData,
    subset: Sequence[int] | None,
    source_samples: int | None,
) -> dict[str, Any]:
    """The source run's run.json, once everything stage 1 depends on is checked to match."""
    if subset is not None and source_samples is None:
        raise ValueError("reuse_stage1: a subset needs source_samples (the full split's size)")
    if not (source / "stage1" / MANIFEST_FILE).exists():
        raise InputError(f"--stage1-from {source}: no finished stage 1 (stage1/manifest.json)")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"--out {out}: directory exists and is not empty; choose a new --out")
    theirs = _saved_config(source / CONFIG_FILE)
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
        ours_data = {**data.info, "train_samples": source_samples}
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
    return dict(old)


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
