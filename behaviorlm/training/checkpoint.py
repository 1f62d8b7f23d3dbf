"""Mid-stage checkpoints: LoRA (and trained head) weights, optimizer, lr schedule position,
RNG and step.

The batch schedule is a pure function of the seed, so the step number is the whole sampler
position. A checkpoint is one file written to a temporary name and renamed over the old one:
a kill at any moment leaves either the previous or the new checkpoint, never half of one.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT_DIR = "checkpoints"


def checkpoint_path(run_dir: Path, stage: str) -> Path:
    return run_dir / CHECKPOINT_DIR / f"{stage}.pt"


def save_checkpoint(
    path: Path,
    *,
    step: int,
    model: Any,
    optimizer: Any,
    log: list[dict[str, float]],
    head: Any = None,
) -> None:
    import torch
    from peft import get_peft_model_state_dict

    state = {
        "step": step,
        "lora": {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()},
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
        "log": log,
        "head": head.state_dict() if head is not None else None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(
    path: Path, *, model: Any, optimizer: Any, head: Any = None
) -> tuple[int, list[dict[str, float]]]:
    """Restore everything into ``model`` / ``optimizer`` and the RNGs; returns (step, log)."""
    import torch
    from peft import set_peft_model_state_dict

    state = torch.load(path, map_location="cpu", weights_only=False)
    result = set_peft_model_state_dict(model, state["lora"])
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise RuntimeError(f"{path}: checkpoint has unexpected LoRA keys {unexpected[:3]}")
    if (head is None) != (state.get("head") is None):
        raise RuntimeError(f"{path}: checkpoint and run disagree on a trained behavior head")
    if head is not None:
        head.load_state_dict(state["head"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    np.random.set_state(state["numpy_rng"])
    random.setstate(state["python_rng"])
    return int(state["step"]), list(state["log"])
