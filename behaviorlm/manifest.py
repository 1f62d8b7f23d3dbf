"""The adapter manifest: everything needed to serve an adapter exactly as it was trained.

``manifest.json`` lies next to each adapter (``models/<run>/<stage>/``). Loading checks it
against the base model, tokenizer and prompt renderer in use, and refuses a mismatch with a
message that names the field, the expected and the found value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from behaviorlm.errors import InputError, ManifestMismatch
from behaviorlm.head import HeadInfo
from behaviorlm.labels import (
    HEAD_SCORING_FORMAT,
    READABLE_FORMATS,
    SCORING_FORMAT,
    SCORING_FORMATS,
    LabelHead,
)
from behaviorlm.prompt import PROMPT_VERSION
from behaviorlm.vocabulary import Vocabulary

MANIFEST_FILE = "manifest.json"
# 1: answer-tree adapters (prompt v1, scoring format 2); 2: label-word head (v2, format 3) and
# trained heads (format 4); 3: the same for a fully tuned model (tuning full), so a release
# without full tuning refuses it by its schema instead of failing inside peft.
MANIFEST_SCHEMA = 2
FULL_SCHEMA = 3
READABLE_SCHEMAS = (MANIFEST_SCHEMA, FULL_SCHEMA)
RETRAIN = "retrain it with `behaviorlm train` (the answer-tree format was removed in 2026-12)"

Stage = Literal["stage1", "stage2", "sft", "balanced", "base"]
# What a stage trained (behaviorlm/training/tuning.py) and the file its weights are in.
Tuning = Literal["lora", "full"]
WEIGHTS_FILES: dict[str, str] = {"lora": "adapter_model.safetensors", "full": "model.safetensors"}


class BaseModelRef(BaseModel):
    """Which base model an adapter belongs to: an id for people, a content hash for machines."""

    model_config = ConfigDict(frozen=True)
    id: str = Field(description="e.g. 'SmolLM2-135M-Instruct' or a hub id / local path")
    sha256: str = Field(description="hash of the base model's weight files (see base_model.py)")


class Calibration(BaseModel):
    model_config = ConfigDict(frozen=True)
    temperature: float = Field(default=1.0, gt=0, description="divides the label-word scores")
    fitted_on: str | None = Field(default=None, description="what the temperature was fitted on")
    nll_before: float | None = None
    nll_after: float | None = None
    trained_logit_adjust_tau: float = Field(
        default=0.0,
        ge=0,
        description="the stage was trained with the logit-adjusted loss at this tau: its "
        "scores rank as under a balanced prior; nothing is added to them when serving",
    )


class VocabularyEntry(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    count: int = Field(ge=0)
    anchor: bool
    tokens: list[int] = Field(
        min_length=1, description="label tokens: ids of ' <name>' tokenised alone (labels.py)"
    )


class AdapterManifest(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: int = MANIFEST_SCHEMA
    name: str = Field(description="run name, e.g. 'ct-pj-demo'")
    version: str = Field(description="adapter version; a new version is a new LoRA id in vLLM")
    stage: Stage
    strategy: str = Field(description="behaviorlm | sft | balanced")
    base_model: BaseModelRef
    prompt_version: str = PROMPT_VERSION
    scoring_format: int = Field(
        default=SCORING_FORMAT, description="how probabilities are read (labels.SCORING_FORMATS)"
    )
    history_events: int | None = Field(
        default=None,
        ge=1,
        description="history events the prompt shows (the dataset's K): the service renders "
        "the last this many events of a request",
    )
    anchor_share: float
    vocabulary: list[VocabularyEntry]
    calibration: Calibration = Field(default_factory=Calibration)
    head: HeadInfo | None = Field(
        default=None,
        description="the trained behavior head (scoring format 4, behaviorlm/head.py); none: "
        "the label-word head (format 3)",
    )
    tuning: Tuning = Field(
        default="lora",
        description="lora: a peft adapter on the base model; full: every weight tuned, the "
        "whole model saved beside the manifest (served by the transformers engine only)",
    )
    lora: dict[str, Any] = Field(
        default_factory=dict, description="r, alpha, target modules (empty with tuning full)"
    )
    training_config: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict, description="prepared dataset used")
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @model_validator(mode="before")
    @classmethod
    def _schema_of_tuning(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("tuning") == "full":
            return {**data, "schema_version": FULL_SCHEMA}
        return data

    @classmethod
    def for_vocabulary(
        cls, vocab: Vocabulary, tokens: Sequence[Sequence[int]], **fields: Any
    ) -> AdapterManifest:
        entries = [
            VocabularyEntry(name=n, count=c, anchor=vocab.is_anchor(n), tokens=list(toks))
            for n, c, toks in zip(vocab.names, vocab.counts, tokens, strict=True)
        ]
        return cls(anchor_share=vocab.anchor_share, vocabulary=entries, **fields)

    def to_vocabulary(self) -> Vocabulary:
        return Vocabulary(
            tuple(e.name for e in self.vocabulary),
            tuple(e.count for e in self.vocabulary),
            self.anchor_share,
        )

    @property
    def label_tokens(self) -> list[tuple[int, ...]]:
        return [tuple(e.tokens) for e in self.vocabulary]

    def label_head(self) -> LabelHead:
        """The head over this adapter's vocabulary (rejects colliding names)."""
        return LabelHead(tuple(e.name for e in self.vocabulary), tuple(self.label_tokens))

    @property
    def anchors(self) -> list[str]:
        return [e.name for e in self.vocabulary if e.anchor]

    def weights_file(self, adapter_dir: Path) -> Path:
        """Where this stage's trained weights are (the adapter, or the whole model)."""
        return adapter_dir / WEIGHTS_FILES[self.tuning]

    def save(self, adapter_dir: Path) -> Path:
        adapter_dir.mkdir(parents=True, exist_ok=True)
        path = adapter_dir / MANIFEST_FILE
        path.write_text(self.model_dump_json(indent=1) + "\n")
        return path

    @classmethod
    def load(cls, adapter_dir: Path) -> AdapterManifest:
        path = adapter_dir / MANIFEST_FILE if adapter_dir.is_dir() else adapter_dir
        if not path.exists():
            raise InputError(f"{path}: no adapter manifest (expected {MANIFEST_FILE})")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from exc
        if raw.get("schema_version") == 1:
            raise ManifestMismatch(
                f"{path}: this adapter was trained for scoring format 2 (answer tree, prompt "
                f"{raw.get('prompt_version', 'v1')}); this BehaviorLM reads format "
                f"{SCORING_FORMAT} ({SCORING_FORMATS[SCORING_FORMAT]}): {RETRAIN}"
            )
        if raw.get("schema_version") not in READABLE_SCHEMAS:
            raise ManifestMismatch(
                f"{path}: schema_version is {raw.get('schema_version')!r}, this BehaviorLM "
                f"reads {' and '.join(map(str, READABLE_SCHEMAS))}"
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise InputError(f"{path}: field '{loc}': {first['msg']}") from exc

    def check_compatible(
        self,
        base: BaseModelRef,
        tokenizer: Any | None = None,
        where: str = "adapter",
    ) -> None:
        """Refuse to serve an adapter with another base model, prompt, scoring or tokenizer."""
        if self.scoring_format not in READABLE_FORMATS:
            known = SCORING_FORMATS.get(self.scoring_format, "unknown")
            raise ManifestMismatch(
                f"{where}: scoring format {self.scoring_format} ({known}); this BehaviorLM "
                f"reads formats {list(READABLE_FORMATS)}: {RETRAIN}"
            )
        has_head = self.scoring_format == HEAD_SCORING_FORMAT
        if has_head and self.head is None:
            raise ManifestMismatch(
                f"{where}: scoring format {self.scoring_format} needs a trained behavior head, "
                "but the manifest's 'head' is missing"
            )
        if not has_head and self.head is not None:
            raise ManifestMismatch(
                f"{where}: the manifest's 'head' is set, but scoring format "
                f"{self.scoring_format} reads no trained head (format {HEAD_SCORING_FORMAT} does)"
            )
        if self.prompt_version != PROMPT_VERSION:
            raise ManifestMismatch(
                f"{where}: trained with prompt version {self.prompt_version!r}, this BehaviorLM "
                f"renders {PROMPT_VERSION!r}; retrain or use a matching release"
            )
        if self.base_model.sha256 != base.sha256:
            raise ManifestMismatch(
                f"{where}: trained on base model {self.base_model.id!r} "
                f"(sha256 {self.base_model.sha256[:12]}), but the loaded base model is "
                f"{base.id!r} (sha256 {base.sha256[:12]})"
            )
        if tokenizer is not None:
            from behaviorlm.prompt import PieceEncoder

            encoder = tokenizer if isinstance(tokenizer, PieceEncoder) else PieceEncoder(tokenizer)
            for entry in self.vocabulary:
                got = list(encoder.label_tokens(entry.name))
                if got != entry.tokens:
                    raise ManifestMismatch(
                        f"{where}: behavior {entry.name!r} encodes to {got} with this tokenizer, "
                        f"the manifest records {entry.tokens}; the tokenizer differs"
                    )
