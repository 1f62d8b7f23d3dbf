"""The optimisation loop of one stage, plus distributed wiring (what trains: ``tuning.py``).

One process on CPU, or one process per GPU under ``torchrun`` / ``accelerate launch``: with
``WORLD_SIZE > 1`` the model is wrapped in DistributedDataParallel and each rank takes its slice
of every (global) batch, so the schedule, and therefore the result, does not depend on how many
processes share it (up to reduction order). Only rank 0 writes files.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from behaviorlm.errors import TrainingError
from behaviorlm.training.batching import Batch, collate
from behaviorlm.training.checkpoint import load_checkpoint, save_checkpoint
from behaviorlm.training.config import StageSettings, TrainConfig
from behaviorlm.training.losses import HeadTensors, non_target_kl, readout_scores, weighted_ce
from behaviorlm.training.packing import PackedRows
from behaviorlm.training.tuning import base_model

log = logging.getLogger(__name__)

# Non-finite steps in a row after which training stops instead of skipping.
MAX_BAD_STEPS = 5


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistInfo:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def pick_device(dist: DistInfo) -> Any:
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(dist.local_rank)
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def lr_factor(step: int, settings: StageSettings) -> float:
    """Linear warmup to 1, then linear decay to ``lr_end_ratio`` at the last step."""
    if step < settings.warmup_steps:
        return (step + 1) / (settings.warmup_steps + 1)
    span = max(1, settings.steps - settings.warmup_steps - 1)
    done = min(1.0, (step - settings.warmup_steps) / span)
    return 1.0 - (1.0 - settings.lr_end_ratio) * done


@dataclass
class StageRun:
    """Inputs of one stage's loop: packed rows, their schedule and the readouts' weights."""

    name: str
    settings: StageSettings
    batches: Sequence[Sequence[int]]  # global batches: row indices, one list per step
    rows: PackedRows
    labels: np.ndarray  # target vocabulary index per readout
    weights: np.ndarray  # loss weight per readout (mean 1 over the stage's readouts)
    head: HeadTensors
    checkpoint: Path
    seed: int
    pad_id: int


@dataclass
class FitState:
    """What changes while a stage runs."""

    optimizer: Any
    params: list[Any]
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    bad_in_a_row: int = 0


def run_stage(
    model: Any,
    run: StageRun,
    config: TrainConfig,
    dist: DistInfo,
    device: Any,
    resume: bool,
) -> list[dict[str, float]]:
    """Train ``model``'s weights (its LoRA adapter, or all of them) for ``run.settings.steps``
    steps; returns the step log."""
    from tqdm import tqdm

    state = _start(model, run, config, resume)
    ddp = _wrap_ddp(model, dist, device)
    model.train()
    # sdpa, not eager attention, on CPU too: with packed rows of ~900 tokens eager's forward
    # took 24 s against sdpa's 5 s for the same batch (3 x 895 tokens, 2 threads, 2026-12-01).
    total = run.settings.steps
    bar = tqdm(
        range(state.step, total),
        desc=run.name,
        initial=state.step,
        total=total,
        disable=not dist.main,
        mininterval=2.0,
    )
    for step in bar:
        record = _train_step(ddp, model, run, state, step, dist, device)
        _guard(run, state, record)
        _log(run, state, record, config, bar, dist)
        _checkpoint(model, run, state, config, dist)
    bar.close()
    model.eval()
    return state.history


def _start(model: Any, run: StageRun, config: TrainConfig, resume: bool) -> FitState:
    """A fresh optimizer, or the checkpoint's (weights, optimizer, RNG, step, log)."""
    import torch

    settings = run.settings
    tuned = [p for p in model.parameters() if p.requires_grad]  # LoRA, or every weight
    groups: list[dict[str, Any]] = [{"params": tuned, "base_lr": settings.lr}]
    trained = run.head.trained
    if trained is not None:
        head_lr = config.head.lr or settings.lr
        if config.head.feature_lr and trained.feature_weights.numel():
            # A group of its own only when asked: checkpoints keep the two-group layout otherwise.
            rows = [trained.weight, trained.bias]
            groups.append({"params": rows, "base_lr": head_lr})
            groups.append({"params": [trained.feature_weights], "base_lr": config.head.feature_lr})
        else:
            groups.append({"params": trained.parameters(), "base_lr": head_lr})
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay)
    state = FitState(optimizer, params)
    if resume and run.checkpoint.exists():
        state.step, state.history = load_checkpoint(
            run.checkpoint, model=model, optimizer=optimizer, head=trained
        )
        log.info("%s: resumed from %s at step %d", run.name, run.checkpoint, state.step)
    else:
        torch.manual_seed(run.seed)  # dropout: same stream whether or not earlier stages ran
    return state


def _train_step(
    ddp: Any, model: Any, run: StageRun, state: FitState, step: int, dist: DistInfo, device: Any
) -> dict[str, float]:
    """One optimizer step on this rank's slice of the global batch; the step's log record."""
    import torch

    settings = run.settings
    for group in state.optimizer.param_groups:
        group["lr"] = group["base_lr"] * lr_factor(step, settings)
    global_rows = list(run.batches[step])
    mine = global_rows[dist.rank :: dist.world]
    # A rank without a row of its own still joins DDP's gradient sync, with zero weight.
    weights = run.weights if mine else np.zeros_like(run.weights)
    batch = collate(run.rows, mine or global_rows[:1], run.labels, weights, run.pad_id).to(device)
    # Each rank divides by the GLOBAL readout count (times world: DDP averages gradients), so
    # the loss does not depend on how the rows are split over processes.
    readouts = sum(int((run.weights[run.rows.readouts[r]] > 0).sum()) for r in global_rows)
    denominator = max(readouts, 1) / dist.world
    t0 = time.perf_counter()
    loss, nll, kl = _loss(ddp, model, batch, run.head, settings, denominator)
    loss.backward()
    # Norm over all ranks' gradients (DDP has averaged them): every rank decides alike.
    limit = settings.max_grad_norm if settings.max_grad_norm > 0 else math.inf
    grad_norm = float(torch.nn.utils.clip_grad_norm_(state.params, limit))
    finite = math.isfinite(grad_norm) and math.isfinite(float(loss.detach()))
    if finite:
        state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.step = step + 1
    return {
        "step": step + 1,
        "loss": float(loss.detach()),
        "nll": float(nll),
        "kl": float(kl),
        "lr": state.optimizer.param_groups[0]["lr"],
        "grad_norm": grad_norm,
        "rows": len(global_rows),
        "readouts": readouts,
        "weighted_targets": float(weights[batch.readout_index.cpu().numpy()].sum()) * dist.world,
        "tokens": batch.tokens * dist.world,
        "padding": batch.padding * dist.world,
        "seconds": time.perf_counter() - t0,
        "skipped": 0.0 if finite else 1.0,
    }


def _guard(run: StageRun, state: FitState, record: dict[str, float]) -> None:
    """One non-finite step would make every weight NaN: it was skipped; stop when it keeps
    happening (the data or the numerics are broken, not one batch)."""
    if not record["skipped"]:
        state.bad_in_a_row = 0
        return
    state.bad_in_a_row += 1
    log.warning(
        "%s step %d: non-finite loss or gradient (loss %s, grad norm %s): step skipped",
        run.name,
        int(record["step"]),
        record["loss"],
        record["grad_norm"],
    )
    if state.bad_in_a_row >= MAX_BAD_STEPS:
        raise TrainingError(
            f"{run.name}: {state.bad_in_a_row} steps in a row had a non-finite loss or "
            f"gradient (last: step {int(record['step'])}); lower the lr or use dtype=float32. "
            f"The last good checkpoint is {run.checkpoint}"
        )


def _log(
    run: StageRun,
    state: FitState,
    record: dict[str, float],
    config: TrainConfig,
    bar: Any,
    dist: DistInfo,
) -> None:
    state.history.append(record)
    step, total = int(record["step"]), run.settings.steps
    if step % config.log_every and step != total:
        return
    recent = state.history[-config.log_every :]
    mean = sum(h["nll"] for h in recent) / len(recent)
    rate = sum(h["readouts"] for h in recent) / max(sum(h["seconds"] for h in recent), 1e-9)
    bar.set_postfix(nll=f"{mean:.3f}", kl=f"{record['kl']:.3f}", targets_s=f"{rate:.1f}")
    if dist.main:
        log.info(
            "%s step %d/%d nll %.4f kl %.4f lr %.2e targets/s %.1f",
            run.name,
            step,
            total,
            mean,
            record["kl"],
            record["lr"],
            rate,
        )


def _checkpoint(
    model: Any, run: StageRun, state: FitState, config: TrainConfig, dist: DistInfo
) -> None:
    every = config.checkpoint_every
    if every and state.step % every == 0 and state.step < run.settings.steps and dist.main:
        save_checkpoint(
            run.checkpoint,
            step=state.step,
            model=model,
            optimizer=state.optimizer,
            log=state.history,
            head=run.head.trained,
        )


def _wrap_ddp(model: Any, dist: DistInfo, device: Any) -> Any:
    if dist.world <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _loss(
    ddp: Any,
    model: Any,
    batch: Batch,
    head: HeadTensors,
    settings: StageSettings,
    denominator: float,
) -> tuple[Any, Any, Any]:
    import torch

    scores = readout_scores(ddp, batch, head)
    nll = weighted_ce(scores, batch, denominator, head.log_prior, settings.logit_adjust_tau)
    kl_weight = settings.kl_weight
    if kl_weight <= 0:
        return nll, nll.detach(), torch.zeros(())
    with base_model(model) as base:
        base_scores = readout_scores(base, batch, head, label_words=True)
    kl = non_target_kl(scores, base_scores, batch, denominator)
    return nll + kl_weight * kl, nll.detach(), kl.detach()
