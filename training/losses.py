"""The training losses on the label-word head: weighted cross-entropy over behaviors at the
readouts, and the knowledge-preservation KL term.

Cross-entropy: at each readout the head's scores (``behaviorlm.labels``: mean logit of a
name's tokens) are a distribution over the vocabulary's behaviors; the loss is its
cross-entropy with the true behavior, times the readout's weight (the stage's selection: 0/1
for stage 1's anchors, class-balancing inclusion weights for stage 2), summed and divided by
the batch's readouts. Weights have mean 1 over a stage's readouts, so a step's loss is an
unbiased estimate of the selected subset's mean loss with every readout in every forward.

Long-tail loss (``logit_adjust_tau``, any stage): the cross-entropy on ``scores + tau * log
prior`` (Menon et al. 2021, "Long-tail learning via logit adjustment"; tau = 1 is Ren et al.'s
balanced softmax). The KL term and the served scores use the unadjusted scores.

Knowledge preservation (stage 1): stage 1 trains on anchor targets only, which would teach the
model that only anchors exist. The KL term keeps the adapted model's distribution over the
*non-target* behaviors (all but the readout's true one, renormalised) close to the frozen base
model's at the same readout: KL(base || adapted). The target is excluded, so the term does not
fight the cross-entropy; it preserves how the base model ranks every other behavior, tails
included (the zero-shot base model copies names from the history: that is the tail ability).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from behaviorlm.labels import LabelHead
from behaviorlm.scoring.readout import head_rows, hidden_states, label_scores
from training.batching import Batch


@dataclass(frozen=True)
class HeadTensors:
    """The label-word head on a device: output-head rows of the label tokens, averaging matrix."""

    weight: Any  # [U, d]
    bias: Any | None  # [U]
    matrix: Any  # [behaviors, U] fp32
    log_prior: Any  # [behaviors] fp32: log training share, add-one smoothed

    @classmethod
    def of(
        cls, model: Any, head: LabelHead, device: Any, train_counts: Sequence[int]
    ) -> HeadTensors:
        import torch

        union = torch.as_tensor(head.union, device=device)
        weight, bias = head_rows(model, union)
        matrix = torch.as_tensor(head.matrix, dtype=torch.float32, device=device)
        return cls(weight, bias, matrix, log_prior(train_counts, device))


def log_prior(train_counts: Sequence[int], device: Any = None) -> Any:
    """log((count + 1) / sum): the training prior of the logit-adjusted loss (the smoothing
    keeps behaviors without training targets finite, as the evaluation's prior does)."""
    import torch

    counts = torch.as_tensor(list(train_counts), dtype=torch.float64) + 1.0
    return torch.log(counts / counts.sum()).to(torch.float32).to(device)


def readout_scores(model: Any, batch: Batch, head: HeadTensors) -> Any:
    """[N, behaviors] fp32 scores at the batch's readouts (LoRA in low precision on bf16; the
    head itself in fp32 outside autocast, as the engines compute it)."""
    inner = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    dtype = inner.get_input_embeddings().weight.dtype
    with _low_precision_lora(inner, dtype, batch.input_ids.device):
        hidden = hidden_states(model, batch.input_ids)
        rows = hidden[batch.readout_row, batch.readout_col]
    return label_scores(rows, head.weight, head.bias, head.matrix)


@contextmanager
def _low_precision_lora(model: Any, dtype: Any, device: Any) -> Iterator[None]:
    """On a bf16 base, run the (fp32) LoRA layers' matmuls in bf16 as well.

    peft casts each LoRA layer's input up to the weights' fp32 and the sum back down: two copies
    of an activation-sized tensor per layer, forward and backward (about a tenth of a CPU step).
    Under autocast the small LoRA weights are cast instead and their gradients still arrive in
    fp32 (the optimizer keeps fp32 weights: the usual mixed-precision recipe).
    """
    import torch

    if dtype != torch.bfloat16:
        yield
        return
    from peft.helpers import disable_input_dtype_casting

    with torch.autocast(device.type, dtype=dtype), disable_input_dtype_casting(model):
        yield


def weighted_ce(
    scores: Any, batch: Batch, denominator: float, log_prior: Any = None, tau: float = 0.0
) -> Any:
    """Sum of weight x cross-entropy over the readouts, divided by ``denominator``.

    ``tau`` > 0: the logit-adjusted cross-entropy, on ``scores + tau * log_prior``. Its
    minimiser is the balanced-error classifier: the model's own scores learn
    p(y | x) / p(y)^tau, so a tail behavior needs no frequency to be ranked first.
    """
    import torch

    if tau > 0:
        scores = scores + tau * log_prior
    ce = torch.nn.functional.cross_entropy(scores, batch.labels, reduction="none")
    return (batch.weights * ce).sum() / denominator


def non_target_kl(scores: Any, base_scores: Any, batch: Batch, denominator: float) -> Any:
    """Weighted KL(base || adapted) over the behaviors other than each readout's target."""
    import torch

    target = torch.nn.functional.one_hot(batch.labels, scores.shape[-1]).bool()
    neg = torch.finfo(torch.float32).min
    log_q = torch.log_softmax(scores.masked_fill(target, neg), dim=-1)
    log_p = torch.log_softmax(base_scores.masked_fill(target, neg), dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).masked_fill(target, 0.0).sum(dim=-1)
    return (batch.weights * kl).sum() / denominator
