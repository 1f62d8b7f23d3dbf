"""The one prompt renderer: training, evaluation and the service all call it.

The prompt is short on purpose (prompt length is the main cost of CPU training and serving):
an instruction, one line per history event with its weekday, hour, gap since the previous event
and optional context, then what is known about the predicted event ("Now: Sat 11h +3h"), then
"Next:". The model answers with the behavior's name and an end marker (``ANSWER_END``); the
answer is tokenised on its own and appended to the prompt's tokens, so training and scoring see
exactly the same ids at the boundary.

Any change to the rendered text must bump ``PROMPT_VERSION``: adapter manifests record it and
loading refuses an adapter trained on another version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from behaviorlm.events import Event, Sample, normalize_behavior

PROMPT_VERSION = "v1"
INSTRUCTION = "Predict the user's next behavior from their history."
ANSWER_END = "\n"
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def format_gap(prev: datetime | None, cur: datetime | None) -> str:
    """Compact time since the previous event: +45m, +5h, +3d; empty when unknown."""
    if prev is None or cur is None or (prev.tzinfo is None) != (cur.tzinfo is None):
        return ""
    seconds = max(0.0, (cur - prev).total_seconds())
    if seconds < 3600:
        return f"+{int(seconds // 60)}m"
    if seconds < 48 * 3600:
        return f"+{int(seconds // 3600)}h"
    return f"+{int(seconds // 86400)}d"


def format_context(context: Mapping[str, str]) -> str:
    """Context fields in key order, so the same dict always renders the same text."""
    if not context:
        return ""
    return " | " + ", ".join(f"{k}: {context[k]}" for k in sorted(context))


def _time_fields(ts: datetime | None, prev: datetime | None) -> list[str]:
    if ts is None:
        return []
    fields = [_WEEKDAYS[ts.weekday()], f"{ts.hour:02d}h"]
    gap = format_gap(prev, ts)
    if gap:
        fields.append(gap)
    return fields


def render_event(event: Event, prev: datetime | None) -> str:
    parts = [*_time_fields(event.timestamp, prev), event.behavior]
    return " ".join(parts) + format_context(event.context)


def render_prompt(
    history: Sequence[Event],
    now: datetime | None = None,
    now_context: Mapping[str, str] | None = None,
) -> str:
    """The text the model reads; it ends right before the answer."""
    lines = [INSTRUCTION, "History:"]
    prev: datetime | None = None
    for event in history:
        lines.append(render_event(event, prev))
        prev = event.timestamp if event.timestamp is not None else prev
    now_fields = _time_fields(now, prev)
    now_ctx = format_context(now_context or {})
    if now_fields:
        lines.append("Now: " + " ".join(now_fields) + now_ctx)
    elif now_ctx:
        lines.append("Now:" + now_ctx.removeprefix(" |"))
    lines.append("Next:")
    return "\n".join(lines)


def render_answer(behavior: str) -> str:
    """The answer the model is trained to emit (and whose tokens the answer trie holds)."""
    return " " + normalize_behavior(behavior) + ANSWER_END


def render_sample(sample: Sample) -> tuple[str, str | None]:
    """(prompt, answer) for a sample; the answer is None when the sample has no target."""
    prompt = render_prompt(sample.history, sample.now, sample.now_context)
    return prompt, (render_answer(sample.target) if sample.target is not None else None)
