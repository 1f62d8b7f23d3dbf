"""Request and response bodies of the HTTP API (the OpenAPI schema is generated from these).

Limits that depend on settings (history length, batch size) are checked by the routes; the
``Field`` limits here are the hard ceilings that hold whatever the settings say.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from behaviorlm.manifest import Tuning

HARD_MAX_HISTORY = 10_000
MAX_BEHAVIOR_CHARS = 200
MAX_CONTEXT_FIELDS = 32
MAX_CONTEXT_CHARS = 200
MAX_CANDIDATES = 2_000

# Context values go into the prompt verbatim: a bound keeps one request from filling it.
ContextDict = dict[
    Annotated[str, StringConstraints(max_length=MAX_CONTEXT_CHARS)],
    Annotated[str, StringConstraints(max_length=MAX_CONTEXT_CHARS)],
]


class HistoryEvent(BaseModel):
    """One thing the user did, oldest first."""

    model_config = ConfigDict(extra="forbid")
    behavior: str = Field(
        min_length=1,
        max_length=MAX_BEHAVIOR_CHARS,
        description="behavior name as in the adapter's vocabulary; unknown names are allowed",
        examples=["Coffee Shop"],
    )
    timestamp: datetime | None = Field(
        None,
        description="ISO-8601; with a UTC offset the prompt uses its local wall-clock time",
        examples=["2024-05-04T09:12:00+08:00"],
    )
    context: ContextDict = Field(
        default_factory=dict,
        max_length=MAX_CONTEXT_FIELDS,
        description="extra fields rendered after the event (short strings)",
    )


class PredictRequest(BaseModel):
    """One user's history and what is known about the moment to predict."""

    model_config = ConfigDict(extra="forbid")
    history: list[HistoryEvent] = Field(
        max_length=HARD_MAX_HISTORY,
        description="events, oldest first (the server's max_history_events applies)",
    )
    now: datetime | None = Field(
        None,
        description="time of the predicted event; default: the current time in the timezone "
        "of the last timestamped event (none when the history has no timestamps)",
    )
    now_context: ContextDict = Field(
        default_factory=dict,
        max_length=MAX_CONTEXT_FIELDS,
        description="what is known about the predicted event's context",
    )
    top_k: int = Field(5, ge=1, le=100, description="how many behaviors to return")
    user_id: str | None = Field(
        None,
        max_length=200,
        description="opaque id echoed back in the result (never logged, never a metric label)",
    )
    adapter: str | None = Field(
        None,
        max_length=200,
        description="loaded adapter (see /v1/models); default: the server's default adapter",
    )
    candidates: list[str] | None = Field(
        None,
        min_length=1,
        max_length=MAX_CANDIDATES,
        description="restrict the answer to these behaviors; probabilities are renormalised "
        "over them. They must be in the adapter's vocabulary unless allow_new_behaviors is true",
    )
    allow_new_behaviors: bool = Field(
        False,
        description="let candidates name behaviors outside the adapter's vocabulary (a new app "
        "or skill): each is scored by its name alone, like the others, and marked "
        "trained=false in the answer. Without it an unknown candidate is a 422 naming it",
    )


class Prediction(BaseModel):
    behavior: str
    probability: float = Field(ge=0, le=1)
    anchor: bool = Field(description="an anchor (frequent) behavior of the adapter's vocabulary")
    trained: bool = Field(
        description="in the adapter's vocabulary; false: a new behavior scored by its name alone"
    )


class PredictResult(BaseModel):
    """Top-k behaviors of one prediction and the model that made it."""

    predictions: list[Prediction]
    label_mass: float = Field(
        description="the model's raw probability, at the readout, that the next token starts "
        "the name of one of the behaviors (their first tokens, over the whole token vocabulary); "
        "a drift signal: low = the model did not expect any known behavior"
    )
    model: str = Field(description="served adapter name")
    adapter_version: str
    stage: str
    base_model: str
    unknown_history_behaviors: int = Field(
        description="history events whose behavior is not in the adapter's vocabulary"
    )
    history_events_used: int = Field(
        description="history events the prompt showed: the last ones, up to the adapter's "
        "history length"
    )
    user_id: str | None = Field(None, description="the request's user_id, when it had one")


class PredictResponse(PredictResult):
    request_id: str


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Any] = Field(
        min_length=1,
        max_length=1024,
        description="prediction requests; each is validated on its own, so one bad item only "
        "fails that item (the server's max_batch_items applies)",
        json_schema_extra={"items": {"$ref": "#/components/schemas/PredictRequest"}},
    )


class ItemError(BaseModel):
    type: str
    message: str
    field: str | None = None


class BatchItem(BaseModel):
    index: int
    result: PredictResult | None = None
    error: ItemError | None = None


class BatchResponse(BaseModel):
    request_id: str
    results: list[BatchItem]
    failed: int = Field(description="items that got an error instead of a result")


class ErrorDetail(BaseModel):
    type: str = Field(description="machine-readable kind, e.g. invalid_request, overloaded")
    message: str = Field(description="what is wrong and where")
    field: str | None = Field(None, description="the offending request field, when there is one")
    request_id: str | None = None


class ErrorResponse(BaseModel):
    """The body of every 4xx / 5xx response."""

    error: ErrorDetail


class VocabularyItem(BaseModel):
    name: str
    count: int
    anchor: bool


class ModelInfo(BaseModel):
    """A loaded adapter and its manifest's public fields."""

    name: str
    default: bool
    version: str
    stage: str
    strategy: str
    base_model: str
    prompt_version: str
    scoring_format: int = Field(
        description="3: label-word head; 4: trained behavior head with repeat features"
    )
    history_events: int | None = Field(description="history events the prompt shows")
    repeat_window: int = Field(
        0,
        description="history events the trained head's repeat features read (send at least "
        "this many for the best answer; 0: the adapter has none)",
    )
    created_at: datetime
    anchor_share: float
    vocabulary: list[VocabularyItem]
    anchors: list[str]
    tails: list[str]
    calibration: dict[str, Any]
    metrics: dict[str, Any]
    tuning: Tuning = Field(
        "lora",
        description="lora: a LoRA adapter on the base model; full: every weight tuned (the "
        "adapter is a whole model, served by the transformers engine only)",
    )
    lora: dict[str, Any]


class ModelsResponse(BaseModel):
    engine: str
    engine_backend: str | None = Field(
        None,
        description="what computes the forward: torch, openvino (CPU), vllm (scores read from"
        " label-token log-probabilities) or vllm-hidden (read from vLLM's pooling runner's last"
        " hidden state: trained behavior heads)",
    )
    dtype: str | None = Field(None, description="the compute dtype served: float32 or bfloat16")
    default_adapter: str | None
    models: list[ModelInfo]


class HealthResponse(BaseModel):
    status: str = Field(description="'ok', or why not: loading, draining, failed")
    ready: bool
    engine: str | None = None
    adapters: list[str] = Field(default_factory=list)
    detail: str | None = None


class LoadAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$",
        description="served name; loading an existing name swaps in the new version once it "
        "is ready (requests in flight finish on the old one)",
    )
    path: str = Field(
        min_length=1,
        max_length=1000,
        description="adapter directory, relative to the models directory (or absolute inside it)",
    )


class LoadAdapterResponse(BaseModel):
    name: str
    version: str
    replaced_version: str | None
    load_seconds: float


class DrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    draining: bool = Field(True, description="true: refuse new predictions (503); false: resume")
