"""The training losses: answer-token cross-entropy and the knowledge-preservation KL term.

Knowledge preservation (stage 1). At the answer's first position the model chooses among the
vocabulary's first answer tokens (the answer trie's root children). Stage 1 trains on anchor
targets only, which would teach the model that only anchors exist. The KL term keeps the
adapted model's distribution over the first tokens of the *non-target* behaviors (the root
children minus the target's own first token, renormalised) close to the frozen base model's
distribution there: KL(base || adapted). The target's own token is excluded, so the term does
not fight the cross-entropy; it only preserves how the base model ranks the other behaviors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from training.batching import Batch, pad_safe_mask


def forward_answer_logits(model: Any, batch: Batch) -> Any:
    """Logits [B, A, V] at the positions that predict the (right-aligned) answer tokens."""
    import torch

    inner = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    dtype = inner.get_input_embeddings().weight.dtype
    mask = batch.attention_mask
    if mask is not None:
        mask = pad_safe_mask(mask, dtype)
    # Positions as an index tensor, not ``logits_to_keep=width``: the int form slices the hidden
    # states into a non-contiguous view, and a linear layer on that becomes a batched matmul
    # with the [vocab x hidden] weight copied once per row (measured: a quarter of a CPU step).
    length = batch.input_ids.shape[1]
    keep = torch.arange(length - batch.answer_width, length, device=batch.input_ids.device)
    with _low_precision_lora(inner, dtype, batch.input_ids.device):
        out = model(
            input_ids=batch.input_ids,
            attention_mask=mask,
            position_ids=batch.position_ids,
            logits_to_keep=keep,
            use_cache=False,
        )
    return out.logits


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


def answer_nll(logits: Any, batch: Batch) -> Any:
    """Mean cross-entropy per answer token (full-vocabulary softmax, as the model generates)."""
    import torch

    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        batch.labels.reshape(-1),
        ignore_index=-100,
        reduction="mean",
    )


def first_position_logits(logits: Any, batch: Batch, root_children: Any) -> Any:
    """[B, R] logits of the trie's root children at each row's first answer position."""
    import torch

    rows = torch.arange(logits.shape[0], device=logits.device)
    first = logits[rows, batch.first_answer]  # [B, V]
    return first.float().index_select(-1, root_children)


def non_target_kl(adapted_root: Any, base_root: Any, first_token: Any, root_children: Any) -> Any:
    """Mean over rows of KL(base || adapted) over the root children other than the target's.

    Both distributions are renormalised over the same non-target set. Rows whose target's
    first token is the only root child contribute 0.
    """
    import torch

    keep = root_children.unsqueeze(0) != first_token.unsqueeze(1)  # [B, R]
    neg = torch.finfo(torch.float32).min
    log_q = torch.log_softmax(adapted_root.masked_fill(~keep, neg), dim=-1)
    log_p = torch.log_softmax(base_root.masked_fill(~keep, neg), dim=-1)
    p = log_p.exp() * keep
    kl = (p * (log_p - log_q)).masked_fill(~keep, 0.0).sum(dim=-1)
    return kl.mean()
