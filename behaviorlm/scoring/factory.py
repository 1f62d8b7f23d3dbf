"""Pick and start a scoring engine by name: ``transformers``, ``vllm`` or ``auto``."""

from __future__ import annotations

import importlib.util
from typing import Any, Literal, get_args

from behaviorlm.base_model import BaseModel
from behaviorlm.errors import InputError
from behaviorlm.scoring.base import ScoringEngine
from behaviorlm.scoring.readout import VLLMReadoutKind

EngineKind = Literal["transformers", "vllm", "auto"]
ENGINE_KINDS: tuple[str, ...] = get_args(EngineKind)
VLLMReadout = Literal["auto", VLLMReadoutKind]  # auto: hidden when an adapter has a head
# Options only one engine takes; make_engine drops the other's, so callers pass one dict. vLLM
# applies LoRA per request (nothing to merge) and schedules its own batches.
ENGINE_ONLY_OPTIONS: dict[str, tuple[str, ...]] = {
    "transformers": ("merge", "batch_size", "backend"),
    "vllm": ("readout",),
}


def has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def choose_kind(kind: str, cuda: bool | None = None) -> str:
    """``auto``: vLLM on a CUDA GPU when vLLM is installed, else transformers.

    Without a GPU transformers wins: merged adapters are ~10x faster there than vLLM-CPU's LoRA
    path (see ENGINE-NOTES.md). ``cuda`` overrides the GPU probe (None: probe).
    """
    if kind not in ENGINE_KINDS:
        raise InputError(f"engine: expected one of {', '.join(ENGINE_KINDS)}, got {kind!r}")
    if kind != "auto":
        return kind
    gpu = has_cuda() if cuda is None else cuda
    if gpu and importlib.util.find_spec("vllm") is not None:
        return "vllm"
    return "transformers"


def vllm_readout(setting: str, trained_head: bool) -> str:
    """The vLLM readout for a readout setting: ``auto`` is ``hidden`` (the pooling runner's
    last hidden state) when an adapter to serve has a trained behavior head, which needs it,
    else ``logprobs`` (label-token log-probabilities, the measured label-word path)."""
    if setting not in get_args(VLLMReadout):
        choices = ", ".join(get_args(VLLMReadout))
        raise InputError(f"vllm_readout: expected one of {choices}, got {setting!r}")
    if setting != "auto":
        return setting
    return "hidden" if trained_head else "logprobs"


def make_engine(kind: str, base: BaseModel, **opts: Any) -> ScoringEngine:
    """Start an engine; ``opts`` go to its constructor (dtype, batch_size, merge, ...).

    ``kind`` is already chosen (:func:`choose_kind`) or ``auto``, resolved without a head."""
    chosen = choose_kind(kind)
    for other_only in ENGINE_ONLY_OPTIONS["transformers" if chosen == "vllm" else "vllm"]:
        opts.pop(other_only, None)
    if chosen == "vllm":
        from behaviorlm.scoring.vllm_engine import VLLMEngine

        return VLLMEngine(base, **opts)
    from behaviorlm.scoring.transformers_engine import TransformersEngine

    return TransformersEngine(base, **opts)
