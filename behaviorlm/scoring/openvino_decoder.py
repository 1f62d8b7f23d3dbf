"""The merged decoder as an OpenVINO graph: a faster exact forward on CPUs without native bf16.

Measured with ``benchmarks/cpu_engine_benchmark.py`` (the demo adapter, 10-event PJ prompts of
154 tokens, 2 threads, fp32): on a 2-core AMD EPYC with AVX2 only (2026-12-07) one prediction
p50 328 ms vs 368 ms for torch (-11%), batch 32 3.64 vs 2.71 predictions/s (+34%); on a 2-core
Xeon capped at AVX2, 173 vs 276 ms. The answers are the same to 3e-6 in probability (top-5
agreement 1.000 over 320 prompts): OpenVINO runs the same fp32 arithmetic, fusing the small
ops (norms, rotary embeddings, activations) that torch runs one kernel at a time.

Only the decoder is converted: the readout (label-word or trained head, label mass) stays the
engine's, so every scoring format works unchanged. The graph holds the merged weights: one
graph per merged adapter (``merge``), built when the adapter loads (a few seconds).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, get_args

from behaviorlm.errors import EngineError

Backend = Literal["torch", "openvino"]
BackendChoice = Literal["auto", "torch", "openvino"]
BACKEND_CHOICES: tuple[str, ...] = get_args(BackendChoice)


def openvino_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def require_openvino() -> None:
    if not openvino_available():
        raise EngineError(
            "cpu_backend 'openvino' needs the openvino package: pip install 'behaviorlm[openvino]'"
        )


def choose_backend(choice: str, *, merged: bool, dtype: str, cuda: bool) -> Backend:
    """``auto``: OpenVINO where it serves the same answers faster (a merged fp32 model on a CPU
    with openvino installed), else torch; an explicit choice is kept (the engine checks it)."""
    if choice not in BACKEND_CHOICES:
        raise ValueError(f"cpu_backend: expected one of {BACKEND_CHOICES}, got {choice!r}")
    if choice != "auto":
        return choice  # type: ignore[return-value]
    fits = merged and dtype == "float32" and not cuda
    return "openvino" if fits and openvino_available() else "torch"


@contextmanager
def _no_packed_sequence_probe() -> Iterator[None]:
    """transformers probes for packed sequences with ``aten::diff``, which OpenVINO's converter
    lacks; scoring rows are never packed, so the probe is switched off while tracing."""
    import transformers.masking_utils as masking

    probe = masking.find_packed_sequence_indices
    masking.find_packed_sequence_indices = lambda _positions: None  # type: ignore[assignment]
    try:
        yield
    finally:
        masking.find_packed_sequence_indices = probe


class OpenVINODecoder:
    """``hidden_states(model, input_ids)`` for one merged fp32 model, run by OpenVINO's CPU
    plugin. ``transform`` rewrites the converted graph and ``config`` adds compile settings
    (the benchmark's int8 candidate: weight compression and dynamic quantisation).

    Called under the engine's lock (one infer request: OpenVINO requests are not reentrant)."""

    def __init__(
        self,
        model: Any,
        threads: int,
        transform: Callable[[Any], Any] | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        require_openvino()
        import openvino as ov
        import torch

        class Decoder(torch.nn.Module):
            def __init__(self, decoder: Any) -> None:
                super().__init__()
                self.decoder = decoder

            def forward(self, input_ids: Any) -> Any:
                return self.decoder(input_ids=input_ids, use_cache=False).last_hidden_state

        # The tracer warns that `q_length > 1` (sdpa's causal flag) becomes a constant: it is
        # true for every prompt (a header precedes the events), as in the example input.
        with torch.no_grad(), _no_packed_sequence_probe(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            graph = ov.convert_model(
                Decoder(model.model).eval(),
                example_input=(torch.ones(2, 32, dtype=torch.long),),
                input=[("input_ids", [-1, -1], ov.Type.i64)],
            )
        if transform is not None:
            graph = transform(graph)
        settings: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": "f32",  # exact: no silent bf16 on CPUs that have it
            "PERFORMANCE_HINT": "LATENCY",
            **(config or {}),
        }
        self._request = ov.Core().compile_model(graph, "CPU", settings).create_infer_request()

    def __call__(self, _model: Any, input_ids: Any) -> Any:
        import torch

        result = self._request.infer({"input_ids": input_ids.cpu().numpy()})
        return torch.from_numpy(next(iter(result.values())).copy())
