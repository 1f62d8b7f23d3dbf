"""What trains: a LoRA adapter on the frozen base (peft), or every weight of the base model.

Both kinds go through the same functions, so the loop, checkpoints, stage files and the
difficulty pass do not ask which one they hold:

- ``lora`` (the default): the base model in ``dtype``, frozen; a fresh peft adapter in fp32.
  A stage saves ``adapter_model.safetensors`` (a few MB). The KL term's base distribution is
  the same model with the adapter disabled.
- ``full``: every weight trains, in fp32 (master weights: a bf16 weight cannot take an update
  smaller than 1/256 of itself, and lr x grad is far smaller), with the forward under bf16
  autocast where ``dtype`` is bf16, as the LoRA path computes. A stage saves the whole model
  (``model.safetensors`` + ``config.json``, fp32: ~540 MB for SmolLM2-135M), which the
  transformers engine loads as the adapter's own model. The KL term's base distribution comes
  from a frozen fp32 copy of the base under the same autocast, built only when a stage has a KL
  weight.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, get_args

from behaviorlm.dtypes import torch_dtype
from behaviorlm.errors import InputError
from behaviorlm.manifest import WEIGHTS_FILES, Tuning

TUNINGS: tuple[str, ...] = get_args(Tuning)
_FULL = "_behaviorlm_full"  # attribute of a fully tuned model: its FullTuning


class FullTuning:
    """What a fully tuned model carries besides its weights: the compute dtype of its forward
    and the frozen base model of the KL term (None when no stage needs it)."""

    def __init__(self, compute_dtype: Any, reference: Any) -> None:
        self.compute_dtype = compute_dtype
        self.reference = reference


def full_tuning(model: Any) -> FullTuning | None:
    """What ``build_model`` attached to a fully tuned model (or its reference copy); None for
    a LoRA model or any other module."""
    inner = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    found = getattr(inner, _FULL, None)
    return found if isinstance(found, FullTuning) else None


def build_model(
    base_path: Path,
    tuning: Tuning,
    lora: Any,
    dtype: str,
    seed: int,
    device: Any,
    reference: bool = False,
) -> Any:
    """The model a run trains: the frozen base with a fresh LoRA adapter (init seeded), or the
    base itself in fp32 with every weight trainable (``reference``: plus a frozen copy in
    fp32 for the KL term, run under the same autocast)."""
    if tuning == "lora":
        return build_lora_model(base_path, lora, dtype, seed, device)
    if tuning != "full":
        raise InputError(f"config 'tuning={tuning!r}': must be one of {list(TUNINGS)}")
    import torch
    from transformers import AutoModelForCausalLM

    compute = torch_dtype(dtype)
    model: Any = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32)
    model.config.use_cache = False
    model.to(device)
    model.requires_grad_(True)
    if not getattr(model.config, "tie_word_embeddings", False):
        # An untied output head is never read in training (the behavior head reads the hidden
        # state): a weight without a gradient would stall DistributedDataParallel's reduction.
        model.get_output_embeddings().requires_grad_(False)
    frozen = None
    if reference:
        # fp32 under the same autocast as the tuned model: at step 0 both give the same scores
        # to the last bit, so the KL term starts at 0 instead of at bf16's rounding noise.
        frozen = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32)
        frozen.config.use_cache = False
        frozen.to(device).eval().requires_grad_(False)
        setattr(frozen, _FULL, FullTuning(compute, None))
    setattr(model, _FULL, FullTuning(compute, frozen))
    return model


def build_lora_model(base_path: Path, lora: Any, dtype: str, seed: int, device: Any) -> Any:
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


@contextmanager
def base_model(model: Any) -> Iterator[Any]:
    """The untuned base model to read the KL term's distribution from (no gradients)."""
    import torch

    full = full_tuning(model)
    with torch.no_grad():
        if full is None:
            with model.disable_adapter():
                yield model
            return
        if full.reference is None:
            raise RuntimeError("full tuning: this model was built without its reference copy")
        yield full.reference


@contextmanager
def low_precision(model: Any, device: Any) -> Iterator[None]:
    """The forward's precision: bf16 when the run's dtype is bf16, whatever the weights hold.

    LoRA on a bf16 base: peft casts each LoRA layer's input up to the weights' fp32 and the sum
    back down, two copies of an activation-sized tensor per layer, forward and backward (about a
    tenth of a CPU step); under autocast the small LoRA weights are cast instead and their
    gradients still arrive in fp32 (the optimizer keeps fp32 weights: the usual mixed-precision
    recipe). Full tuning: the fp32 master weights, cast per matmul by autocast the same way.
    """
    import torch

    inner = getattr(model, "module", model)
    full = full_tuning(inner)
    dtype = full.compute_dtype if full else inner.get_input_embeddings().weight.dtype
    if dtype != torch.bfloat16:
        yield
        return
    if full is not None:
        with torch.autocast(device.type, dtype=dtype):
            yield
        return
    from peft.helpers import disable_input_dtype_casting

    with torch.autocast(device.type, dtype=dtype), disable_input_dtype_casting(inner):
        yield


def trainable_state(model: Any) -> dict[str, Any]:
    """CPU copies of the weights that train (the LoRA matrices, or every weight)."""
    if full_tuning(model) is not None:
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}


def load_trainable_state(model: Any, state: dict[str, Any], where: Path) -> None:
    """Put ``trainable_state``'s weights back; keys that do not fit are an error."""
    if full_tuning(model) is not None:
        missing, unexpected = model.load_state_dict(state, strict=False)
        # A tied lm_head may be absent from a saved file: it is the embedding.
        missing = [k for k in missing if not _tied_head(model, k)]
        if missing or unexpected:
            raise RuntimeError(
                f"{where}: weights do not fit this model (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]})"
            )
        return
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise RuntimeError(f"{where}: has unexpected LoRA keys {unexpected[:3]}")


def _tied_head(model: Any, key: str) -> bool:
    return key == "lm_head.weight" and bool(getattr(model.config, "tie_word_embeddings", False))


def weights_file(stage_dir: Path, tuning: str) -> Path:
    """The file a finished stage's trained weights are in."""
    return stage_dir / WEIGHTS_FILES[tuning]


def save_weights(model: Any, stage_dir: Path) -> Path:
    """Write the stage's trained weights (peft's adapter files, or the whole model in fp32)."""
    model.save_pretrained(str(stage_dir))  # peft writes the adapter, transformers the model
    return weights_file(stage_dir, "full" if full_tuning(model) is not None else "lora")


def load_weights(model: Any, stage_dir: Path) -> None:
    """Load a finished stage's weights into the run's model (resume)."""
    from safetensors.torch import load_file

    tuning = "full" if full_tuning(model) is not None else "lora"
    path = weights_file(stage_dir, tuning)
    load_trainable_state(model, load_file(str(path)), path)
