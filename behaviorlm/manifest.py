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

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from behaviorlm.errors import InputError, ManifestMismatch
from behaviorlm.prompt import PROMPT_VERSION
from behaviorlm.vocabulary import Vocabulary

MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA = 1

Stage = Literal["stage1", "stage2", "sft", "balanced", "base"]


class BaseModelRef(BaseModel):
    """Which base model an adapter belongs to: an id for people, a content hash for machines."""

    model_config = ConfigDict(frozen=True)
    id: str = Field(description="e.g. 'SmolLM2-135M-Instruct' or a hub id / local path")
    sha256: str = Field(description="hash of the base model's weight files (see base_model.py)")


class Calibration(BaseModel):
    model_config = ConfigDict(frozen=True)
    temperature: float = Field(default=1.0, gt=0, description="divides constrained log-probs")
    fitted_on: str | None = Field(default=None, description="what the temperature was fitted on")
    nll_before: float | None = None
    nll_after: float | None = None


class VocabularyEntry(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    count: int = Field(ge=0)
    anchor: bool
    code: list[int] = Field(description="answer token ids (render_answer, tokenised alone)")


class AdapterManifest(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: int = MANIFEST_SCHEMA
    name: str = Field(description="run name, e.g. 'ct-pj-demo'")
    version: str = Field(description="adapter version; a new version is a new LoRA id in vLLM")
    stage: Stage
    strategy: str = Field(description="behaviorlm | sft | balanced")
    base_model: BaseModelRef
    prompt_version: str = PROMPT_VERSION
    anchor_share: float
    vocabulary: list[VocabularyEntry]
    calibration: Calibration = Field(default_factory=Calibration)
    lora: dict[str, Any] = Field(default_factory=dict, description="r, alpha, target modules")
    training_config: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict, description="prepared dataset used")
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def for_vocabulary(
        cls, vocab: Vocabulary, codes: Sequence[Sequence[int]], **fields: Any
    ) -> AdapterManifest:
        entries = [
            VocabularyEntry(name=n, count=c, anchor=vocab.is_anchor(n), code=list(code))
            for n, c, code in zip(vocab.names, vocab.counts, codes, strict=True)
        ]
        return cls(anchor_share=vocab.anchor_share, vocabulary=entries, **fields)

    def to_vocabulary(self) -> Vocabulary:
        return Vocabulary(
            tuple(e.name for e in self.vocabulary),
            tuple(e.count for e in self.vocabulary),
            self.anchor_share,
        )

    @property
    def codes(self) -> list[tuple[int, ...]]:
        return [tuple(e.code) for e in self.vocabulary]

    @property
    def anchors(self) -> list[str]:
        return [e.name for e in self.vocabulary if e.anchor]

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
        if raw.get("schema_version") != MANIFEST_SCHEMA:
            raise ManifestMismatch(
                f"{path}: schema_version is {raw.get('schema_version')!r}, this BehaviorLM "
                f"reads {MANIFEST_SCHEMA}"
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
        """Refuse to serve an adapter with another base model, prompt or tokenizer."""
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
            from behaviorlm.trie import encode_answer

            for entry in self.vocabulary:
                got = list(encode_answer(tokenizer, entry.name))
                if got != entry.code:
                    raise ManifestMismatch(
                        f"{where}: behavior {entry.name!r} encodes to {got} with this tokenizer, "
                        f"the manifest records {entry.code}; the tokenizer differs"
                    )
