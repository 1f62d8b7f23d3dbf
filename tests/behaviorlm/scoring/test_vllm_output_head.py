"""The vLLM engine's output rows for the hidden readout, read from the checkpoint's files (no vLLM
needed): the same tensor transformers builds, for a tied, an untied and a non-safetensors model."""

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


def saved_copy(base: BaseModel, out: Path, tie: bool, safetensors: bool) -> BaseModel:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base.path), dtype=torch.float32)
    if not tie:
        model.config.tie_word_embeddings = False
        head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=False)
        torch.nn.init.normal_(head.weight, std=0.3)
        model.lm_head = head
    model.save_pretrained(str(out), safe_serialization=safetensors)
    return replace(base, path=out)


def test_tied_model_reads_the_input_embedding(tiny_model: Any) -> None:
    weight, bias = output_head(tiny_model)
    assert bias is None
    assert weight.dtype == torch.float32
    assert torch.equal(weight, reference_head(tiny_model))


@pytest.mark.parametrize("safetensors", [True, False], ids=["safetensors", "bin-fallback"])
def test_untied_model_reads_its_lm_head(tiny_model: Any, tmp_path: Path, safetensors: bool) -> None:
    untied = saved_copy(tiny_model, tmp_path / "untied", tie=False, safetensors=safetensors)
    weight, _ = output_head(untied)
    expected = reference_head(untied)
    assert torch.equal(weight, expected)
    # the untied head is not the input embedding (else this test could not tell them apart)
    assert not torch.equal(expected, output_head(tiny_model)[0])
