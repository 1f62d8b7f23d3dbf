"""A small SASRec-style sequence model (self-attention over the last L events), trained here.

Input: the raw behaviors of the last ``max_len`` events (ids into the dataset's raw names, so
behaviors outside the vocabulary still inform it) plus the target event's weekday and hour when
known (the LLM prompt shows them too). Output: a softmax over the vocabulary, read at the last
position. CPU-friendly: a 2-layer, 64-wide encoder; a few epochs with early stopping on
validation NLL; seeded, single-threaded-safe.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from behaviorlm.training.evaluation.sequences import SequenceData

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SASRecConfig:
    """Fields:
    max_len: events of history read (most recent last).
    dim / layers / heads: encoder width, depth, attention heads.
    dropout: on embeddings and inside the encoder.
    epochs: at most this many passes over the train split (best validation NLL kept).
    batch_size / lr / weight_decay: AdamW settings.
    max_seconds: stop training after this long (keeps CI and big data bounded).
    threads: torch threads while training/predicting (1 is fastest for a model this small,
        and much faster than 2 on a busy machine).
    seed: torch and numpy seed.
    """

    max_len: int = 20
    dim: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    epochs: int = 8
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.01
    max_seconds: float = 240.0
    threads: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_len < 1 or self.dim < 1 or self.layers < 1 or self.epochs < 1:
            raise ValueError("sasrec: max_len, dim, layers and epochs must be >= 1")
        if self.dim % self.heads:
            raise ValueError(f"sasrec: dim {self.dim} is not divisible by heads {self.heads}")


def _pad(data: SequenceData, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-aligned raw ids shifted by 2 (0 = padding, 1 = unseen), and time ids."""
    x = np.zeros((len(data), max_len), dtype=np.int64)
    for i, r in enumerate(data.raw):
        r = r[-max_len:]
        if len(r):
            x[i, max_len - len(r) :] = r + 2
    known = (data.hour >= 0) & (data.weekday >= 0)
    t = np.where(known, 1 + data.weekday * 24 + data.hour, 0).astype(np.int64)
    return x, t


@dataclass
class SASRec:
    num_raw: int
    num_labels: int
    config: SASRecConfig = field(default_factory=SASRecConfig)
    name: str = "sasrec"
    params: dict[str, Any] = field(default_factory=dict)

    def _build(self) -> Any:
        import torch
        from torch import nn

        cfg = self.config
        num_raw, num_labels = self.num_raw, self.num_labels

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.item = nn.Embedding(num_raw + 2, cfg.dim, padding_idx=0)
                self.pos = nn.Embedding(cfg.max_len, cfg.dim)
                self.time = nn.Embedding(1 + 7 * 24, cfg.dim)
                layer = nn.TransformerEncoderLayer(
                    cfg.dim,
                    cfg.heads,
                    2 * cfg.dim,
                    cfg.dropout,
                    batch_first=True,
                    norm_first=True,
                )
                self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
                self.drop = nn.Dropout(cfg.dropout)
                self.norm = nn.LayerNorm(cfg.dim)
                self.out = nn.Linear(cfg.dim, num_labels)
                mask = torch.triu(torch.ones(cfg.max_len, cfg.max_len, dtype=torch.bool), 1)
                self.register_buffer("causal", mask)

            def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                pos = torch.arange(x.shape[1], device=x.device)
                h = self.drop(self.item(x) + self.pos(pos)[None])
                # Histories are left-padded: with a causal mask every position sees at least
                # itself, so no row attends to nothing (a key-padding mask would allow that).
                h = self.encoder(h, mask=self.causal)
                last = self.norm(h[:, -1] + self.time(t))
                return self.out(last)

        return Net()

    def fit(self, train: SequenceData, validation: SequenceData | None) -> None:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.config.threads)
        try:
            self._fit(train, validation)
        finally:
            torch.set_num_threads(before)

    def _fit(self, train: SequenceData, validation: SequenceData | None) -> None:
        import torch

        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        self.net = self._build()
        opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        x, t = _pad(train, cfg.max_len)
        y = train.targets.astype(np.int64)
        best: tuple[float, dict[str, Any]] | None = None
        start = time.monotonic()
        history = []
        for epoch in range(cfg.epochs):
            self.net.train()
            order = rng.permutation(len(y))
            total = 0.0
            for b in range(0, len(order), cfg.batch_size):
                idx = order[b : b + cfg.batch_size]
                logits = self.net(torch.from_numpy(x[idx]), torch.from_numpy(t[idx]))
                loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y[idx]))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            val = self._nll(validation) if validation is not None and len(validation) else None
            history.append(
                {"epoch": epoch + 1, "train_nll": total / max(len(y), 1), "validation_nll": val}
            )
            log.info(
                "sasrec epoch %d: train NLL %.4f, validation NLL %s",
                epoch + 1,
                total / max(len(y), 1),
                f"{val:.4f}" if val is not None else "-",
            )
            score = val if val is not None else -epoch
            if best is None or score < best[0]:
                best = (score, {k: v.clone() for k, v in self.net.state_dict().items()})
            elif val is not None:
                break  # validation NLL went up: early stop
            if time.monotonic() - start > cfg.max_seconds:
                log.warning(
                    "sasrec: stopped after %d epochs (max_seconds=%s)", epoch + 1, cfg.max_seconds
                )
                break
        if best is not None:
            self.net.load_state_dict(best[1])
        self.params.update(asdict(cfg))
        self.params["epochs_run"] = history
        self.params["train_seconds"] = round(time.monotonic() - start, 1)

    def _nll(self, data: SequenceData) -> float:
        p = self.predict(data)
        return float(-np.log(np.maximum(p[np.arange(len(data)), data.targets], 1e-12)).mean())

    def predict(self, data: SequenceData) -> np.ndarray:
        import torch

        x, t = _pad(data, self.config.max_len)
        self.net.eval()
        out = []
        before = torch.get_num_threads()
        torch.set_num_threads(self.config.threads)
        with torch.no_grad():
            for b in range(0, len(x), 1024):
                logits = self.net(
                    torch.from_numpy(x[b : b + 1024]), torch.from_numpy(t[b : b + 1024])
                )
                out.append(torch.softmax(logits.double(), dim=-1).numpy())
        torch.set_num_threads(before)
        if not out:
            return np.zeros((0, self.num_labels))
        return np.concatenate(out)
