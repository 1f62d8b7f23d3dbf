"""The one interface both engines (transformers, vLLM) implement.

Callers (training's difficulty scoring, evaluation, the service) render prompts with
``behaviorlm.prompt`` and ask for probabilities over a vocabulary; the engine owns the model,
the adapters and the answer tries, and applies each adapter's calibration temperature.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from behaviorlm.manifest import AdapterManifest
from behaviorlm.vocabulary import Vocabulary


@dataclass(frozen=True)
class AdapterSpec:
    """An adapter to load: a directory with the peft weights and ``manifest.json``.

    ``name`` is how requests refer to it; a new version of the same adapter is loaded under a
    new name/version (vLLM never reloads a LoRA id in place).
    """

    name: str
    path: Path
    manifest: AdapterManifest


@dataclass(frozen=True)
class ScoreRequest:
    """Score one prompt.

    ``adapter``: a loaded adapter's name, or None for the base model (zero-shot).
    ``behaviors``: the candidate behaviors (the adapter's vocabulary, or a subset of it for a
    post-hoc restriction, or any list for zero-shot / few-shot additions). The prompt is the
    same whatever the candidates are.
    ``temperature``: None = the adapter's calibrated temperature (1.0 for the base model).
    """

    prompt: str
    behaviors: tuple[str, ...]
    adapter: str | None = None
    temperature: float | None = None


@dataclass(frozen=True)
class ScoreResult:
    behaviors: tuple[str, ...]
    probs: np.ndarray  # float64, sums to 1, aligned with ``behaviors``
    label_mass: float  # raw model probability of answering with one of the behaviors
    forward_passes: int = 1  # model forward calls this request took part in (speed reports)
    extra: dict[str, float] = field(default_factory=dict)

    def top(self, k: int) -> list[tuple[str, float]]:
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [(self.behaviors[i], float(self.probs[i])) for i in order]


class ScoringEngine(ABC):
    """A model plus adapters that turns prompts into vocabulary-constrained probabilities."""

    name: str = "engine"

    @abstractmethod
    def load_adapter(self, spec: AdapterSpec) -> None:
        """Load (or register) an adapter; checks its manifest against the base model."""

    @abstractmethod
    def unload_adapter(self, name: str) -> None: ...

    @property
    @abstractmethod
    def adapters(self) -> dict[str, AdapterSpec]: ...

    @abstractmethod
    def score_batch(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score many requests (any mix of adapters) in as few forward passes as possible."""

    async def ascore(self, request: ScoreRequest) -> ScoreResult:
        """Async scoring for the service; engines that batch by themselves override it."""
        return (await asyncio.to_thread(self.score_batch, [request]))[0]

    def vocabulary(self, adapter: str) -> Vocabulary:
        return self.adapters[adapter].manifest.to_vocabulary()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model (and the engine's worker processes)."""
