"""The answer trie: the token sequences of the behavior names, and exact constrained scoring.

P(behavior) is the model's distribution constrained to the vocabulary: the product, over the
trie nodes on the behavior's path that branch, of the next-token probability of the branch
taken, renormalised over that node's children. Nodes with one child contribute a factor of 1,
so where no two names share a first token a single next-token read at the end of the prompt
gives every probability. Answers end with the end marker's token, which makes the trie a prefix
code: no answer is a prefix of another.

This module is pure Python + numpy; engines supply the log-probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from behaviorlm.errors import InputError
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
    # prefix -> child token ids (sorted); only for prefixes with two or more children
    branches: dict[Prefix, tuple[int, ...]] = field(default_factory=dict)
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
        branches = {p: tuple(sorted(c)) for p, c in children.items() if len(c) > 1}
        return cls(
            names=tuple(names),
            codes=tuple(tuple(int(t) for t in c) for c in codes),
            branches=branches,
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
        """(answer prefix, child token ids) for every node the engine must read.

        The root is always read (its raw mass is ``label_mass``), even with a single child.
        """
        out: list[tuple[Prefix, tuple[int, ...]]] = [((), self.root_children)]
        out.extend((p, c) for p, c in self.branches.items() if p != ())
        return out

    def combine(
        self,
        node_logprobs: Mapping[Prefix, Sequence[float] | np.ndarray],
        temperature: float = 1.0,
    ) -> tuple[np.ndarray, float]:
        """Probabilities over ``names`` from raw next-token log-probs at each queried node.

        ``node_logprobs[prefix][j]`` is the model's full-vocabulary log-probability of the j-th
        child (in ``queries`` order) after prompt + prefix. ``temperature`` divides the
        constrained log-probabilities (calibration fitted in evaluation).
        Returns (probabilities summing to 1, label_mass).
        """
        cond: dict[Prefix, dict[int, float]] = {}
        label_mass = 0.0
        for prefix, kids in self.queries:
            raw = np.asarray(node_logprobs[prefix], dtype=np.float64)
            if raw.shape != (len(kids),):
                raise ValueError(f"node {prefix}: expected {len(kids)} log-probs, got {raw.shape}")
            m = raw.max()
            lse = m + math.log(float(np.exp(raw - m).sum()))
            if prefix == ():
                label_mass = float(math.exp(lse))
            cond[prefix] = {t: float(v - lse) for t, v in zip(kids, raw, strict=True)}
        logp = np.zeros(len(self.names), dtype=np.float64)
        for i, code in enumerate(self.codes):
            for d in range(len(code)):
                node = cond.get(code[:d])
                if node is not None:
                    logp[i] += node[code[d]]
        if temperature != 1.0:
            logp = logp / temperature
        logp -= logp.max()
        probs = np.exp(logp)
        probs /= probs.sum()
        return probs, label_mass
