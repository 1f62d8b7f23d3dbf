"""The transformers + peft engine: the embedded default without a GPU.

Requests are grouped by adapter; each group is scored by ``readout.score_prompts`` (one forward
per batch, one readout per prompt) with that adapter active (peft ``set_adapter``), or with the
adapters disabled for base-model requests. ``merge=True`` folds each adapter into the
weights, which is faster on CPU; each merged adapter is a full model copy (a hot-swapped version
is merged into a fresh load of the base, the old copy freed when it is unloaded), so the
service loads only its default adapter that way. Unmerged adapters are kept in
the model's dtype (``autocast_adapter_dtype=False``): peft's default upcasts them to fp32 next to a
bf16 model, which measured ~30% slower on this CPU for no useful precision.
``backend="openvino"`` (with ``merge``, fp32, CPU) runs the merged decoder as an OpenVINO graph
(``openvino_decoder``): the same answers, faster on CPUs without native bf16; ``"auto"`` picks it
where that holds and openvino is installed. A fully tuned adapter (manifest ``tuning: full``)
is the whole model saved beside its manifest: it is loaded as its own model copy and scored
with nothing to switch (under ``merge`` it takes a merged adapter's place).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np

from behaviorlm.base_model import BaseModel
from behaviorlm.dtypes import DtypeChoice, resolve_dtype_here, resolve_torch_dtype
from behaviorlm.errors import EngineError, InputError
from behaviorlm.labels import LabelHead
from behaviorlm.prompt import PieceEncoder
from behaviorlm.scoring.base import (
    AdapterSpec,
    HeadCache,
    ScoreRequest,
    ScoreResult,
    ScoringEngine,
)
from behaviorlm.scoring.openvino_decoder import (
    BACKEND_CHOICES,
    BackendChoice,
    OpenVINODecoder,
    choose_backend,
    require_openvino,
)
from behaviorlm.scoring.readout import TrainedHeads, TrainedRows, head_rows, score_prompts

__all__ = ["TransformersEngine", "request_temperature"]


def request_temperature(request: ScoreRequest, adapters: dict[str, AdapterSpec]) -> float:
    """The request's temperature, else the adapter's calibrated one, else 1 (base model)."""
    if request.temperature is not None:
        if not request.temperature > 0:
            raise InputError(f"score request: temperature must be > 0, got {request.temperature}")
        return float(request.temperature)
    if request.adapter is None:
        return 1.0
    return float(adapters[request.adapter].manifest.calibration.temperature)


def check_adapters_known(
    requests: Sequence[ScoreRequest], adapters: dict[str, AdapterSpec]
) -> None:
    for i, req in enumerate(requests):
        if req.adapter is not None and req.adapter not in adapters:
            raise InputError(
                f"score request {i}: adapter {req.adapter!r} is not loaded "
                f"(loaded: {sorted(adapters) or 'none'})"
            )


class TransformersEngine(ScoringEngine):
    """transformers + peft; batched constrained scoring with any mix of adapters."""

    name = "transformers"

    def __init__(
        self,
        base: BaseModel,
        dtype: DtypeChoice = "auto",
        merge: bool = False,
        batch_size: int = 32,
        head_cache_size: int = 64,
        device: str | None = None,
        backend: BackendChoice = "torch",
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        if backend not in BACKEND_CHOICES:
            raise InputError(f"backend: expected one of {list(BACKEND_CHOICES)}, got {backend!r}")
        self.base = base
        self.merge = merge
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.torch_dtype = resolve_torch_dtype(dtype)
        dtype_name = resolve_dtype_here(dtype)
        self.backend = choose_backend(
            backend, merged=merge, dtype=dtype_name, cuda=self.device != "cpu"
        )
        if self.backend == "openvino":
            self._check_openvino(merge, dtype_name)
        self.tokenizer = AutoTokenizer.from_pretrained(str(base.path))
        self.encoder = PieceEncoder(self.tokenizer)
        model: Any = AutoModelForCausalLM.from_pretrained(str(base.path), dtype=self.torch_dtype)
        self._model: Any = model.to(self.device).eval()
        self._peft: Any = None  # PeftModel once an unmerged adapter is loaded
        # fully tuned adapters (manifest tuning "full"): each its own model, unmerged mode
        self._full: dict[str, Any] = {}
        # merge=True: adapter -> (its merged model, its OpenVINO decoder or None)
        self._merged: dict[str, tuple[Any, Any]] = {}
        # merge_and_unload writes into the model it is given, so only the first merge may start
        # from the loaded model; after it (even once every merged adapter is unloaded) a merge
        # starts from a fresh load of the base
        self._model_is_base = True
        self._specs: dict[str, AdapterSpec] = {}
        self.heads = HeadCache(self.encoder, head_cache_size)
        self._trained = TrainedHeads(self.device, head_cache_size)
        pad = self.tokenizer.pad_token_id
        self._pad_id = int(pad if pad is not None else self.tokenizer.eos_token_id)
        # peft's active adapter is model state: one group at a time.
        self._lock = threading.RLock()

    def _check_openvino(self, merge: bool, dtype: str) -> None:
        if not merge:
            raise InputError("backend 'openvino' converts the merged model: it needs merge=True")
        if self.device != "cpu":
            raise InputError(f"backend 'openvino' runs on the CPU, not {self.device!r}")
        if dtype != "float32":
            raise InputError(
                "backend 'openvino' runs fp32: set dtype float32 (or auto on a CPU "
                "without native bf16)"
            )
        require_openvino()

    @property
    def serves_one_adapter(self) -> bool:
        return bool(self.merge)

    @property
    def served_as(self) -> tuple[str, str]:
        return (self.backend, str(self.torch_dtype).removeprefix("torch."))

    @property
    def adapters(self) -> dict[str, AdapterSpec]:
        return dict(self._specs)

    def load_adapter(self, spec: AdapterSpec) -> None:
        from peft import PeftModel

        spec.manifest.check_compatible(self.base.ref, self.encoder, where=str(spec.path))
        spec.manifest.label_head()  # colliding names are refused before anything is loaded
        trained = TrainedHeads.load(spec, int(self._model.config.hidden_size))
        with self._lock:
            self._check_same_kind(spec)
            if spec.manifest.tuning == "full":
                self._load_full(spec)
            elif self.merge:
                self._merge(spec)
            elif self._peft is None:
                self._peft = PeftModel.from_pretrained(
                    self._model,
                    str(spec.path),
                    adapter_name=spec.name,
                    autocast_adapter_dtype=False,
                ).eval()
            else:
                if spec.name in self._specs:
                    self._peft.delete_adapter(spec.name)
                try:
                    self._peft.load_adapter(
                        str(spec.path), adapter_name=spec.name, autocast_adapter_dtype=False
                    )
                except Exception as exc:
                    # peft injects the adapter's layers before reading its weights: a corrupt
                    # file would leave a half-loaded adapter behind, scoring with random LoRA.
                    if spec.name in self._peft.peft_config:
                        self._peft.delete_adapter(spec.name)
                    raise EngineError(
                        f"{spec.path}: adapter weights could not be loaded "
                        f"({type(exc).__name__}: {exc})"
                    ) from exc
                self._peft.eval()
            self._specs[spec.name] = spec
            self._trained.set(spec.name, trained)

    def _merge(self, spec: AdapterSpec) -> None:
        """``spec`` merged into its own copy of the base weights (the first adapter into the
        loaded model, each later one, e.g. a hot-swapped new version, into a fresh load of the
        base: a full model copy each until the old one is unloaded)."""
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        if spec.name in self._merged:
            raise EngineError(f"adapter {spec.name!r} is already merged; load it under a new name")
        base: Any = self._model
        if not self._model_is_base:  # it holds an adapter's weights (or is a tuned model)
            base = AutoModelForCausalLM.from_pretrained(str(self.base.path), dtype=self.torch_dtype)
            base = base.to(self.device).eval()
        model = PeftModel.from_pretrained(base, str(spec.path)).merge_and_unload().eval()
        self._install_merged(spec.name, model)

    def _install_merged(self, name: str, model: Any) -> None:
        """``model`` serves adapter ``name`` (with its OpenVINO decoder on that backend) and is
        the model the next merge starts from a fresh base beside."""
        import torch

        forward = None
        if self.backend == "openvino":
            forward = OpenVINODecoder(model, torch.get_num_threads())
        self._merged[name] = (model, forward)
        self._model = model
        self._model_is_base = False

    def _load_full(self, spec: AdapterSpec) -> None:
        """A fully tuned adapter: the whole model saved beside its manifest, loaded as its own
        model in the engine's dtype (with ``merge``, it stands where a merged adapter would)."""
        from transformers import AutoModelForCausalLM

        if spec.name in self._merged:
            raise EngineError(f"adapter {spec.name!r} is already merged; load it under a new name")
        weights = spec.manifest.weights_file(spec.path)
        if not weights.exists() or not (spec.path / "config.json").exists():
            raise InputError(
                f"{spec.path}: the manifest says tuning 'full', but {weights.name} or "
                "config.json (the tuned model) is missing"
            )
        try:
            model: Any = AutoModelForCausalLM.from_pretrained(
                str(spec.path), dtype=self.torch_dtype
            )
        except Exception as exc:
            raise EngineError(
                f"{spec.path}: the fully tuned model could not be loaded "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        model = model.to(self.device).eval()
        if not self.merge:
            self._full[spec.name] = model  # a reload replaces the old version's model
            return
        self._install_merged(spec.name, model)

    def _check_same_kind(self, spec: AdapterSpec) -> None:
        """A name reloaded unmerged must keep its kind: a LoRA adapter lives in the peft model,
        a fully tuned one is a model of its own, and neither can replace the other in place."""
        if self.merge or spec.name not in self._specs:
            return
        old = self._specs[spec.name].manifest.tuning
        if old != spec.manifest.tuning:
            raise EngineError(
                f"{spec.path}: adapter {spec.name!r} is loaded with tuning {old!r} and this one "
                f"has {spec.manifest.tuning!r}; unload it first or load it under a new name"
            )

    def _trained_rows(self, adapter: str, head: LabelHead) -> TrainedRows:
        """The trained head's rows for ``head``'s names, on the device (cached). Names the head
        was not trained on take the initialisation rule's rows from the adapter's own output
        embeddings (a fully tuned model's differ from the base's)."""
        import torch

        readout = self._full.get(adapter)
        if readout is None:  # merged: the adapter's own copy (not the latest one loaded)
            readout = self._merged[adapter][0] if adapter in self._merged else self._model

        def union_weight() -> np.ndarray:
            union = torch.as_tensor(head.union, device=self.device)
            return head_rows(readout, union)[0].float().cpu().numpy()

        return self._trained.rows(adapter, head, union_weight)

    def unload_adapter(self, name: str) -> None:
        with self._lock:
            if name not in self._specs:
                raise InputError(f"adapter {name!r} is not loaded")
            if name in self._merged:
                model, _ = self._merged.pop(name)
                if self._merged and self._model is model:
                    self._model = next(iter(self._merged.values()))[0]
            elif name in self._full:
                del self._full[name]
            else:
                self._peft.delete_adapter(name)
            del self._specs[name]
            self._trained.drop(name)

    def _active(self, adapter: str | None) -> tuple[Any, AbstractContextManager[Any], Any]:
        """The model to call for a group, the context that selects its adapter, and the
        forward to run (None: torch's)."""
        if self.merge:
            if adapter is None:
                raise InputError(
                    f"base-model request: this engine merges its adapters "
                    f"({', '.join(self._merged) or 'none yet'}) into the weights and cannot "
                    "score the base model"
                )
            model, forward = self._merged[adapter]
            return model, nullcontext(), forward
        if adapter is not None and adapter in self._full:
            return self._full[adapter], nullcontext(), None
        if self._peft is None:
            return self._model, nullcontext(), None
        if adapter is None:
            return self._peft, self._peft.disable_adapter(), None
        self._peft.set_adapter(adapter)
        return self._peft, nullcontext(), None

    def score_batch(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        requests = list(requests)
        check_adapters_known(requests, self._specs)
        groups: dict[str | None, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(req.adapter, []).append(i)
        results: list[ScoreResult | None] = [None] * len(requests)
        for adapter, members in groups.items():
            batch = [requests[i] for i in members]
            heads = [self.heads.get(tuple(r.behaviors)) for r in batch]
            temps = [request_temperature(r, self._specs) for r in batch]
            ids = [self.encoder.encode(r.prompt) for r in batch]
            with self._lock:
                trained = self._trained.get(adapter)
                rows = None
                extra = None
                if trained is not None and adapter is not None:
                    rows = [self._trained_rows(adapter, h) for h in heads]
                    extra = [
                        trained.feature_logits(r.past, h.names)
                        for r, h in zip(batch, heads, strict=True)
                    ]
                model, context, forward = self._active(adapter)
                with context:
                    scored = score_prompts(
                        model,
                        ids,
                        heads,
                        temps,
                        self._pad_id,
                        batch_size=self.batch_size,
                        trained=rows,
                        extra=extra,
                        forward=forward,
                    )
            for i, head, (probs, mass) in zip(members, heads, scored, strict=True):
                results[i] = ScoreResult(head.names, probs, mass, forward_passes=1)
        return [r for r in results if r is not None]

    def close(self) -> None:
        with self._lock:
            self._peft = None
            self._model = None
            self._merged = {}
            self._full = {}
