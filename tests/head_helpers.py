"""Test helper: a copy of a (random, real) LoRA adapter with a trained behavior head."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from behaviorlm.head import BehaviorHead, init_rows
from behaviorlm.labels import HEAD_SCORING_FORMAT
from behaviorlm.manifest import AdapterManifest
from behaviorlm.repeats import FEATURES


def attach_head(
    src: Any,
    dest: Path,
    base: Any,
    noise: float = 0.0,
    repeat_window: int = 0,
    feature_weights: np.ndarray | None = None,
) -> Any:
    """A copy of adapter ``src`` (an AdapterSpec) with a behavior head: the initialisation
    rule's rows plus ``noise`` (seeded), and the given feature weights."""
    import torch
    from transformers import AutoModelForCausalLM

    from behaviorlm.scoring import AdapterSpec

    shutil.copytree(src.path, dest)
    label = src.manifest.label_head()
    model = AutoModelForCausalLM.from_pretrained(str(base.path), dtype=torch.float32)
    rows = model.get_output_embeddings().weight.detach().numpy()[label.union]
    weight, bias = init_rows(label, rows, None)
    rng = np.random.default_rng(0)
    weight = weight + noise * rng.standard_normal(weight.shape).astype(np.float32)
    bias = bias + noise * rng.standard_normal(bias.shape).astype(np.float32)
    n_feat = len(FEATURES) if repeat_window else 0
    fw = feature_weights if feature_weights is not None else np.zeros(n_feat, np.float32)
    head = BehaviorHead(label.names, weight, bias, fw.astype(np.float32), repeat_window)
    info = head.save(dest)
    manifest = src.manifest.model_copy(
        update={"head": info, "scoring_format": HEAD_SCORING_FORMAT, "version": "head-1"}
    )
    manifest.save(dest)
    return AdapterSpec(src.name + "-head", dest, AdapterManifest.load(dest))


def models_with_count_head(models: Path, src: Any, base: Any) -> Path:
    """A models directory of adapter ``src`` as ``a0`` and its copy with a head as ``a0-head``:
    rows with seeded noise 0.05, repeat window 40 and only the log-count feature weighted
    (3.0), so a behavior the history repeats shows it in the probabilities."""
    shutil.copytree(src.path, models / "a0")
    weights = np.zeros(len(FEATURES), np.float32)
    weights[FEATURES.index("log_count")] = 3.0
    attach_head(src, models / "a0-head", base, 0.05, repeat_window=40, feature_weights=weights)
    return models
