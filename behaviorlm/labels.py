"""The label-word head (scoring format 3): a probability for every behavior from ONE readout.

At the readout position (the ``:`` before a name, see ``behaviorlm.prompt``) the model's output
head gives a logit to every token. A behavior's score is the mean of the logits of its label
tokens (the tokens of " <name>", tokenised alone, no end marker):

    score(b) = mean_{t in tokens(b)} logit[t]        P(b) = softmax_b(score(b) / T)

over the vocabulary or over a request's candidates. Training uses the same head with
cross-entropy over the behaviors. Any name can be scored (a new behavior joins by its name
alone: the zero- and few-shot property), but two names whose token multisets are equal would
always get the same score: they are rejected.

``label_mass`` (a drift signal, not part of P): the model's full-vocabulary probability, at the
readout, that the next token is the first token of some behavior's name. A log-softmax shift
cancels in P, so an engine may hand ``combine`` raw logits plus their log-normaliser or
log-probabilities with a normaliser of 0 (vLLM's ``logprob_token_ids``).

Why not the answer tree (scoring format 2, before 2026-12): the whole-answer probability needs
every answer prefix in the forward pass (~1,040 extra tokens for 414 behaviors, ~1,000 vLLM
requests per prediction); the head needs the prompt alone and matched its quality at the same
budget (acc@1 0.160 vs 0.160 on 300 Context Trails test samples). Pure Python + numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from behaviorlm.errors import EngineError, InputError
from behaviorlm.events import normalize_behavior
from behaviorlm.prompt import PieceEncoder
from behaviorlm.vocabulary import name_index

SCORING_FORMAT = 3
HEAD_SCORING_FORMAT = 4  # behaviorlm.head: trained rows + repeat features, same readout
SCORING_FORMATS = {
    1: "first-token trie renormalised per node (retired 2026-11-26)",
    2: "whole-answer probability over an answer tree (retired 2026-12-01)",
    3: "label-word head: mean logit of the name's tokens at one readout",
    4: "trained behavior head: W h + bias + repeat features at the same readout",
}
READABLE_FORMATS = (SCORING_FORMAT, HEAD_SCORING_FORMAT)


@dataclass(frozen=True)
class LabelHead:
    """Behaviors and their label tokens, with the averaging matrix precomputed."""

    names: tuple[str, ...]
    tokens: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if not self.names or len(self.names) != len(self.tokens):
            raise InputError("label head: need one non-empty token sequence per behavior")
        seen: dict[tuple[int, ...], str] = {}
        for name, toks in zip(self.names, self.tokens, strict=True):
            if not toks:
                raise InputError(f"label head: behavior {name!r} encodes to no tokens")
            key = tuple(sorted(toks))
            if key in seen:
                raise InputError(
                    f"label head: behaviors {seen[key]!r} and {name!r} have the same label "
                    f"tokens {list(key)}: the head cannot tell them apart; rename one of them"
                )
            seen[key] = name
        if len(set(self.names)) != len(self.names):
            dupes = sorted({n for n in self.names if self.names.count(n) > 1})
            raise InputError(f"label head: duplicate behaviors {dupes[:5]}")

    @classmethod
    def from_encoder(cls, encoder: PieceEncoder, names: Sequence[str]) -> LabelHead:
        names = [normalize_behavior(n) for n in names]
        return cls(tuple(names), tuple(encoder.label_tokens(n) for n in names))

    @cached_property
    def index(self) -> dict[str, int]:
        return name_index(self.names)

    @cached_property
    def union(self) -> np.ndarray:
        """The distinct label token ids, sorted: the only output-head rows the head reads."""
        return np.unique(np.concatenate([np.asarray(t, dtype=np.int64) for t in self.tokens]))

    @cached_property
    def matrix(self) -> np.ndarray:
        """[behaviors, union] averaging weights: score = union_logits @ matrix.T."""
        column = {int(t): j for j, t in enumerate(self.union)}
        out = np.zeros((len(self.names), len(self.union)), dtype=np.float64)
        for i, toks in enumerate(self.tokens):
            for t in toks:
                out[i, column[int(t)]] += 1.0 / len(toks)
        return out

    @cached_property
    def first_columns(self) -> np.ndarray:
        """Columns (into ``union``) of the distinct first tokens of the names (label_mass)."""
        column = {int(t): j for j, t in enumerate(self.union)}
        return np.asarray(sorted({column[int(t[0])] for t in self.tokens}), dtype=np.int64)

    def subset(self, names: Sequence[str]) -> LabelHead:
        """The head of some of these behaviors (a request's candidates)."""
        unknown = [n for n in names if n not in self.index]
        if unknown:
            raise InputError(f"unknown candidate behaviors: {unknown[:10]}")
        return LabelHead(tuple(names), tuple(self.tokens[self.index[n]] for n in names))

    def scores(self, union_logits: np.ndarray) -> np.ndarray:
        """[..., behaviors] mean label-token logits from [..., union] logits."""
        return np.asarray(union_logits, dtype=np.float64) @ self.matrix.T

    def combine(
        self, union_logits: np.ndarray, log_normaliser: float = 0.0, temperature: float = 1.0
    ) -> tuple[np.ndarray, float]:
        """(P over ``names`` summing to 1, label_mass) from one readout's union logits.

        ``union_logits[j]`` is the logit (or log-probability) of token ``union[j]``;
        ``log_normaliser`` the full-vocabulary logsumexp of the logits (0 for log-probs).
        """
        values = np.asarray(union_logits, dtype=np.float64)
        if values.shape != self.union.shape:
            raise ValueError(f"expected {self.union.shape[0]} union logits, got {values.shape}")
        if not np.isfinite(values).all() or not math.isfinite(log_normaliser):
            # NaN weights (a diverged adapter) would otherwise rank behaviors arbitrarily.
            raise EngineError(
                "the model returned non-finite logits at the readout: its weights (or the "
                "adapter's) are probably NaN"
            )
        return softmax(self.scores(values), temperature), self.label_mass(values, log_normaliser)

    def label_mass(self, union_logits: np.ndarray, log_normaliser: float = 0.0) -> float:
        """The full-vocabulary probability that the next token starts one of the names."""
        first = np.asarray(union_logits, dtype=np.float64)[self.first_columns] - log_normaliser
        return min(float(np.exp(first).sum()), 1.0)


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """P over behaviors from their scores (float64, sums to 1)."""
    score = np.asarray(scores, dtype=np.float64) / temperature
    if not np.isfinite(score).all():
        raise EngineError("the behavior head returned non-finite scores: its weights are NaN")
    score -= score.max()
    probs = np.exp(score)
    return probs / probs.sum()


def untrained(names: Sequence[str], vocabulary: Sequence[str]) -> list[str]:
    """The names that are not in a trained vocabulary (scored by name alone)."""
    known = set(vocabulary)
    return [n for n in names if n not in known]
