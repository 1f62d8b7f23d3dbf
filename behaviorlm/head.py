"""The trained behavior head (scoring format 4): a linear readout per behavior plus repeat
features, saved next to the adapter.

    score(b) = W[b] . h + bias[b] + sum_f w_f * feature_f(b, past)      P = softmax(score / T)

``h`` is the decoder's last hidden state at the readout (the same position and the same hidden
state the label-word head of format 3 reads). ``W`` starts as the mean of each behavior's name
token rows of the model's output head (``init_rows``), ``bias`` and ``w`` at 0, so an untrained
head gives exactly the label-word scores (``behaviorlm.labels``): zero-shot still works and
training starts from them. Why a trained head: SmolLM2 ties its input and output embeddings,
so with LoRA on the transformer blocks the rows that score a behavior could never move, and
a name's mean logit favors names made of generic tokens. E4SRec and LLaRA, LLM recommenders
that beat SASRec, score items with such a trained linear layer.

The features (``behaviorlm.repeats``) read the request's own past, up to ``repeat_window``
events. A behavior outside the trained vocabulary (``allow_new_behaviors``) gets the
initialisation rule's row, bias 0 and the same feature weights: it is scored by its name, and
by its repeats.

Files: ``behavior_head.safetensors`` (``weight`` [V, d], ``bias`` [V], ``feature_weights``
[F], float32) and the manifest's ``head`` entry (``HeadInfo``), which records its hash, its
shapes and features; loading checks every one. Pure numpy: the engines move it to torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from behaviorlm.errors import InputError, ManifestMismatch
from behaviorlm.labels import LabelHead
from behaviorlm.repeats import FEATURES, RepeatInput, feature_matrix
from behaviorlm.vocabulary import name_index

HEAD_FILE = "behavior_head.safetensors"


class HeadInfo(BaseModel):
    """The manifest's record of a trained behavior head."""

    model_config = ConfigDict(frozen=True)
    file: str = Field(default=HEAD_FILE, description="file next to the adapter")
    sha256: str = Field(description="hash of the file")
    behaviors: int = Field(ge=1, description="rows: the vocabulary's behaviors, in its order")
    hidden_size: int = Field(ge=1, description="the base model's hidden size")
    features: list[str] = Field(
        default_factory=list, description="repeat features, in order (behaviorlm.repeats)"
    )
    repeat_window: int = Field(
        default=0, ge=0, description="past events the features read (0: no features)"
    )


def init_rows(
    label: LabelHead, union_weight: np.ndarray, union_bias: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(W [V, d], bias [V]) of the initialisation rule: the mean of each name's label-token
    rows of the output head (``union_weight`` holds the rows of ``label.union``), so that
    ``W h + bias`` equals the label-word scores."""
    matrix = label.matrix.astype(np.float64)
    weight = (matrix @ np.asarray(union_weight, dtype=np.float64)).astype(np.float32)
    if union_bias is None:
        bias = np.zeros(len(label.names), dtype=np.float32)
    else:
        bias = (matrix @ np.asarray(union_bias, dtype=np.float64)).astype(np.float32)
    return weight, bias


@dataclass(frozen=True)
class BehaviorHead:
    """A trained head over ``names`` (the adapter's vocabulary, in its order)."""

    names: tuple[str, ...]
    weight: np.ndarray  # [V, d] float32
    bias: np.ndarray  # [V] float32
    feature_weights: np.ndarray  # [F] float32, F = len(features)
    repeat_window: int = 0

    def __post_init__(self) -> None:
        v = len(self.names)
        if self.weight.ndim != 2 or self.weight.shape[0] != v:
            raise InputError(f"behavior head: weight {self.weight.shape} for {v} behaviors")
        if self.bias.shape != (v,):
            raise InputError(f"behavior head: bias {self.bias.shape} for {v} behaviors")
        if self.feature_weights.shape != (len(self.features),):
            raise InputError(
                f"behavior head: {self.feature_weights.shape[0]} feature weights for "
                f"{len(self.features)} features"
            )

    @property
    def features(self) -> tuple[str, ...]:
        return FEATURES if self.repeat_window > 0 else ()

    @property
    def hidden_size(self) -> int:
        return int(self.weight.shape[1])

    @cached_property
    def index(self) -> dict[str, int]:
        return name_index(self.names)

    def rows(
        self, names: Sequence[str], label: LabelHead, union_weight: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(W, bias) for ``names``: trained rows, and the initialisation rule (from ``label``,
        the label-word head of ``names``, and the output head's rows of its union) for names
        outside the vocabulary."""
        known = [self.index.get(n) for n in names]
        if all(k is not None for k in known):
            idx = np.asarray(known, dtype=np.int64)
            return self.weight[idx], self.bias[idx]
        if union_weight is None:
            raise ValueError("BehaviorHead.rows: new behaviors need the output head's rows")
        init_w, _ = init_rows(label, union_weight, None)
        weight = init_w.copy()
        bias = np.zeros(len(names), dtype=np.float32)
        for i, k in enumerate(known):
            if k is not None:
                weight[i] = self.weight[k]
                bias[i] = self.bias[k]
        return weight, bias

    def feature_logits(self, past: RepeatInput | None, names: Sequence[str]) -> np.ndarray:
        """[len(names)] the features' share of each behavior's score (0 without features)."""
        if self.repeat_window == 0 or past is None:
            return np.zeros(len(names), dtype=np.float32)
        index = name_index(names)
        feats = feature_matrix(past.last(self.repeat_window), index, len(names))
        return feats @ self.feature_weights

    def save(self, directory: Path) -> HeadInfo:
        from safetensors.numpy import save_file

        directory.mkdir(parents=True, exist_ok=True)
        path = directory / HEAD_FILE
        save_file(
            {
                "weight": np.ascontiguousarray(self.weight, dtype=np.float32),
                "bias": np.ascontiguousarray(self.bias, dtype=np.float32),
                "feature_weights": np.ascontiguousarray(self.feature_weights, dtype=np.float32),
            },
            str(path),
        )
        path.chmod(0o644)
        return HeadInfo(
            file=HEAD_FILE,
            sha256=_sha256(path),
            behaviors=len(self.names),
            hidden_size=self.hidden_size,
            features=list(self.features),
            repeat_window=self.repeat_window,
        )

    @classmethod
    def load(
        cls,
        directory: Path,
        info: HeadInfo,
        names: Sequence[str],
        hidden_size: int | None = None,
        where: str = "adapter",
    ) -> BehaviorHead:
        """The head of an adapter, checked against its manifest's ``info``, its vocabulary
        ``names`` and (when given) the loaded model's hidden size."""
        from safetensors.numpy import load_file

        path = directory / info.file
        if not path.exists():
            raise ManifestMismatch(
                f"{where}: the manifest records a trained behavior head ({info.file}) but "
                f"{path} does not exist"
            )
        digest = _sha256(path)
        if digest != info.sha256:
            raise ManifestMismatch(
                f"{where}: {path} has sha256 {digest[:12]}, the manifest records "
                f"{info.sha256[:12]}: the head does not belong to this adapter"
            )
        unknown = [f for f in info.features if f not in FEATURES]
        if info.features and list(info.features) != list(FEATURES):
            raise ManifestMismatch(
                f"{where}: head features {info.features} (unknown: {unknown}); this BehaviorLM "
                f"computes {list(FEATURES)}: retrain the adapter"
            )
        if (info.repeat_window > 0) != bool(info.features):
            raise ManifestMismatch(
                f"{where}: head repeat_window {info.repeat_window} with features {info.features}"
            )
        tensors = load_file(str(path))
        missing = {"weight", "bias", "feature_weights"} - set(tensors)
        if missing:
            raise ManifestMismatch(f"{where}: {path} lacks tensors {sorted(missing)}")
        weight = tensors["weight"].astype(np.float32)
        expected = (len(names), info.hidden_size)
        if info.behaviors != len(names) or weight.shape != expected:
            raise ManifestMismatch(
                f"{where}: head weight has shape {list(weight.shape)}, the manifest's vocabulary "
                f"and head need {[len(names), info.hidden_size]}"
            )
        if hidden_size is not None and hidden_size != info.hidden_size:
            raise ManifestMismatch(
                f"{where}: head was trained on hidden size {info.hidden_size}, the loaded base "
                f"model has {hidden_size}"
            )
        try:
            return cls(
                tuple(names),
                weight,
                tensors["bias"].astype(np.float32),
                tensors["feature_weights"].astype(np.float32),
                info.repeat_window,
            )
        except InputError as exc:
            raise ManifestMismatch(f"{where}: {path}: {exc}") from exc


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
