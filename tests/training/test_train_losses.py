"""Batching and losses on the tiny model: left padding changes nothing, the KL term behaves."""

from __future__ import annotations

from typing import Any

import pytest

from behaviorlm.events import Event, Sample
from behaviorlm.prompt import render_answer, render_prompt
from training.batching import Example, collate, encode_examples
from training.config import LoraSettings
from training.losses import (
    answer_nll,
    first_position_logits,
    forward_answer_logits,
    non_target_kl,
)

torch = pytest.importorskip("torch")

BEHAVIORS = ["Coffee Shop", "Gym", "Bus Stop", "Art Museum"]


@pytest.fixture(scope="module")
def lora_model(tiny_model: Any) -> Any:
    from training.trainer import build_lora_model

    model = build_lora_model(
        tiny_model.path, LoraSettings(r=4, alpha=8, dropout=0.0), "float32", 0, torch.device("cpu")
    )
    with torch.no_grad():  # a non-zero update so adapter on/off differ
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    return model.eval()


def _examples(tokenizer: Any) -> list[Example]:
    samples = [
        Sample("u", tuple(Event(b) for b in BEHAVIORS[: 1 + i % 3]) * (1 + i), BEHAVIORS[i % 4])
        for i in range(5)
    ]
    codes = {b: tokenizer.encode(render_answer(b), add_special_tokens=False) for b in BEHAVIORS}
    return encode_examples(tokenizer, samples, codes, {b: i for i, b in enumerate(BEHAVIORS)})


def test_prompt_ids_match_the_scorers_tokenisation(smollm2_tokenizer: Any) -> None:
    sample = Sample("u", (Event("Gym"), Event("Bar")), "Gym")
    (ex,) = _examples(smollm2_tokenizer)[:1]
    one = encode_examples(smollm2_tokenizer, [sample], {"Gym": ex.answer_ids}, {"Gym": 0})[0]
    assert list(one.prompt_ids) == smollm2_tokenizer.encode(render_prompt(sample.history))


def test_left_padded_batch_equals_rows_alone(lora_model: Any, smollm2_tokenizer: Any) -> None:
    examples = _examples(smollm2_tokenizer)
    assert len({e.length for e in examples}) > 1  # the batch really needs padding
    batch = collate(examples, pad_id=0)
    assert batch.padding > 0
    with torch.no_grad():
        logits = forward_answer_logits(lora_model, batch)
        for r, ex in enumerate(examples):
            alone = collate([ex], pad_id=0)
            assert alone.padding == 0 and alone.attention_mask is None
            row = forward_answer_logits(lora_model, alone)[0]
            n = len(ex.answer_ids)
            torch.testing.assert_close(logits[r, -n:], row[-n:], atol=2e-4, rtol=1e-4)
        # the loss reads exactly the answer tokens
        nll = answer_nll(logits, batch)
        manual = []
        for r, ex in enumerate(examples):
            n = len(ex.answer_ids)
            lp = torch.log_softmax(logits[r, -n:], dim=-1)
            manual += [-lp[k, t] for k, t in enumerate(ex.answer_ids)]
        torch.testing.assert_close(nll, torch.stack(manual).mean(), atol=1e-5, rtol=1e-5)


def test_kl_is_zero_against_itself_and_ignores_the_target(
    lora_model: Any, smollm2_tokenizer: Any
) -> None:
    examples = _examples(smollm2_tokenizer)
    batch = collate(examples, pad_id=0)
    root = torch.tensor(sorted({e.answer_ids[0] for e in examples}))
    with torch.no_grad():
        adapted = first_position_logits(forward_answer_logits(lora_model, batch), batch, root)
        with lora_model.disable_adapter():
            base = first_position_logits(forward_answer_logits(lora_model, batch), batch, root)
    assert float(non_target_kl(base, base, batch.first_token, root)) == pytest.approx(0, abs=1e-6)
    kl = float(non_target_kl(adapted, base, batch.first_token, root))
    assert kl > 1e-4
    # raising the target's own logit in the adapted model leaves the term unchanged
    bumped = adapted.clone()
    for r, tok in enumerate(batch.first_token.tolist()):
        bumped[r, root.tolist().index(tok)] += 5.0
    again = float(non_target_kl(bumped, base, batch.first_token, root))
    assert again == pytest.approx(kl, rel=1e-5)


def test_kl_gradient_reaches_only_lora(lora_model: Any, smollm2_tokenizer: Any) -> None:
    examples = _examples(smollm2_tokenizer)
    batch = collate(examples, pad_id=0)
    root = torch.tensor(sorted({e.answer_ids[0] for e in examples}))
    lora_model.train()
    try:
        logits = forward_answer_logits(lora_model, batch)
        with torch.no_grad(), lora_model.disable_adapter():
            base = forward_answer_logits(lora_model, batch)
        kl = non_target_kl(
            first_position_logits(logits, batch, root),
            first_position_logits(base, batch, root),
            batch.first_token,
            root,
        )
        (answer_nll(logits, batch) + kl).backward()
        grads = {n for n, p in lora_model.named_parameters() if p.grad is not None}
        assert grads and all("lora_" in n for n in grads)
    finally:
        lora_model.zero_grad(set_to_none=True)
        lora_model.eval()


def test_pad_safe_mask_leaves_no_query_without_a_key() -> None:
    from training.batching import pad_safe_mask

    mask2d = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    allowed = pad_safe_mask(mask2d, torch.float32)[:, 0] == 0  # [B, query, key]
    assert bool(allowed.any(dim=-1).all())  # fully masked rows give NaN on some GPU kernels
    # pads see themselves only; real tokens see the real tokens up to themselves
    assert allowed[0].tolist() == [
        [True, False, False, False],
        [False, True, False, False],
        [False, False, True, False],
        [False, False, True, True],
    ]
    assert allowed[1].tolist() == torch.tril(torch.ones(4, 4, dtype=torch.bool)).tolist()


def test_bf16_base_trains_fp32_lora_through_bf16_matmuls(
    tiny_model: Any, smollm2_tokenizer: Any
) -> None:
    """On a bf16 base the LoRA matmuls run in bf16 (autocast) and their gradients stay fp32.

    Reference: peft's own path (inputs cast up to the fp32 LoRA weights), with the output head
    applied to every position; the training forward must give the same logits at the answer
    positions and the same LoRA gradients, up to bf16 rounding.
    """
    from training.trainer import build_lora_model

    model = build_lora_model(
        tiny_model.path, LoraSettings(r=4, alpha=8, dropout=0.0), "bfloat16", 0, torch.device("cpu")
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert lora and all(p.dtype == torch.float32 for p in lora.values())
    batch = collate(_examples(smollm2_tokenizer), pad_id=0)

    logits = forward_answer_logits(model, batch)
    answer_nll(logits, batch).backward()
    ours = {n: p.grad.clone() for n, p in lora.items()}
    model.zero_grad(set_to_none=True)

    from training.batching import pad_safe_mask

    full = model(
        input_ids=batch.input_ids,
        attention_mask=pad_safe_mask(batch.attention_mask, torch.bfloat16),
        position_ids=batch.position_ids,
        use_cache=False,
    ).logits[:, -batch.answer_width :]
    answer_nll(full, batch).backward()
    assert logits.shape == full.shape and logits.is_contiguous()
    scale = full.float().abs().max()
    assert (logits.float() - full.float()).abs().max() <= 0.05 * scale
    for name, grad in ours.items():
        ref = lora[name].grad
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all()
        assert torch.nn.functional.cosine_similarity(grad.flatten(), ref.flatten(), dim=0) > 0.98
    # Outside training the adapter still works on bf16 inputs (peft's casting is back on).
    with torch.no_grad():
        model(input_ids=batch.input_ids[:1, -4:], use_cache=False)


def test_output_head_gets_a_contiguous_input(lora_model: Any, smollm2_tokenizer: Any) -> None:
    """A non-contiguous slice makes the head a batched matmul that copies its whole weight per
    row (a quarter of a CPU step): the training forward must hand it a contiguous tensor."""
    seen: list[Any] = []
    head = lora_model.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        batch = collate(_examples(smollm2_tokenizer), pad_id=0)
        with torch.no_grad():
            forward_answer_logits(lora_model, batch)
    finally:
        handle.remove()
    (hidden,) = seen
    assert hidden.shape[1] == batch.answer_width and hidden.is_contiguous()
