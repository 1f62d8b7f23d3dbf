"""Events (what a user did) and samples (a history plus the behavior that came next)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from behaviorlm.errors import InputError


def normalize_behavior(name: str) -> str:
    """Canonical form of a behavior name: single spaces, no newlines (the answer end marker)."""
    return " ".join(name.split())


@dataclass(frozen=True, slots=True)
class Event:
    """One thing a user did.

    ``timestamp`` may be None for logs that only know the order of events (then the context
    usually carries coarse time, e.g. SmartThings' weekday and 3-hour bin). A timezone-aware
    timestamp is rendered in its own wall-clock time, which is what behavior follows.
    """

    behavior: str
    timestamp: datetime | None = None
    context: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"behavior": self.behavior}
        if self.timestamp is not None:
            out["timestamp"] = self.timestamp.isoformat()
        if self.context:
            out["context"] = dict(self.context)
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str = "event") -> Event:
        behavior = obj.get("behavior")
        if not isinstance(behavior, str) or not normalize_behavior(behavior):
            raise InputError(
                f"{where}: field 'behavior' must be a non-empty string, got {behavior!r}"
            )
        ts_raw = obj.get("timestamp")
        ts: datetime | None = None
        if ts_raw is not None:
            try:
                ts = datetime.fromisoformat(str(ts_raw))
            except ValueError as exc:
                raise InputError(f"{where}: field 'timestamp' is not ISO-8601: {ts_raw!r}") from exc
        ctx = obj.get("context") or {}
        if not isinstance(ctx, Mapping):
            raise InputError(f"{where}: field 'context' must be an object, got {ctx!r}")
        return cls(
            behavior=normalize_behavior(behavior),
            timestamp=ts,
            context={str(k): str(v) for k, v in ctx.items()},
        )


@dataclass(frozen=True, slots=True)
class Sample:
    """A training / evaluation example: the last K events, what is known about "now", the target.

    ``now`` and ``now_context`` are the time and context of the predicted event: what a caller
    of the service knows at prediction time. ``target`` is None at serving time.
    """

    user_id: str
    history: Sequence[Event]
    target: str | None
    now: datetime | None = None
    now_context: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "user_id": self.user_id,
            "history": [e.to_json() for e in self.history],
            "target": self.target,
        }
        if self.now is not None:
            out["now"] = self.now.isoformat()
        if self.now_context:
            out["now_context"] = dict(self.now_context)
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str = "sample") -> Sample:
        hist = obj.get("history")
        if not isinstance(hist, list):
            raise InputError(f"{where}: field 'history' must be a list")
        now_raw = obj.get("now")
        return cls(
            user_id=str(obj.get("user_id", "")),
            history=tuple(Event.from_json(e, f"{where}.history[{i}]") for i, e in enumerate(hist)),
            target=obj.get("target"),
            now=datetime.fromisoformat(now_raw) if now_raw else None,
            now_context={str(k): str(v) for k, v in (obj.get("now_context") or {}).items()},
        )


def check_sorted(events: Sequence[Event], where: str) -> None:
    """Histories must be chronological; the prompt's gaps mean nothing otherwise."""
    prev: datetime | None = None
    for i, e in enumerate(events):
        if e.timestamp is not None and prev is not None and e.timestamp < prev:
            raise InputError(
                f"{where}[{i}]: timestamp {e.timestamp.isoformat()} is before the previous "
                f"event's {prev.isoformat()}; events must be in time order"
            )
        prev = e.timestamp if e.timestamp is not None else prev
