"""The optimisation loop of one stage, plus model setup (LoRA via peft) and distributed wiring.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from behaviorlm.errors import TrainingError
from training.batching import Batch, Example, collate
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import LoraSettings, StageSettings, TrainConfig
from training.losses import answer_nll, first_position_logits, forward_answer_logits, non_target_kl

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


def torch_dtype(name: str) -> Any:
    import torch

    return {"bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def build_lora_model(
    base_path: Path, lora: LoraSettings, dtype: str, seed: int, device: Any
) -> Any:
    """The frozen base model with a fresh LoRA adapter (init seeded)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch_dtype(dtype))
    model.config.use_cache = False
    torch.manual_seed(seed)
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    # autocast_adapter_dtype (peft's default) keeps the LoRA weights in fp32 on a bf16 base.
    peft_model = get_peft_model(model, config)
    peft_model.to(device)
    for name, param in peft_model.named_parameters():
        if param.requires_grad and "lora_" not in name:
            raise RuntimeError(f"unexpected trainable parameter {name}: only LoRA may train")
    return peft_model


def lr_factor(step: int, settings: StageSettings) -> float:
    """Linear warmup to 1, then linear decay to ``lr_end_ratio`` at the last step."""
    if step < settings.warmup_steps:
        return (step + 1) / (settings.warmup_steps + 1)
    span = max(1, settings.steps - settings.warmup_steps - 1)
    done = min(1.0, (step - settings.warmup_steps) / span)
    return 1.0 - (1.0 - settings.lr_end_ratio) * done


@dataclass
class StageRun:
    """Inputs of one stage's loop."""

    name: str
    settings: StageSettings
    batches: Sequence[Sequence[int]]  # global batches: dataset indices, one list per step
    examples: Mapping[int, Example]
    checkpoint: Path
    seed: int


def run_stage(
    model: Any,
    run: StageRun,
    config: TrainConfig,
    root_children: Any,
    pad_id: int,
    dist: DistInfo,
    device: Any,
    resume: bool,
) -> list[dict[str, float]]:
    """Train ``model``'s active adapter for ``run.settings.steps`` steps; returns the step log."""
    import torch
    from tqdm import tqdm

    settings = run.settings
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    start, history = 0, list[dict[str, float]]()
    if resume and run.checkpoint.exists():
        start, history = load_checkpoint(run.checkpoint, model=model, optimizer=optimizer)
        log.info("%s: resumed from %s at step %d", run.name, run.checkpoint, start)
    else:
        torch.manual_seed(run.seed)  # dropout: same stream whether or not earlier stages ran
    ddp = _wrap_ddp(model, dist, device)
    bad_in_a_row = 0
    model.train()
    # Eager attention for training on CPU: torch's CPU flash-attention backward with a 4D mask
    # is slower than plain matmul + softmax at these lengths (measured ~12% of a step at
    # 8 x 300 tokens). Scoring keeps sdpa: its answer trees are long and eager would
    # materialise every attention matrix.
    attention = model.config._attn_implementation
    if device.type == "cpu":
        model.set_attn_implementation("eager")
    root = root_children.to(device)
    bar = tqdm(
        range(start, settings.steps),
        desc=run.name,
        initial=start,
        total=settings.steps,
        disable=not dist.main,
        mininterval=2.0,
    )
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * lr_factor(step, settings)
        mine = list(run.batches[step])[dist.rank :: dist.world]
        batch = collate([run.examples[i] for i in mine], pad_id).to(device)
        t0 = time.perf_counter()
        loss, nll, kl = _loss(ddp, model, batch, settings.kl_weight, root)
        loss.backward()
        # Norm over all ranks' gradients (DDP has averaged them): every rank decides alike.
        limit = settings.max_grad_norm if settings.max_grad_norm > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, limit))
        finite = math.isfinite(grad_norm) and math.isfinite(float(loss.detach()))
        if finite:
            optimizer.step()
            bad_in_a_row = 0
        else:
            # One non-finite step would make every weight NaN: drop it, count it, and stop
            # when it keeps happening (the data or the numerics are broken, not one batch).
            bad_in_a_row += 1
            log.warning(
                "%s step %d: non-finite loss or gradient (loss %s, grad norm %s): step skipped",
                run.name,
                step + 1,
                float(loss.detach()),
                grad_norm,
            )
            if bad_in_a_row >= MAX_BAD_STEPS:
                raise TrainingError(
                    f"{run.name}: {bad_in_a_row} steps in a row had a non-finite loss or "
                    f"gradient (last: step {step + 1}); lower the lr or use dtype=float32. "
                    f"The last good checkpoint is {run.checkpoint}"
                )
        optimizer.zero_grad(set_to_none=True)
        history.append(
            {
                "step": step + 1,
                "loss": float(loss.detach()),
                "nll": float(nll),
                "kl": float(kl),
                "lr": optimizer.param_groups[0]["lr"],
                "grad_norm": grad_norm,
                "samples": len(mine) * dist.world,
                "answer_tokens": batch.answer_tokens,
                "tokens": int(batch.input_ids.numel()) - batch.padding,
                "padding": batch.padding,
                "seconds": time.perf_counter() - t0,
                "skipped": 0.0 if finite else 1.0,
            }
        )
        if (step + 1) % config.log_every == 0 or step + 1 == settings.steps:
            recent = history[-config.log_every :]
            mean = sum(h["nll"] for h in recent) / len(recent)
            bar.set_postfix(nll=f"{mean:.3f}", kl=f"{history[-1]['kl']:.3f}")
            if dist.main:
                log.info(
                    "%s step %d/%d nll %.4f kl %.4f lr %.2e",
                    run.name,
                    step + 1,
                    settings.steps,
                    mean,
                    history[-1]["kl"],
                    history[-1]["lr"],
                )
        every = config.checkpoint_every
        if every and (step + 1) % every == 0 and step + 1 < settings.steps and dist.main:
            save_checkpoint(
                run.checkpoint, step=step + 1, model=model, optimizer=optimizer, log=history
            )
    bar.close()
    model.set_attn_implementation(attention)
    model.eval()
    return history


def _wrap_ddp(model: Any, dist: DistInfo, device: Any) -> Any:
    if dist.world <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _loss(ddp: Any, model: Any, batch: Batch, kl_weight: float, root: Any) -> tuple[Any, Any, Any]:
    import torch

    logits = forward_answer_logits(ddp, batch)
    nll = answer_nll(logits, batch)
    if kl_weight <= 0:
        return nll, nll.detach(), torch.zeros(())
    with torch.no_grad(), model.disable_adapter():
        base_logits = forward_answer_logits(model, batch)
    kl = non_target_kl(
        first_position_logits(logits, batch, root),
        first_position_logits(base_logits, batch, root),
        batch.first_token,
        root,
    )
    return nll + kl_weight * kl, nll.detach(), kl.detach()
