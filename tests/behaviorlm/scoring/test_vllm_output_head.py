"""The vLLM engine's output rows for the hidden readout, read from the checkpoint's files (no vLLM
needed): the same tensor transformers builds, for a tied, an untied, a sharded and a
non-safetensors checkpoint; the safetensors cases never build the model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from behaviorlm.base_model import BaseModel
from behaviorlm.scoring.vllm_engine import output_head


def reference_head(base: BaseModel) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base.path), dtype=torch.float32)
    return model.get_output_embeddings().weight.detach()


def untied_copy(base: BaseModel, out: Path, **save: Any) -> BaseModel:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base.path), dtype=torch.float32)
    model.config.tie_word_embeddings = False
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=False)
    torch.nn.init.normal_(head.weight, std=0.3)
    model.lm_head = head
    model.save_pretrained(str(out), **save)
    return replace(base, path=out)


@pytest.fixture()
def no_model_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails the test if output_head builds the model (the fast path must not)."""
    from transformers import AutoModelForCausalLM

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("output_head built the model")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)


def test_tied_model_reads_the_input_embedding(tiny_model: Any, request: Any) -> None:
    expected = reference_head(tiny_model)
    request.getfixturevalue("no_model_build")
    weight, bias = output_head(tiny_model)
    assert bias is None and weight.dtype == torch.float32
    assert torch.equal(weight, expected)


@pytest.mark.parametrize("shards", [None, "200KB"], ids=["one-file", "sharded"])
def test_untied_model_reads_its_lm_head(
    tiny_model: Any, tmp_path: Path, request: Any, shards: str | None
) -> None:
    save = {"max_shard_size": shards} if shards else {}
    untied = untied_copy(tiny_model, tmp_path / "untied", **save)
    assert (untied.path / "model.safetensors.index.json").is_file() == bool(shards)
    expected = reference_head(untied)
    # the untied head is not the input embedding (else this test could not tell them apart)
    assert not torch.equal(expected, reference_head(tiny_model))
    request.getfixturevalue("no_model_build")
    weight, _ = output_head(untied)
    assert torch.equal(weight, expected)


def test_checkpoint_without_safetensors_falls_back_to_transformers(
    tiny_model: Any, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    untied = untied_copy(tiny_model, tmp_path / "bin")
    state = load_file(str(untied.path / "model.safetensors"))
    torch.save(state, untied.path / "pytorch_model.bin")
    (untied.path / "model.safetensors").unlink()
    weight, _ = output_head(untied)
    assert torch.equal(weight, state["lm_head.weight"].float())
