"""Training configuration: frozen dataclasses from a YAML preset plus ``key=value`` overrides.

A preset (``presets/<name>.yaml`` beside this module) or any YAML file gives the values;
command-line
overrides use dotted keys (``stage1.steps=100``, ``lora.target_modules=[q_proj,v_proj]``) and
YAML syntax for values. Every value is type-checked and range-checked on creation, and an error
names the key (as a flag) and the value. The resolved config is saved with every adapter.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from behaviorlm.dtypes import DtypeChoice
from behaviorlm.errors import InputError
from behaviorlm.options import option
from behaviorlm.training.tuning import TUNINGS, Tuning

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
Strategy = Literal["behaviorlm", "sft", "balanced"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)


def _fail(key: str, value: Any, why: str) -> InputError:
    return InputError(f"config '{key}={value!r}': {why}")


@dataclass(frozen=True)
class LoraSettings:
    """The LoRA adapter (peft). Embeddings and lm_head are never trained, tokens never added."""

    r: int = option(8, help="rank of the update matrices")
    alpha: int = option(16, help="scaling numerator (update scaled by alpha / r)")
    dropout: float = option(0.05, help="dropout on the LoRA input")
    target_modules: tuple[str, ...] = option(
        ("q_proj", "v_proj"), help="linear layers that get an adapter"
    )

    def check(self, where: str) -> None:
        if self.r < 1:
            raise _fail(f"{where}.r", self.r, "must be >= 1")
        if self.alpha < 1:
            raise _fail(f"{where}.alpha", self.alpha, "must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise _fail(f"{where}.dropout", self.dropout, "must be in [0, 1)")
        if not self.target_modules:
            raise _fail(f"{where}.target_modules", self.target_modules, "needs at least one")
        forbidden = {"embed_tokens", "lm_head"} & set(self.target_modules)
        if forbidden:
            raise _fail(
                f"{where}.target_modules",
                self.target_modules,
                f"{sorted(forbidden)} must stay frozen (vLLM refuses such adapters)",
            )


@dataclass(frozen=True)
class HeadSettings:
    """The readout (behaviorlm/head.py): the label-word head of the frozen output embeddings,
    or a trained behavior head (W h + bias + repeat features) saved with the adapter."""

    trained: bool = option(
        False,
        help="Train a behavior head (scoring format 4): one row per behavior, initialised to "
        "the mean of its name tokens' output rows (so step 0 equals the label-word head), "
        "trained in every stage with the LoRA weights. false: the label-word head (format 3), "
        "which SmolLM2's tied embeddings keep frozen.",
    )
    repeat_window: int = option(
        0,
        help="With trained: the behavior's repeat features (count, count in the prompt, "
        "recency, is-last, same hour, same weekday: behaviorlm/repeats.py) over the user's "
        "last this many events, with learned weights added to the logits. 0 = no features.",
    )
    lr: float = option(0.0, help="peak learning rate of the head's weights (0 = the stage's lr)")
    feature_lr: float = option(
        0.0,
        help="peak learning rate of the repeat-feature weights alone (0 = head.lr). They start "
        "at 0 and AdamW moves a weight by about the lr per step, so at lr 1e-3 over 200 steps "
        "they stay below 0.1 (the head screen); a larger lr here lets them reach their scale "
        "without moving the behavior rows faster.",
    )

    def check(self, where: str) -> None:
        if self.repeat_window < 0:
            raise _fail(f"{where}.repeat_window", self.repeat_window, "must be >= 0")
        if self.repeat_window and not self.trained:
            raise _fail(f"{where}.repeat_window", self.repeat_window, "needs head.trained=true")
        if self.lr < 0:
            raise _fail(f"{where}.lr", self.lr, "must be >= 0")
        if self.feature_lr < 0:
            raise _fail(f"{where}.feature_lr", self.feature_lr, "must be >= 0")
        if self.feature_lr and not self.repeat_window:
            raise _fail(f"{where}.feature_lr", self.feature_lr, "needs head.repeat_window > 0")


@dataclass(frozen=True)
class StageSettings:
    """One optimisation stage (stage 1, stage 2, or the single stage of sft / balanced)."""

    steps: int = option(300, help="optimizer steps (unless epochs is set)")
    epochs: float = option(
        0.0,
        help="> 0: train this many passes over the stage's rows instead of `steps` (a pass "
        "reads every row that holds a selected target once, so epochs=1 of sft reads every "
        "training target once; a fraction ends inside the last pass); the steps it makes are "
        "logged and saved with the stage. 0 = use steps.",
    )
    batch_tokens: int = option(
        4096,
        help="Padded tokens per optimizer step (rows x longest row of the batch); every "
        "readout in the batch's rows is a target, so a step trains on ~batch_tokens / "
        "tokens-per-event targets.",
    )
    lr: float = option(
        1e-3, help="peak AdamW learning rate (after warmup; linear decay to lr_end_ratio)"
    )
    lr_end_ratio: float = option(0.1, help="final lr as a fraction of lr")
    warmup_steps: int = option(10, help="linear warmup from 0")
    weight_decay: float = option(
        0.0, help="AdamW weight decay on the trained weights (LoRA, or all)"
    )
    max_grad_norm: float = option(1.0, help="gradient clipping (0 = off)")
    kl_weight: float = option(
        0.0,
        help="Knowledge preservation: weight of KL(base || adapted) over the label-word "
        "distribution of the non-target behaviors at each readout (see docs/training.md)."
        " 0 = off.",
    )
    logit_adjust_tau: float = option(
        0.0,
        help="Long-tail loss: the cross-entropy is taken on scores + tau * log(training prior) "
        "(logit-adjusted loss, Menon et al. 2021; tau = 1 is the balanced softmax of Ren et "
        "al. 2020), so frequent behaviors must win by a margin and the served scores (left "
        "unadjusted) rank as under a uniform prior. 0 = plain cross-entropy.",
    )

    def check(self, where: str) -> None:
        positive = {"steps": self.steps, "batch_tokens": self.batch_tokens, "lr": self.lr}
        for name, value in positive.items():
            if value <= 0:
                raise _fail(f"{where}.{name}", value, "must be > 0")
        if not 0.0 <= self.lr_end_ratio <= 1.0:
            raise _fail(f"{where}.lr_end_ratio", self.lr_end_ratio, "must be in [0, 1]")
        nonneg = {
            "epochs": self.epochs,
            "warmup_steps": self.warmup_steps,
            "weight_decay": self.weight_decay,
            "max_grad_norm": self.max_grad_norm,
            "kl_weight": self.kl_weight,
            "logit_adjust_tau": self.logit_adjust_tau,
        }
        for name, value in nonneg.items():
            if value < 0:
                raise _fail(f"{where}.{name}", value, "must be >= 0")


@dataclass(frozen=True)
class DifficultySettings:
    """Difficulty of every training target under the stage-1 adapter: 1 - p(true behavior),
    from one no-grad pass over the packed rows."""

    batch_tokens: int = option(16384, help="padded tokens per scoring forward")

    def check(self, where: str) -> None:
        if self.batch_tokens < 1:
            raise _fail(f"{where}.batch_tokens", self.batch_tokens, "must be >= 1")


@dataclass(frozen=True)
class SubsetSettings:
    """The class-balanced subset of stage 2 (and of the ``balanced`` strategy), as per-readout
    loss weights (behaviorlm/training/sampling.py)."""

    per_class_max: int = option(
        200,
        help="M: readouts' worth of weight per behavior (a behavior with fewer keeps all of "
        "its own).",
    )
    hard_fraction: float = option(
        0.5,
        help="Share of each behavior's M taken hardest-first (difficulty ranked WITHIN the "
        "behavior); the rest are random, so easy samples (and the anchors) are not "
        "forgotten.",
    )
    natural_fraction: float = option(
        0.0,
        help="Share of the stage's weight that follows the NATURAL distribution (uniform over "
        "all training readouts), added to the balanced subset: anchor replay. At a small "
        "step budget a purely balanced stage 2 moves the prior to the tail and collapses "
        "the anchors (measured on Context Trails: anchor HR@5 0.60 after stage 1 -> "
        "0.26); 0 = the balanced subset alone.",
    )

    def check(self, where: str) -> None:
        if self.per_class_max < 1:
            raise _fail(f"{where}.per_class_max", self.per_class_max, "must be >= 1")
        if not 0.0 <= self.hard_fraction <= 1.0:
            raise _fail(f"{where}.hard_fraction", self.hard_fraction, "must be in [0, 1]")
        if not 0.0 <= self.natural_fraction < 1.0:
            raise _fail(f"{where}.natural_fraction", self.natural_fraction, "must be in [0, 1)")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the data and the base model."""

    seed: int = option(
        0, help="seeds sampling, LoRA init and dropout; same seed + config = same weights"
    )
    dtype: DtypeChoice = option(
        "auto",
        help="base model weights and activations (LoRA weights stay fp32); auto: bf16 on a GPU "
        "or a CPU with native bf16 (avx512_bf16, AMX, arm64 BF16), else fp32, where bf16 is "
        "emulated and ~2.8x slower; a run's config.yaml records what auto became",
    )
    threads: int = option(0, help="torch CPU threads (0 = torch's default)")
    checkpoint_every: int = option(50, help="optimizer steps between checkpoints (0 = never)")
    log_every: int = option(10, help="optimizer steps between loss log lines")
    length_pool: int = option(
        16,
        help="Batches are drawn in pools of this many batches, sorted by length within the "
        "pool and cut into batches, so each batch holds rows of (nearly) the same length:"
        " little padding.",
    )
    chunk_events: int = option(
        32,
        help="Most events per packed row (one user's consecutive events; every target in it is"
        " read). Rows of a long history overlap by the dataset's K events so every target"
        " keeps >= K.",
    )
    tuning: Tuning = option(
        "lora",
        help="What trains: 'lora' (the adapter of lora.*, a few MB per stage, served by every "
        "engine) or 'full' (every weight of the base model, fp32 master weights with the "
        "forward in dtype; the whole model saved per stage, ~540 MB for SmolLM2-135M, served "
        "by the transformers engine only). full needs head.trained=true (the readout trains "
        "through the head) and a lower lr: the presets' rates are LoRA's, about 10x the usual "
        "full-tuning rate, so scale stage1.lr, stage2.lr and baseline.lr by ~0.1.",
    )
    lora: LoraSettings = option(
        default_factory=LoraSettings, help="the LoRA adapter (tuning=lora; ignored with full)"
    )
    head: HeadSettings = option(
        default_factory=HeadSettings, help="the readout: label words or a trained head"
    )
    stage1: StageSettings = option(
        default_factory=lambda: StageSettings(kl_weight=1.0),
        help="stage 1 of behaviorlm: anchor-target readouts, KL knowledge preservation",
    )
    difficulty: DifficultySettings = option(
        default_factory=DifficultySettings, help="difficulty scoring with the stage-1 adapter"
    )
    stage2: StageSettings = option(
        default_factory=StageSettings, help="stage 2 of behaviorlm: the class-balanced subset"
    )
    subset: SubsetSettings = option(
        default_factory=SubsetSettings, help="the class-balanced subset (stage 2, balanced)"
    )
    baseline: StageSettings = option(
        default_factory=lambda: StageSettings(steps=600),
        help="The single stage of the ``sft`` and ``balanced`` baselines (same total steps by "
        "default).",
    )

    def __post_init__(self) -> None:
        if self.dtype not in get_args(DtypeChoice):
            raise _fail("dtype", self.dtype, f"must be one of {list(get_args(DtypeChoice))}")
        for name in ("threads", "checkpoint_every", "seed"):
            if getattr(self, name) < 0:
                raise _fail(name, getattr(self, name), "must be >= 0")
        for name in ("log_every", "length_pool", "chunk_events"):
            if getattr(self, name) < 1:
                raise _fail(name, getattr(self, name), "must be >= 1")
        if self.tuning not in TUNINGS:
            raise _fail("tuning", self.tuning, f"must be one of {list(TUNINGS)}")
        if self.tuning == "full" and not self.head.trained:
            raise _fail(
                "tuning",
                self.tuning,
                "full tuning needs head.trained=true: the label-word head reads the tied "
                "embedding, which full tuning moves through the input side only",
            )
        self.lora.check("lora")
        self.head.check("head")
        self.stage1.check("stage1")
        self.stage2.check("stage2")
        self.baseline.check("baseline")
        self.difficulty.check("difficulty")
        self.subset.check("subset")

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def with_dtype_resolved(self) -> TrainConfig:
        """This config with ``dtype: auto`` made concrete for this machine (what a run
        records and what resuming or reusing a stage 1 compares)."""
        if self.dtype != "auto":
            return self
        from behaviorlm.dtypes import resolve_dtype_here

        return dataclasses.replace(self, dtype=resolve_dtype_here(self.dtype))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def config_sections() -> list[str]:
    """One line per config key, ``key (default): help`` (the ``behaviorlm train --help`` list):
    made from the same fields as the config, its saved YAML and its error messages."""
    from behaviorlm.options import default_of

    hints = typing.get_type_hints(TrainConfig)
    lines: list[str] = []
    for f in dataclasses.fields(TrainConfig):
        sub = hints[f.name]
        if dataclasses.is_dataclass(sub):
            lines.append(f"{f.name}.*: {f.metadata['help']}")
            base = default_of(f)
            for g in dataclasses.fields(sub):
                value = _plain(getattr(base, g.name))
                lines.append(f"  {f.name}.{g.name} ({value}): {g.metadata['help']}")
        else:
            lines.append(f"{f.name} ({_plain(default_of(f))}): {f.metadata['help']}")
    return lines


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` (the few types configs use)."""
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise _fail(key, value, f"must be one of {list(get_args(tp))}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise _fail(key, value, "must be a list")
        return tuple(_coerce(key, v, get_args(tp)[0]) for v in value)
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported config type {tp}")
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(key, value, "must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise _fail(key, value, "must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(key, value, "must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(key, value, "must be a string")
        return value
    raise TypeError(f"unsupported config type {tp}")


def _build(cls: Any, data: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise _fail(full, value, f"unknown key; known: {sorted(names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise _fail(full, value, "must be a mapping of sub-keys")
            # Sub-configs start from the field's own default (e.g. stage1's kl_weight=1.0).
            factory: Any = next(f for f in dataclasses.fields(cls) if f.name == key).default_factory
            base = dataclasses.asdict(factory())
            base.update(value)
            kwargs[key] = _build(tp, base, f"{full}.")
        else:
            kwargs[key] = _coerce(full, value, tp)
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise _fail(key, value, f"'{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["stage1.steps=100", "lora.r=4"]`` -> nested dict (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"override {item!r}: expected key=value, e.g. stage1.steps=100")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise InputError(f"override {item!r}: value is not valid YAML ({exc})") from exc
        _set_dotted(tree, key.strip(), value)
    return tree


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def preset_path(preset: str) -> Path:
    """A preset name (``tiny``, ``cpu``, ``gpu``) or a path to a YAML file."""
    path = Path(preset)
    if path.suffix in {".yaml", ".yml"}:
        if not path.exists():
            raise InputError(f"--preset {preset}: file not found")
        return path
    path = PRESETS_DIR / f"{preset}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
        raise InputError(f"--preset {preset}: unknown preset; known: {known} or a .yaml path")
    return path


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    if not isinstance(data, Mapping):
        raise InputError(f"config: expected a mapping at the top level, got {type(data).__name__}")
    config: TrainConfig = _build(TrainConfig, data, "")
    return config


def load_config(preset: str, overrides: Sequence[str] = ()) -> TrainConfig:
    """Preset values, then the overrides; validated."""
    path = preset_path(preset)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: invalid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping at the top level")
    return config_from_dict(_merge(data, parse_overrides(overrides)))


def config_differences(saved: Mapping[str, Any], ours: Mapping[str, Any]) -> list[str]:
    """Each dotted key whose value differs between two config dicts, as ``key=ours (saved:
    theirs)``: the override that made the difference, so a refused ``--resume`` says which
    ``key=value`` to pass (a run's ``dtype: auto`` is saved as what it became on its machine,
    which another machine may resolve otherwise). Both are ``to_dict()`` output: plain values."""
    out: list[str] = []
    for key in sorted(set(saved) | set(ours)):
        a, b = saved.get(key), ours.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += [f"{key}.{d}" for d in config_differences(a, b)]
        elif a != b:
            out.append(f"{key}={b!r} (saved: {a!r})")
    return out
