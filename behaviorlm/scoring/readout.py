"""Readouts on any Hugging Face causal LM (plain, peft-wrapped or DDP-wrapped): the torch half of
the label-word head, shared by the engines, training, difficulty scoring and evaluation.

A forward hook on the decoder captures its last hidden states (after the final norm: what the
output head multiplies), and a pre-hook hands the model's own output head zero positions, so
the full-vocabulary head never runs inside the model. (``logits_to_keep=1`` was measured to
cost 40% of a CPU training step: the non-contiguous [B, 1, d] slice turns the head into a
batched matmul that copies the 49k x 576 weight once per row.) Callers then
multiply the hidden states at their readouts by the output head rows they need: the label
tokens only when training, the whole vocabulary once per prediction when serving (label_mass
needs the log-normaliser; one [batch, vocab] matmul is ~1% of a 250-token prompt's forward).

Rows are right-padded and need no attention mask: under the causal mask a real token only sees
positions before it, which are all real, so only the pad positions' own outputs are garbage and
nothing reads them. (With no mask the attention kernels take their causal fast path: 25% faster
than the same kernel with a padding mask on CPU; and no query row is ever fully masked, the
left-padding case that produced NaN on a GPU.) Position ids count from 0 in every row, so a
padded row equals the row scored alone up to summation order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from behaviorlm.head import BehaviorHead
from behaviorlm.labels import LabelHead, softmax

# How a vLLM engine reads a prompt's scores: label-token log-probabilities, or the final hidden
# state from its pooling runner (which a trained behavior head needs).
VLLMReadoutKind = Literal["logprobs", "hidden"]
VLLM_READOUTS: tuple[str, ...] = get_args(VLLMReadoutKind)

# Padded tokens per scoring forward (rows x longest row): bounds activation memory.
SCORING_TOKEN_BUDGET = 16_384


def unwrap(model: Any) -> Any:
    """The transformers model under DistributedDataParallel and peft wrappers."""
    inner = getattr(model, "module", model)  # DistributedDataParallel
    get_base = getattr(inner, "get_base_model", None)  # peft
    return get_base() if callable(get_base) else inner


def decoder_of(model: Any) -> Any:
    base = unwrap(model)
    decoder = getattr(base, "model", None)
    if decoder is None:
        decoder = base.get_decoder()
    return decoder


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int, device: Any) -> Any:
    """input_ids [B, L], right padding."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return ids.to(device)


def hidden_states(model: Any, input_ids: Any) -> Any:
    """[B, L, d] last hidden states (post-norm) of ``model`` for right-padded inputs."""
    import torch

    captured: list[Any] = []

    def grab(_module: Any, _args: Any, output: Any) -> None:
        hidden = getattr(output, "last_hidden_state", None)
        captured.append(hidden if hidden is not None else output[0])

    def no_positions(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0][:, :0], *args[1:])

    handle = decoder_of(model).register_forward_hook(grab)
    skip = unwrap(model).get_output_embeddings().register_forward_pre_hook(no_positions)
    try:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        model(input_ids=input_ids, position_ids=positions, use_cache=False)
    finally:
        handle.remove()
        skip.remove()
    if len(captured) != 1:
        raise RuntimeError(
            f"{type(unwrap(model)).__name__}: decoder hook saw {len(captured)} calls"
        )
    return captured[0]


def head_rows(model: Any, token_ids: Any) -> tuple[Any, Any | None]:
    """(weight [n, d], bias [n] or None) of the output head for these token ids (frozen)."""
    head = unwrap(model).get_output_embeddings()
    weight = head.weight.index_select(0, token_ids).detach()
    bias = getattr(head, "bias", None)
    return weight, (bias.index_select(0, token_ids).detach() if bias is not None else None)


def union_logits(hidden: Any, weight: Any, bias: Any | None) -> Any:
    """[N, U] fp32 logits of the label tokens from [N, d] readout hidden states.

    In fp32 whatever the model's dtype: bf16 logits of ~15 are spaced 0.06 apart, coarse for a
    softmax over hundreds of behaviors, and the matmul is small (U ~ 600 rows)."""
    logits = hidden.float() @ weight.float().T
    return logits + bias.float() if bias is not None else logits


def label_scores(hidden: Any, weight: Any, bias: Any | None, matrix: Any) -> Any:
    """[N, behaviors] fp32 label-word scores from [N, d] readout hidden states."""
    return union_logits(hidden, weight, bias) @ matrix.T


@contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    import torch

    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


def length_batches(lengths: Sequence[int], batch_size: int, token_budget: int) -> list[list[int]]:
    """Indices grouped by length: at most ``batch_size`` rows and ``token_budget`` padded
    tokens per group (a longer row goes alone)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:  # ascending: row i is the longest of its group so far
        if current and (
            len(current) >= batch_size or (len(current) + 1) * lengths[i] > token_budget
        ):
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


@dataclass(frozen=True)
class TrainedRows:
    """A trained behavior head's rows for one candidate list, on the model's device (fp32):
    scores = hidden @ weight.T + bias (+ each prompt's feature logits)."""

    weight: Any  # [B, d]
    bias: Any  # [B]


class TrainedHeads:
    """Both engines' trained behavior heads (scoring format 4) by adapter, and their rows per
    candidate list as :class:`TrainedRows` on ``device`` (the vocabulary's, a request's
    candidates), at most ``cache_size`` lists."""

    def __init__(self, device: Any, cache_size: int) -> None:
        self.device = device
        self.cache_size = cache_size
        self._heads: dict[str, BehaviorHead] = {}
        self._rows: dict[tuple[str, tuple[str, ...]], TrainedRows] = {}

    @staticmethod
    def load(spec: Any, hidden_size: int) -> BehaviorHead | None:
        """``spec``'s (an AdapterSpec) trained head, checked against its manifest and the
        model's hidden size; None for a label-word adapter."""
        info = spec.manifest.head
        if info is None:
            return None
        names = [e.name for e in spec.manifest.vocabulary]
        return BehaviorHead.load(spec.path, info, names, hidden_size, where=str(spec.path))

    def set(self, adapter: str, head: BehaviorHead | None) -> None:
        """``adapter`` (re)loaded with ``head`` (None: none): its cached rows are dropped."""
        self.drop(adapter)
        if head is not None:
            self._heads[adapter] = head

    def drop(self, adapter: str) -> None:
        self._heads.pop(adapter, None)
        self._rows = {k: v for k, v in self._rows.items() if k[0] != adapter}

    def get(self, adapter: str | None) -> BehaviorHead | None:
        return self._heads.get(adapter) if adapter is not None else None

    def rows(
        self, adapter: str, label: LabelHead, union_weight: Callable[[], np.ndarray]
    ) -> TrainedRows:
        """The rows for ``label``'s names; names outside the vocabulary by the initialisation
        rule, from ``union_weight()`` (the output head's rows of the label union)."""
        import torch

        key = (adapter, label.names)
        rows = self._rows.get(key)
        if rows is not None:
            return rows
        trained = self._heads[adapter]
        new = any(n not in trained.index for n in label.names)
        weight, bias = trained.rows(label.names, label, union_weight() if new else None)
        rows = TrainedRows(
            torch.as_tensor(weight, device=self.device), torch.as_tensor(bias, device=self.device)
        )
        if len(self._rows) >= self.cache_size:
            self._rows.pop(next(iter(self._rows)))
        self._rows[key] = rows
        return rows


def score_prompts(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    heads: Sequence[LabelHead],
    temperatures: Sequence[float],
    pad_id: int,
    batch_size: int = 32,
    trained: Sequence[TrainedRows | None] | None = None,
    extra: Sequence[np.ndarray | None] | None = None,
    forward: Callable[[Any, Any], Any] | None = None,
) -> list[tuple[np.ndarray, float]]:
    """(P over ``heads[i].names``, label_mass) for each prompt, read at its last token.

    ``forward(model, input_ids)`` computes the last hidden states (default
    :func:`hidden_states`; the OpenVINO backend passes its compiled decoder).

    ``trained[i]`` (scoring format 4): the prompt's behaviors are scored by those rows, plus
    ``extra[i]`` (its repeat features' logits) when given; label_mass still comes from the
    label head (the model's own output head). One forward per batch; the full-vocabulary head
    is applied once per prompt (label_mass). Runs under ``torch.no_grad`` and leaves the
    model's train/eval mode as it was.
    """
    import torch

    if not len(prompt_ids) == len(heads) == len(temperatures):
        raise ValueError("score_prompts: prompts, heads and temperatures differ in length")
    trained = trained if trained is not None else [None] * len(prompt_ids)
    extra = extra if extra is not None else [None] * len(prompt_ids)
    out: list[tuple[np.ndarray, float] | None] = [None] * len(prompt_ids)
    device = next(unwrap(model).parameters()).device
    head = unwrap(model).get_output_embeddings()
    lengths = [len(p) for p in prompt_ids]
    with eval_mode(model):
        for group in length_batches(lengths, batch_size, SCORING_TOKEN_BUDGET):
            ids = pad_batch([prompt_ids[i] for i in group], pad_id, device)
            hidden = (forward or hidden_states)(model, ids)
            last = torch.as_tensor([lengths[i] - 1 for i in group], device=device)
            rows = hidden[torch.arange(len(group), device=device), last]
            # The normaliser (label_mass only) from the model-dtype head over the whole
            # vocabulary; the label tokens' logits in fp32, as training computes them.
            lse = torch.logsumexp(head(rows).float(), dim=-1).double().cpu().numpy()
            scored = score_readouts(
                rows,
                lse,
                [heads[i] for i in group],
                [temperatures[i] for i in group],
                [trained[i] for i in group],
                [extra[i] for i in group],
                lambda union: head_rows(model, union),
            )
            for i, result in zip(group, scored, strict=True):
                out[i] = result
    return [r for r in out if r is not None]


def score_readouts(
    rows: Any,
    lse: np.ndarray,
    heads: Sequence[LabelHead],
    temperatures: Sequence[float],
    trained: Sequence[TrainedRows | None],
    extra: Sequence[np.ndarray | None],
    output_rows: Callable[[Any], tuple[Any, Any | None]],
) -> list[tuple[np.ndarray, float]]:
    """(P over ``heads[i].names``, label_mass) from readout hidden states ``rows`` [N, d] and
    the log-normalisers ``lse`` [N] of the full output head at them: what both engines do after
    their forward (the transformers engine's own, vLLM's pooled last hidden state).

    ``output_rows(token_ids)`` gives the output head's (weight, bias) rows of those tokens;
    ``trained[i]``: score by those rows (+ ``extra[i]``), else by the label words."""
    import torch

    out: list[tuple[np.ndarray, float] | None] = [None] * len(heads)
    by_head: dict[tuple[int, int], list[int]] = {}
    for i in range(len(heads)):
        by_head.setdefault((id(heads[i]), id(trained[i])), []).append(i)
    for members in by_head.values():
        label_head, rows_of = heads[members[0]], trained[members[0]]
        union = torch.as_tensor(label_head.union, device=rows.device)
        weight, bias = output_rows(union)
        values = union_logits(rows[members], weight, bias).double().cpu().numpy()
        if rows_of is None:
            for k, i in enumerate(members):
                out[i] = label_head.combine(values[k], float(lse[i]), temperatures[i])
            continue
        scores = (rows[members].float() @ rows_of.weight.T + rows_of.bias).double().cpu().numpy()
        for k, i in enumerate(members):
            score = scores[k] if extra[i] is None else scores[k] + extra[i]
            out[i] = (
                softmax(score, float(temperatures[i])),
                label_head.label_mass(values[k], float(lse[i])),
            )
    return [r for r in out if r is not None]
