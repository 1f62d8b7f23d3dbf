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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from behaviorlm.head import BehaviorHead, init_rows
from behaviorlm.labels import LabelHead
from behaviorlm.repeats import FEATURES
from behaviorlm.scoring.readout import head_rows, hidden_states, label_scores
from behaviorlm.training.batching import Batch
from behaviorlm.training.features import ReadoutFeatures
from behaviorlm.training.tuning import low_precision


@dataclass(frozen=True)
class HeadTensors:
    """The readout on a device: the label-word head (output-head rows of the label tokens,
    averaging matrix), and when training one, the trained behavior head and the targets'
    repeat features."""

    weight: Any  # [U, d]
    bias: Any | None  # [U]
    matrix: Any  # [behaviors, U] fp32
    log_prior: Any  # [behaviors] fp32: log training share, add-one smoothed
    trained: TrainedHead | None = None
    features: ReadoutFeatures | None = None

    @classmethod
    def of(
        cls,
        model: Any,
        head: LabelHead,
        device: Any,
        train_counts: Sequence[int],
        trained: bool = False,
        features: ReadoutFeatures | None = None,
    ) -> HeadTensors:
        import torch

        union = torch.as_tensor(head.union, device=device)
        weight, bias = head_rows(model, union)
        matrix = torch.as_tensor(head.matrix, dtype=torch.float32, device=device)
        module = None
        if trained:
            w0, b0 = init_rows(
                head,
                weight.float().cpu().numpy(),
                None if bias is None else bias.float().cpu().numpy(),
            )
            module = TrainedHead(w0, b0, len(FEATURES) if features is not None else 0, device)
        return cls(weight, bias, matrix, log_prior(train_counts, device), module, features)


class TrainedHead:
    """The behavior head's trainable weights (fp32 torch Parameters): rows W, bias and the
    repeat-feature weights. A plain holder, not an nn.Module, so importing this file needs no
    torch (``behaviorlm train --help``)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, features: int, device: Any) -> None:
        import torch

        def param(value: Any) -> Any:
            return torch.nn.Parameter(torch.as_tensor(value, dtype=torch.float32, device=device))

        self.weight = param(np.array(weight, dtype=np.float32))
        self.bias = param(np.array(bias, dtype=np.float32))
        self.feature_weights = param(np.zeros(features, dtype=np.float32))

    def parameters(self) -> list[Any]:
        return [self.weight, self.bias, self.feature_weights]

    def state_dict(self) -> dict[str, Any]:
        return {
            "weight": self.weight.detach().cpu().clone(),
            "bias": self.bias.detach().cpu().clone(),
            "feature_weights": self.feature_weights.detach().cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import torch

        with torch.no_grad():
            for name, value in state.items():
                getattr(self, name).copy_(value)

    def scores(self, rows: Any, features: ReadoutFeatures | None, readout_index: Any) -> Any:
        """[N, V] fp32 scores of hidden ``rows`` [N, d] (targets ``readout_index``)."""
        out = rows.float() @ self.weight.T + self.bias
        if features is not None and self.feature_weights.numel():
            out = out + features.logits(readout_index, self.feature_weights, out.shape[-1])
        return out

    def export(self, names: Sequence[str], repeat_window: int) -> BehaviorHead:
        """The head as the engines load it (numpy)."""
        return BehaviorHead(
            tuple(names),
            self.weight.detach().float().cpu().numpy(),
            self.bias.detach().float().cpu().numpy(),
            self.feature_weights.detach().float().cpu().numpy(),
            repeat_window if self.feature_weights.numel() else 0,
        )

    def restore(self, head: BehaviorHead) -> None:
        """Load a saved head's weights (a finished stage, on resume)."""
        import torch

        state = {"weight": head.weight, "bias": head.bias}
        if self.feature_weights.numel():
            state["feature_weights"] = head.feature_weights
        self.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})


def log_prior(train_counts: Sequence[int], device: Any = None) -> Any:
    """log((count + 1) / sum): the training prior of the logit-adjusted loss (the smoothing
    keeps behaviors without training targets finite, as the evaluation's prior does)."""
    import torch

    counts = torch.as_tensor(list(train_counts), dtype=torch.float64) + 1.0
    return torch.log(counts / counts.sum()).to(torch.float32).to(device)


def readout_scores(model: Any, batch: Batch, head: HeadTensors, label_words: bool = False) -> Any:
    """[N, behaviors] fp32 scores at the batch's readouts (the forward in low precision on bf16; the
    head itself in fp32 outside autocast, as the engines compute it). ``label_words``: the
    label-word head even when a trained one exists (the KL term's base distribution)."""
    with low_precision(model, batch.input_ids.device):
        hidden = hidden_states(model, batch.input_ids)
        rows = hidden[batch.readout_row, batch.readout_col]
    if head.trained is not None and not label_words:
        return head.trained.scores(rows, head.features, batch.readout_index)
    return label_scores(rows, head.weight, head.bias, head.matrix)


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
