"""The answer trie: the token sequences of the behavior names, and exact constrained scoring.

P(behavior) is the model's sequence distribution restricted to the vocabulary: the probability
the model gives the whole answer " <name>\n" (the product of every answer token's full-vocabulary
next-token probability), divided by the sum of that over all behaviors. Every internal trie
node is therefore read, single-child nodes included.

Why not renormalise at each branching node only (scoring format 1, before 2026-11-26): a name
whose first token is rare elsewhere then collects that token's whole mass and its later tokens
cost nothing. On Context Trails the base model put p=0.88 on "Satay Restaurant" (" Sat", also
a weekday in the prompt) for a history whose true next was Shopping Mall, whose full-sequence
log-probability was 11 nats higher. Answers end with the end marker's token, which makes the
trie a prefix code: no answer is a prefix of another.

This module is pure Python + numpy; engines supply the log-probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from behaviorlm.errors import EngineError, InputError
from behaviorlm.prompt import render_answer

Prefix = tuple[int, ...]


class TokenizerLike(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


def encode_answer(tokenizer: TokenizerLike, behavior: str) -> tuple[int, ...]:
    """Token ids of a behavior's answer; tokenised alone, exactly as training appends them."""
    return tuple(tokenizer.encode(render_answer(behavior), add_special_tokens=False))


@dataclass
class AnswerTrie:
    """Behaviors and their answer token ids, with the branching nodes precomputed."""

    names: tuple[str, ...]
    codes: tuple[tuple[int, ...], ...]
    # every internal node: answer prefix -> child token ids (sorted); the root is ()
    nodes: dict[Prefix, tuple[int, ...]] = field(default_factory=dict)
    root_children: tuple[int, ...] = ()

    @classmethod
    def build(cls, names: Sequence[str], codes: Sequence[Sequence[int]]) -> AnswerTrie:
        if len(names) != len(codes) or not names:
            raise InputError("answer trie: need one non-empty token sequence per behavior")
        children: dict[Prefix, set[int]] = {}
        seen: dict[tuple[int, ...], str] = {}
        for name, code in zip(names, codes, strict=True):
            code = tuple(int(t) for t in code)
            if not code:
                raise InputError(f"answer trie: behavior {name!r} encodes to no tokens")
            if code in seen:
                raise InputError(
                    f"answer trie: behaviors {seen[code]!r} and {name!r} encode to the same tokens"
                )
            seen[code] = name
            for d in range(len(code)):
                children.setdefault(code[:d], set()).add(code[d])
        ends = set(seen)
        for prefix in children:
            if prefix in ends:
                raise InputError(
                    f"answer trie: the answer of {seen[prefix]!r} is a prefix of another answer"
                )
        nodes = {p: tuple(sorted(children[p])) for p in sorted(children, key=lambda p: (len(p), p))}
        return cls(
            names=tuple(names),
            codes=tuple(tuple(int(t) for t in c) for c in codes),
            nodes=nodes,
            root_children=tuple(sorted(children[()])),
        )

    @classmethod
    def from_tokenizer(cls, tokenizer: TokenizerLike, names: Sequence[str]) -> AnswerTrie:
        return cls.build(names, [encode_answer(tokenizer, n) for n in names])

    def subset(self, names: Sequence[str]) -> AnswerTrie:
        """The trie of a subset of behaviors (post-hoc restriction; the prompt is unchanged)."""
        index = {n: i for i, n in enumerate(self.names)}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise InputError(f"unknown candidate behaviors: {unknown[:10]}")
        return AnswerTrie.build(list(names), [self.codes[index[n]] for n in names])

    @property
    def queries(self) -> list[tuple[Prefix, tuple[int, ...]]]:
        """(answer prefix, child token ids) for every node the engine must read: all internal
        nodes, the root first, then by depth."""
        return list(self.nodes.items())

    def combine(
        self,
        node_logprobs: Mapping[Prefix, Sequence[float] | np.ndarray],
        temperature: float = 1.0,
    ) -> tuple[np.ndarray, float]:
        """Probabilities over ``names`` from raw next-token log-probs at each queried node.

        ``node_logprobs[prefix][j]`` is the model's full-vocabulary log-probability of the j-th
        child (in ``queries`` order) after prompt + prefix. ``temperature`` divides the answers'
        log-probabilities (calibration fitted in evaluation).
        Returns (probabilities summing to 1, label_mass: the model's total probability of
        answering with one of ``names``).
        """
        raw: dict[Prefix, dict[int, float]] = {}
        for prefix, kids in self.queries:
            values = np.asarray(node_logprobs[prefix], dtype=np.float64)
            if values.shape != (len(kids),):
                raise ValueError(
                    f"node {prefix}: expected {len(kids)} log-probs, got {values.shape}"
                )
            raw[prefix] = dict(zip(kids, values.tolist(), strict=True))
        logp = np.asarray(
            [sum(raw[code[:d]][code[d]] for d in range(len(code))) for code in self.codes],
            dtype=np.float64,
        )
        top = float(logp.max())
        if np.isnan(logp).any() or not math.isfinite(top):
            # NaN weights (a diverged adapter) would otherwise rank behaviors arbitrarily.
            raise EngineError(
                "the model returned non-finite log-probabilities for the answers: its weights "
                "(or the adapter's) are probably NaN"
            )
        label_mass = float(math.exp(top) * np.exp(logp - top).sum())
        if temperature != 1.0:
            logp = logp / temperature
        logp -= logp.max()
        probs = np.exp(logp)
        probs /= probs.sum()
        return probs, label_mass
