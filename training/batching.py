"""Tokenised training examples, the step schedule, and length-grouped batches.

Prompt and answer are tokenised separately (``tokenizer.encode(prompt)`` and the answer alone,
exactly as the scoring engines read them) and concatenated. A model input is the prompt plus
the answer without its last token; the labels are the answer tokens, so the loss touches answer
tokens only and no position is computed whose prediction is thrown away.

The schedule is a pure function of (seed, subset, steps): resuming at step k replays exactly the
batches an uninterrupted run would have drawn, with no sampler state beyond k.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from behaviorlm.events import Sample
from behaviorlm.prompt import render_prompt


@dataclass(frozen=True, slots=True)
class Example:
    """One tokenised sample: prompt ids, answer ids and the target's vocabulary index."""

    prompt_ids: tuple[int, ...]
    answer_ids: tuple[int, ...]
    target: int

    @property
    def length(self) -> int:
        """Model input length (prompt + answer minus its last token)."""
        return len(self.prompt_ids) + len(self.answer_ids) - 1


def encode_prompts(tokenizer: Any, samples: Sequence[Sample]) -> list[list[int]]:
    """``tokenizer.encode(prompt)`` for many prompts at once (the fast tokenizer's batch call)."""
    prompts = [render_prompt(s.history, s.now, s.now_context) for s in samples]
    if not prompts:
        return []
    return [list(ids) for ids in tokenizer(prompts, add_special_tokens=True)["input_ids"]]


def encode_examples(
    tokenizer: Any,
    samples: Sequence[Sample],
    codes: Mapping[str, Sequence[int]],
    index: Mapping[str, int],
) -> list[Example]:
    """Examples for samples whose target is in the vocabulary (callers filter beforehand)."""
    prompt_ids = encode_prompts(tokenizer, samples)
    out = []
    for sample, ids in zip(samples, prompt_ids, strict=True):
        assert sample.target is not None
        out.append(Example(tuple(ids), tuple(codes[sample.target]), index[sample.target]))
    return out


def draw_order(subset: Sequence[int], total: int, rng: np.random.Generator) -> np.ndarray:
    """``total`` indices from ``subset``: shuffled passes over it (each sample once per pass)."""
    pool = np.asarray(subset, dtype=np.int64)
    if len(pool) == 0:
        raise ValueError("cannot draw batches from an empty subset")
    passes = -(-total // len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(passes)])[:total]


def length_grouped_batches(
    order: np.ndarray,
    lengths: Mapping[int, int],
    batch_size: int,
    length_pool: int,
    rng: np.random.Generator,
) -> list[list[int]]:
    """Cut ``order`` into batches of samples of (nearly) equal length.

    Each pool of ``length_pool`` batches is sorted by length, cut into batches, and the
    batches of the pool are shuffled, so a batch pads at most to its longest (similar) member
    while the model still sees the lengths in random order.
    """
    batches: list[list[int]] = []
    span = batch_size * length_pool
    for start in range(0, len(order), span):
        pool = order[start : start + span].tolist()
        pool.sort(key=lambda i: lengths[i])  # stable: ties keep the drawn order
        cut = [pool[k : k + batch_size] for k in range(0, len(pool), batch_size)]
        for k in rng.permutation(len(cut)):
            batches.append(cut[int(k)])
    return batches


@dataclass
class Batch:
    """Left-padded model inputs; labels cover the last ``answer_width`` positions."""

    input_ids: Any  # long [B, L]
    attention_mask: Any | None  # long [B, L], None when no row is padded
    position_ids: Any  # long [B, L], counted from each row's first real token
    labels: Any  # long [B, A]: answer tokens right-aligned, -100 elsewhere
    first_answer: Any  # long [B]: column in [0, A) of each row's first answer prediction
    first_token: Any  # long [B]: each row's first answer token (the target's trie root child)
    answer_tokens: int  # number of labelled tokens
    padding: int  # padded positions (reported, should stay near 0)

    @property
    def answer_width(self) -> int:
        return int(self.labels.shape[1])

    def to(self, device: Any) -> Batch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(
            move(self.input_ids),
            move(self.attention_mask),
            move(self.position_ids),
            move(self.labels),
            move(self.first_answer),
            move(self.first_token),
            self.answer_tokens,
            self.padding,
        )


def collate(examples: Sequence[Example], pad_id: int) -> Batch:
    """Left padding, so every row's answer ends at the last column: the output head then only
    runs on the last ``max answer length`` positions (``logits_to_keep``)."""
    import torch

    seqs = [list(e.prompt_ids) + list(e.answer_ids[:-1]) for e in examples]
    width = max(len(s) for s in seqs)
    answer_width = max(len(e.answer_ids) for e in examples)
    batch = len(seqs)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.long)
    labels = torch.full((batch, answer_width), -100, dtype=torch.long)
    first_answer = torch.zeros(batch, dtype=torch.long)
    for r, (seq, ex) in enumerate(zip(seqs, examples, strict=True)):
        input_ids[r, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[r, width - len(seq) :] = 1
        n = len(ex.answer_ids)
        labels[r, answer_width - n :] = torch.tensor(ex.answer_ids, dtype=torch.long)
        first_answer[r] = answer_width - n
    padding = int((mask == 0).sum())
    position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return Batch(
        input_ids=input_ids,
        attention_mask=mask if padding else None,
        position_ids=position_ids,
        labels=labels,
        first_answer=first_answer,
        first_token=torch.tensor([e.answer_ids[0] for e in examples], dtype=torch.long),
        answer_tokens=sum(len(e.answer_ids) for e in examples),
        padding=padding,
    )


def pad_safe_mask(mask: Any, dtype: Any) -> Any:
    """The 4D additive attention mask for a left-padded batch: causal over each row's real
    tokens, and every pad position attends to itself only.

    The plain 2D mask leaves pad queries with no key at all. Some GPU attention kernels return
    NaN for such rows; the loss ignores those positions, but the weight gradients
    (activations^T x upstream gradient) still pick the NaN up: on an H200 a padded batch of
    short prompts turned every LoRA weight into NaN at step 4 (2026-11-26). CPU kernels return
    finite values there, so CPU runs never showed it.
    """
    import torch

    real = mask.bool()  # [B, L]
    width = real.shape[1]
    causal = torch.tril(torch.ones(width, width, dtype=torch.bool, device=real.device))
    allowed = causal.unsqueeze(0) & real.unsqueeze(1)  # [B, query, key]
    eye = torch.eye(width, dtype=torch.bool, device=real.device).unsqueeze(0)
    allowed |= eye & ~real.unsqueeze(2)
    out = torch.zeros(allowed.shape, dtype=dtype, device=real.device)
    out.masked_fill_(~allowed, torch.finfo(dtype).min)
    return out.unsqueeze(1)  # [B, 1, query, key]
