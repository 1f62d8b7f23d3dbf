"""The serving layer: a ``PredictRequest`` becomes an engine request (validated against the
served adapter, its prompt rendered with the adapter's history window), and a ``ScoreResult``
becomes a ``PredictResult``. No engine state here: ``behaviorlm.service.runtime`` owns the engine,
the served adapters, admission and hot swaps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from behaviorlm.errors import BehaviorLMError, InputError
from behaviorlm.events import Event, check_sorted, normalize_behavior
from behaviorlm.manifest import AdapterManifest
from behaviorlm.prompt import render_prompt
from behaviorlm.repeats import RepeatInput
from behaviorlm.scoring import ScoreRequest, ScoreResult, ScoringEngine
from behaviorlm.service.faults import InvalidRequest
from behaviorlm.service.schemas import Prediction, PredictRequest, PredictResult


@dataclass(frozen=True)
class Served:
    """An adapter as requests see it: the public name and the engine's key for this version."""

    name: str
    key: str
    manifest: AdapterManifest
    vocabulary: frozenset[str]
    anchors: frozenset[str]


@dataclass(frozen=True)
class Prepared:
    """A validated prediction request, ready to score."""

    served: Served
    score: ScoreRequest
    top_k: int
    unknown_history: int
    history_used: int
    untrained: frozenset[str] = frozenset()
    user_id: str | None = None


def default_now(history: Sequence[Event]) -> datetime | None:
    """Now in the timezone of the last timestamped event (naive if it is naive); None when the
    history has no timestamps (such logs carry coarse time in their context instead)."""
    last = next((e.timestamp for e in reversed(history) if e.timestamp is not None), None)
    if last is None:
        return None
    if last.tzinfo is None:
        return datetime.now(UTC).replace(tzinfo=None)
    return datetime.now(last.tzinfo)


def prepare(
    req: PredictRequest, served: Served, engine: ScoringEngine, where: str = ""
) -> Prepared:
    """Check a request against the adapter that serves it and render its prompt (``where``:
    the field path prefix of error messages, e.g. ``items[3]``)."""
    prefix = f"{where}." if where else ""
    full = history_events(req, prefix)
    now = req.now if req.now is not None else default_now(full)
    # The prompt shows the last K events, as training and evaluation read them; a trained
    # head's repeat features read up to its repeat_window of the whole history sent.
    keep = served.manifest.history_events
    history = full[-keep:] if keep is not None else full
    prompt = render_prompt(history, now, dict(req.now_context))
    past = repeat_input(served.manifest, full, now, len(history))
    behaviors, untrained = candidates(req, served, engine, prefix)
    unknown_history = sum(1 for e in history if e.behavior not in served.vocabulary)
    return Prepared(
        served=served,
        score=ScoreRequest(prompt=prompt, behaviors=behaviors, adapter=served.key, past=past),
        top_k=req.top_k,
        unknown_history=unknown_history,
        history_used=len(history),
        untrained=untrained,
        user_id=req.user_id,
    )


def repeat_input(
    manifest: AdapterManifest, history: Sequence[Event], now: datetime | None, shown: int
) -> RepeatInput | None:
    """What the adapter's repeat features read (None: its head has none)."""
    head = manifest.head
    if head is None or head.repeat_window == 0:
        return None
    past = history[-head.repeat_window :]
    return RepeatInput.of_events(
        [e.behavior for e in past], [e.timestamp for e in past], now, shown
    )


def history_events(req: PredictRequest, prefix: str) -> list[Event]:
    """The request's history as events: names normalised, one kind of timestamp, in order."""
    history = []
    for i, e in enumerate(req.history):
        behavior = normalize_behavior(e.behavior)
        if not behavior:
            raise InvalidRequest("behavior is blank", field=f"{prefix}history[{i}].behavior")
        history.append(Event(behavior, e.timestamp, dict(e.context)))
    zones = {e.timestamp.tzinfo is None for e in history if e.timestamp is not None}
    if len(zones) > 1:
        raise InvalidRequest(
            "history mixes timestamps with and without a UTC offset; use one kind",
            field=f"{prefix}history",
        )
    try:
        check_sorted(history, f"{prefix}history")
    except BehaviorLMError as exc:
        raise InvalidRequest(str(exc), field=f"{prefix}history") from exc
    return history


def candidates(
    req: PredictRequest, served: Served, engine: ScoringEngine, prefix: str
) -> tuple[tuple[str, ...], frozenset[str]]:
    """The behaviors to score and those of them outside the adapter's vocabulary."""
    if req.candidates is None:
        return tuple(e.name for e in served.manifest.vocabulary), frozenset()
    behaviors = tuple(dict.fromkeys(normalize_behavior(c) for c in req.candidates))
    where = f"{prefix}candidates"
    blank = [i for i, c in enumerate(req.candidates) if not normalize_behavior(c)]
    if blank:
        raise InvalidRequest("candidate is blank", field=f"{where}[{blank[0]}]")
    unknown = [c for c in behaviors if c not in served.vocabulary]
    if unknown and not req.allow_new_behaviors:
        shown = ", ".join(repr(u) for u in unknown[:10])
        more = f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else ""
        raise InvalidRequest(
            f"candidates not in adapter {served.name!r}'s vocabulary: {shown}{more}; set "
            "allow_new_behaviors: true to score new behaviors by their names",
            type="unknown_candidate",
            field=where,
        )
    if unknown:
        try:  # two names with the same label tokens cannot be told apart
            engine.label_head(behaviors)
        except InputError as exc:
            raise InvalidRequest(str(exc), type="unknown_candidate", field=where) from exc
    return behaviors, frozenset(unknown)


def to_result(prepared: Prepared, result: ScoreResult) -> PredictResult:
    """The API's answer for one scored request."""
    served = prepared.served
    return PredictResult(
        predictions=[
            Prediction(
                behavior=b,
                probability=min(1.0, max(0.0, p)),
                anchor=b in served.anchors,
                trained=b not in prepared.untrained,
            )
            for b, p in result.top(prepared.top_k)
        ],
        label_mass=float(result.label_mass),
        model=served.name,
        adapter_version=served.manifest.version,
        stage=served.manifest.stage,
        base_model=served.manifest.base_model.id,
        unknown_history_behaviors=prepared.unknown_history,
        history_events_used=prepared.history_used,
        user_id=prepared.user_id,
    )
