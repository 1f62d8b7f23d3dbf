"""Helpers that build real (small, random) artefacts for tests and examples.

Nothing here is a fake: ``make_random_adapter`` writes a genuine peft LoRA adapter with a
genuine manifest for a given base model, just with random instead of trained weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from behaviorlm.base_model import BaseModel
from behaviorlm.manifest import AdapterManifest
from behaviorlm.prompt import PieceEncoder
from behaviorlm.vocabulary import Vocabulary

DEFAULT_TEST_BEHAVIORS: Mapping[str, int] = {
    "Coffee Shop": 120,
    "Chinese Restaurant": 80,
    "Chinese Breakfast Place": 5,
    "Shopping Mall": 60,
    "Bus Stop": 40,
    "Gym": 30,
    "Bar": 20,
    "Office": 3,
    "Malay Restaurant": 2,
    "Art Museum": 1,
}


def make_random_adapter(
    base: BaseModel,
    out_dir: Path,
    vocabulary: Vocabulary | None = None,
    seed: int = 0,
    rank: int = 4,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    name: str = "test-adapter",
    version: str = "1",
    temperature: float = 1.0,
    scale: float = 0.3,
    history_events: int | None = None,
) -> AdapterManifest:
    """Save a LoRA adapter with random A and B (so it changes the model) plus its manifest."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from behaviorlm.manifest import Calibration

    vocabulary = vocabulary or Vocabulary.from_counts(DEFAULT_TEST_BEHAVIORS)
    tokenizer = AutoTokenizer.from_pretrained(str(base.path))
    model = AutoModelForCausalLM.from_pretrained(str(base.path), dtype=torch.float32)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=list(target_modules), lora_dropout=0.0
    )
    peft_model: Any = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, param in peft_model.named_parameters():
            if "lora_" in pname:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out_dir))
    encoder = PieceEncoder(tokenizer)
    manifest = AdapterManifest.for_vocabulary(
        vocabulary,
        [encoder.label_tokens(n) for n in vocabulary.names],
        name=name,
        version=version,
        stage="stage2",
        strategy="random-test",
        base_model=base.ref,
        calibration=Calibration(temperature=temperature),
        history_events=history_events,
        lora={"r": rank, "alpha": 2 * rank, "target_modules": list(target_modules)},
    )
    manifest.save(out_dir)
    return manifest
