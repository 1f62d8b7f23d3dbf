"""Packed batches and losses on the tiny model: padding changes nothing, every readout equals the
served prompt's prediction, the weighted cross-entropy and the KL term behave."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest

from behaviorlm.events import Event
from behaviorlm.labels import LabelHead
from behaviorlm.prompt import PieceEncoder, render_prompt
from behaviorlm.training.batching import collate
from behaviorlm.training.config import LoraSettings
from behaviorlm.training.losses import HeadTensors, non_target_kl, readout_scores, weighted_ce
from behaviorlm.training.packing import PackedRows, RowPlan

torch = pytest.importorskip("torch")

BEHAVIORS = ["Coffee Shop", "Gym", "Bus Stop", "Art Museum"]
T0 = datetime(2024, 3, 4, 7, 0)


class _Table:
    """The EventTable interface over a list of events (one user)."""

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.users = np.zeros(len(events), dtype=object)
        self.behaviors = np.asarray([e.behavior for e in events], dtype=object)

    def time(self, row: int) -> datetime | None:
        return self.events[row].timestamp

    def context(self, row: int) -> dict[str, str]:
        return dict(self.events[row].context)

    def event(self, row: int) -> Event:
        return self.events[row]


def _events(n: int = 14) -> list[Event]:
    return [
        Event(BEHAVIORS[(i * 3) % 4], T0 + timedelta(hours=5 * i), {"place": "x" if i % 2 else "y"})
        for i in range(n)
    ]


def _packed(encoder: PieceEncoder) -> tuple[PackedRows, np.ndarray, _Table]:
    from behaviorlm.training.packing import Readouts, encode_rows

    table = _Table(_events())
    rows = np.arange(1, 14)
    labels = np.asarray([BEHAVIORS.index(table.events[r].behavior) for r in rows])
    readouts = Readouts(rows, np.maximum(rows - 3, 0), labels)
    # rows of different lengths: the batch must pad
    plans = [
        RowPlan(0, np.arange(0, 6)),
        RowPlan(4, np.arange(6, 9)),
        RowPlan(7, np.arange(9, 13)),
    ]
    return encode_rows(encoder, table, readouts, plans), labels, table  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def lora_model(tiny_model: Any) -> Any:
    from behaviorlm.training.tuning import build_lora_model

    model = build_lora_model(
        tiny_model.path, LoraSettings(r=4, alpha=8, dropout=0.0), "float32", 0, torch.device("cpu")
    )
    with torch.no_grad():  # a non-zero update so adapter on/off differ
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def encoder(smollm2_tokenizer: Any) -> PieceEncoder:
    return PieceEncoder(smollm2_tokenizer)


def _head(model: Any, encoder: PieceEncoder) -> HeadTensors:
    head = LabelHead.from_encoder(encoder, BEHAVIORS)
    return HeadTensors.of(model, head, torch.device("cpu"), [1] * len(BEHAVIORS))


def test_padded_packed_batch_equals_each_served_prompt(
    lora_model: Any, encoder: PieceEncoder, tiny_model: Any
) -> None:
    """Each readout of a padded packed batch gives the distribution the engine gives the
    served prompt of that event (same history), so training optimises what is served."""
    from behaviorlm.scoring.readout import score_prompts

    packed, labels, table = _packed(encoder)
    batch = collate(packed, [0, 1, 2], labels, None, pad_id=0)
    assert batch.padding > 0 and batch.readouts == 13
    head = _head(lora_model, encoder)
    with torch.no_grad():
        probs = torch.softmax(readout_scores(lora_model, batch, head), dim=-1).double().numpy()
    label_head = LabelHead.from_encoder(encoder, BEHAVIORS)
    starts = {0: 0, 1: 4, 2: 7}
    prompts = []
    for b, r in enumerate(batch.readout_row.tolist()):
        target = int(batch.readout_index[b]) + 1  # event row of the readout
        history = [table.event(e) for e in range(starts[r], target)]
        served = render_prompt(history, table.time(target), table.context(target))
        prompts.append(encoder.encode(served))
    n = len(prompts)
    scored = score_prompts(lora_model, prompts, [label_head] * n, [1.0] * n, pad_id=0)
    for b, (p, _) in enumerate(scored):
        np.testing.assert_allclose(probs[b], p, atol=2e-5)


def test_weighted_ce_reads_only_weighted_readouts(lora_model: Any, encoder: PieceEncoder) -> None:
    packed, labels, _ = _packed(encoder)
    weights = np.zeros(len(labels))
    weights[[0, 5, 9]] = [2.0, 1.0, 0.5]
    batch = collate(packed, [0, 1, 2], labels, weights, pad_id=0)
    assert batch.readout_index.tolist() == [0, 5, 9]  # zero-weight readouts are left out
    head = _head(lora_model, encoder)
    with torch.no_grad():
        scores = readout_scores(lora_model, batch, head)
        loss = weighted_ce(scores, batch, denominator=3.0)
        lp = torch.log_softmax(scores, dim=-1)
        manual = -(2.0 * lp[0, labels[0]] + 1.0 * lp[1, labels[5]] + 0.5 * lp[2, labels[9]]) / 3
    torch.testing.assert_close(loss, manual, atol=1e-5, rtol=1e-5)


def test_kl_is_zero_against_itself_and_ignores_the_target(
    lora_model: Any, encoder: PieceEncoder
) -> None:
    packed, labels, _ = _packed(encoder)
    batch = collate(packed, [0, 1, 2], labels, None, pad_id=0)
    head = _head(lora_model, encoder)
    with torch.no_grad():
        adapted = readout_scores(lora_model, batch, head)
        with lora_model.disable_adapter():
            base = readout_scores(lora_model, batch, head)
    n = float(batch.readouts)
    assert float(non_target_kl(base, base, batch, n)) == pytest.approx(0, abs=1e-6)
    kl = float(non_target_kl(adapted, base, batch, n))
    assert kl > 1e-4
    # raising the target's own score in the adapted model leaves the term unchanged
    bumped = adapted.clone()
    bumped[torch.arange(batch.readouts), batch.labels] += 5.0
    assert float(non_target_kl(bumped, base, batch, n)) == pytest.approx(kl, rel=1e-5)


def test_gradient_reaches_only_lora(lora_model: Any, encoder: PieceEncoder) -> None:
    packed, labels, _ = _packed(encoder)
    batch = collate(packed, [0, 2], labels, None, pad_id=0)
    head = _head(lora_model, encoder)
    lora_model.train()
    try:
        scores = readout_scores(lora_model, batch, head)
        with torch.no_grad(), lora_model.disable_adapter():
            base = readout_scores(lora_model, batch, head)
        n = float(batch.readouts)
        (weighted_ce(scores, batch, n) + non_target_kl(scores, base, batch, n)).backward()
        grads = {n for n, p in lora_model.named_parameters() if p.grad is not None}
        assert grads and all("lora_" in n for n in grads)
    finally:
        lora_model.zero_grad(set_to_none=True)
        lora_model.eval()


def test_bf16_base_trains_fp32_lora_through_bf16_matmuls(
    tiny_model: Any, encoder: PieceEncoder
) -> None:
    """On a bf16 base the LoRA matmuls run in bf16 (autocast) and their gradients stay fp32.

    Reference: peft's own path (inputs cast up to the fp32 LoRA weights, no autocast); the
    training forward must give the same scores and LoRA gradients up to bf16 rounding.
    """
    from behaviorlm.training.tuning import build_lora_model

    model = build_lora_model(
        tiny_model.path, LoraSettings(r=4, alpha=8, dropout=0.0), "bfloat16", 0, torch.device("cpu")
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert lora and all(p.dtype == torch.float32 for p in lora.values())
    packed, labels, _ = _packed(encoder)
    batch = collate(packed, [0, 1, 2], labels, None, pad_id=0)
    head = _head(model, encoder)

    scores = readout_scores(model, batch, head)
    assert scores.dtype == torch.float32
    weighted_ce(scores, batch, float(batch.readouts)).backward()
    ours = {n: p.grad.clone() for n, p in lora.items()}
    model.zero_grad(set_to_none=True)

    from behaviorlm.scoring.readout import hidden_states, label_scores

    hidden = hidden_states(model, batch.input_ids)
    ref_scores = label_scores(
        hidden[batch.readout_row, batch.readout_col], head.weight, head.bias, head.matrix
    )
    weighted_ce(ref_scores, batch, float(batch.readouts)).backward()
    assert (scores - ref_scores).abs().max() <= 0.05 * ref_scores.abs().max()
    for name, grad in ours.items():
        ref = lora[name].grad
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all()
        assert torch.nn.functional.cosine_similarity(grad.flatten(), ref.flatten(), dim=0) > 0.98


def test_logit_adjusted_ce_is_the_balanced_softmax_at_tau_1() -> None:
    """CE on scores + tau*log prior; at tau = 1 it is Ren et al.'s balanced softmax, and
    the loss of a tail target rises less than an anchor's falls when the prior is skewed."""
    from types import SimpleNamespace

    from behaviorlm.training.losses import log_prior

    counts = [900, 90, 9, 0]
    prior = log_prior(counts)
    shares = (torch.tensor(counts, dtype=torch.float64) + 1) / (sum(counts) + 4)
    assert torch.allclose(prior.double(), shares.log(), atol=1e-6)
    scores = torch.tensor([[0.5, 0.2, 0.1, 0.0], [0.1, 0.3, 0.9, 0.2]])
    batch: Any = SimpleNamespace(labels=torch.tensor([0, 2]), weights=torch.tensor([1.0, 1.0]))
    plain = weighted_ce(scores, batch, 2.0)
    assert torch.allclose(plain, weighted_ce(scores, batch, 2.0, prior, tau=0.0))
    adjusted = weighted_ce(scores, batch, 2.0, prior, tau=1.0)
    # balanced softmax by hand: p(y) ∝ prior_y * exp(s_y)
    w = shares.float() * scores.exp()
    by_hand = -(w[[0, 1], [0, 2]] / w.sum(dim=1)).log().mean()
    assert torch.allclose(adjusted, by_hand, atol=1e-5)
    # the anchor target (0) gets an easier loss, the tail target (2) a harder one
    each = [weighted_ce(scores[i : i + 1], _one(batch, i), 1.0, prior, 1.0) for i in (0, 1)]
    plain_each = [weighted_ce(scores[i : i + 1], _one(batch, i), 1.0) for i in (0, 1)]
    assert each[0] < plain_each[0] and each[1] > plain_each[1]


def _one(batch: Any, i: int) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(labels=batch.labels[i : i + 1], weights=batch.weights[i : i + 1])
