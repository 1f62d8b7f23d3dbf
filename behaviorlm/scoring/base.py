"""The one interface both engines (transformers, vLLM) implement.

Callers (evaluation, the service) render prompts with ``behaviorlm.prompt`` and ask for
probabilities over a vocabulary; the engine owns the model, the tokenizer, the adapters and
their label-word heads (``behaviorlm.labels``), and applies each adapter's calibration
temperature.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from behaviorlm.errors import InputError
from behaviorlm.labels import LabelHead
from behaviorlm.manifest import AdapterManifest
from behaviorlm.prompt import PieceEncoder, Prompt
from behaviorlm.repeats import RepeatInput
from behaviorlm.vocabulary import Vocabulary


@dataclass(frozen=True)
class AdapterSpec:
    """An adapter to load: a directory with the peft weights (or, with ``tuning: full``, the
    whole tuned model) and ``manifest.json``.

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
    ``behaviors``: the candidate behaviors (the adapter's vocabulary, a subset of it, or any
    names: a behavior outside the vocabulary is scored by its name alone). The prompt is the
    same whatever the candidates are.
    ``temperature``: None = the adapter's calibrated temperature (1.0 for the base model).
    ``past``: the history the repeat features read (``behaviorlm.repeats``), which may be
    longer than the prompt's; only adapters with a trained head that uses features read it.
    """

    prompt: Prompt
    behaviors: tuple[str, ...]
    adapter: str | None = None
    temperature: float | None = None
    past: RepeatInput | None = None


@dataclass(frozen=True)
class ScoreResult:
    behaviors: tuple[str, ...]
    probs: np.ndarray  # float64, sums to 1, aligned with ``behaviors``
    label_mass: float  # model probability that the next token starts a behavior's name
    forward_passes: int = 1  # model forward calls this request took part in (speed reports)
    extra: dict[str, float] = field(default_factory=dict)

    def top(self, k: int) -> list[tuple[str, float]]:
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [(self.behaviors[i], float(self.probs[i])) for i in order]


class HeadCache:
    """Label-word heads per behavior list (the vocabulary, a request's candidates), least
    recently used evicted first. Heads depend on the tokenizer only, not on the adapter."""

    def __init__(self, encoder: PieceEncoder, size: int = 64) -> None:
        self._encoder = encoder
        self._size = size
        self._heads: OrderedDict[tuple[str, ...], LabelHead] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, behaviors: tuple[str, ...]) -> LabelHead:
        with self._lock:
            head = self._heads.get(behaviors)
            if head is not None:
                self._heads.move_to_end(behaviors)
                return head
        if not behaviors:
            raise InputError("score request: 'behaviors' is empty (need at least one candidate)")
        head = LabelHead.from_encoder(self._encoder, behaviors)
        with self._lock:
            self._heads[behaviors] = head
            while len(self._heads) > self._size:
                self._heads.popitem(last=False)
        return head


class ScoringEngine(ABC):
    """A model plus adapters that turns prompts into probabilities over behaviors."""

    name: str = "engine"
    heads: HeadCache  # set by each engine from its tokenizer
    # True: concurrent ``ascore`` calls are batched by the engine itself (vLLM's scheduler);
    # False: callers batch, through ``score_batch`` (the service puts a micro-batcher there).
    schedules_itself: bool = False

    @property
    def serves_one_adapter(self) -> bool:
        """Whether the service should load only its default adapter at start-up (merged
        engines: each adapter costs a full model copy; new versions still hot-swap)."""
        return False

    @property
    def served_as(self) -> tuple[str, str]:
        """(backend, dtype) that compute the forward, e.g. ("openvino", "float32"): recorded at
        start-up and in ``GET /v1/models``."""
        return ("", "")

    def label_head(self, behaviors: Sequence[str]) -> LabelHead:
        """The head of these behaviors (cached); InputError when two names collide."""
        return self.heads.get(tuple(behaviors))

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
