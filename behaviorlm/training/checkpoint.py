"""Mid-stage checkpoints: the trained weights (LoRA, or all of them: ``tuning.py``), the
trained head, optimizer, lr schedule position, RNG and step.

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

    from behaviorlm.training.tuning import trainable_state

    state = {
        "step": step,
        "lora": trainable_state(model),  # the key predates full tuning: old checkpoints resume
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

    from behaviorlm.training.tuning import load_trainable_state

    state = torch.load(path, map_location="cpu", weights_only=False)
    load_trainable_state(model, state["lora"], path)
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
