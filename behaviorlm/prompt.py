"""The one prompt renderer: training rows, evaluation and the service all call it.

Prompt version v2 (the packed line format). A prompt is a header line, then one line per event
with the event's time and context BEFORE its name::

    A user's events, oldest first (day hour +gap | context: behavior)
    Wednesday 00h: Organization
    Wednesday 01h +22m | weather: Rain: Bakery
    Saturday 11h +1h | weather: Clear:

The model is read at the last token before a name (the ``:`` that ends a line's head): that
position has seen the whole history plus what is known about the event, and not the event
itself. A training row is one user's consecutive events rendered this way; every line after the
first is a readout, so one forward trains on every event of the row. A served prompt is the last
history lines plus the predicted event's head, which is exactly a training row's prefix up to a
readout.

Text is kept as *pieces* (the header, then per event its head and its name): each piece is
tokenised on its own (``PieceEncoder``) and the ids concatenated, so the ids of a served prompt
and of a training row agree token for token whatever the tokenizer would merge across pieces,
and the label tokens of a behavior (``behaviorlm.labels``) are exactly the tokens of its name
piece.

Any change to the rendered text must bump ``PROMPT_VERSION``: adapter manifests record it and
loading refuses an adapter trained on another version.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from behaviorlm.events import Event, Sample, normalize_behavior

PROMPT_VERSION = "v2"
HEADER = "A user's events, oldest first (day hour +gap | context: behavior)"
# Whole weekday names: one token each in SmolLM2's tokenizer ("Fri" is two), and no prefix of a
# behavior name ("Sat" -> "Satay Restaurant" misled the first scoring format).
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# A line whose event has neither a time nor a context still needs a head to read at.
UNKNOWN_HEAD = "-"


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
    """Context fields in key order (the same dict always renders the same text); whitespace in
    values is collapsed so a value can never start a new line."""
    return ", ".join(f"{k}: {' '.join(str(context[k]).split())}" for k in sorted(context))


def event_head(
    ts: datetime | None, context: Mapping[str, str] | None, prev: datetime | None
) -> str:
    """The head piece of a line: newline, time fields, context, and the ``:`` read out."""
    fields: list[str] = []
    if ts is not None:
        fields = [_WEEKDAYS[ts.weekday()], f"{ts.hour:02d}h"]
        gap = format_gap(prev, ts)
        if gap:
            fields.append(gap)
    when = " ".join(fields)
    ctx = format_context(context or {})
    head = f"{when} | {ctx}" if when and ctx else (when or ctx or UNKNOWN_HEAD)
    return "\n" + head + ":"


def name_piece(behavior: str) -> str:
    """The name piece of a line; its tokens are the behavior's label tokens."""
    return " " + normalize_behavior(behavior)


@dataclass(frozen=True)
class Prompt:
    """Rendered pieces: ``HEADER``, then (head, name) per history event, then the readout's head.

    ``text`` is what a person reads; engines tokenise ``pieces`` with ``PieceEncoder``.
    """

    pieces: tuple[str, ...]

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def __str__(self) -> str:
        return self.text


def history_pieces(events: Sequence[Event]) -> list[str]:
    """(head, name) for each event; the first event has no gap (nothing before it is shown)."""
    pieces: list[str] = []
    prev: datetime | None = None
    for event in events:
        pieces += [event_head(event.timestamp, event.context, prev), name_piece(event.behavior)]
        prev = event.timestamp if event.timestamp is not None else prev
    return pieces


def last_time(events: Sequence[Event]) -> datetime | None:
    return next((e.timestamp for e in reversed(events) if e.timestamp is not None), None)


def render_prompt(
    history: Sequence[Event],
    now: datetime | None = None,
    now_context: Mapping[str, str] | None = None,
) -> Prompt:
    """What the model reads to predict the next event: it ends at the readout's ``:``."""
    return Prompt(
        (HEADER, *history_pieces(history), event_head(now, now_context, last_time(history)))
    )


def render_sample(sample: Sample) -> Prompt:
    return render_prompt(sample.history, sample.now, sample.now_context)


class TokenizerLike(Protocol):
    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


class PieceEncoder:
    """Token ids of rendered pieces: each piece tokenised alone, the first with the tokenizer's
    special tokens (a BOS where the tokenizer adds one), the ids concatenated.

    Names and the header repeat across prompts: an LRU cache of ``cache_size`` pieces keeps
    serving from re-tokenising them.
    """

    def __init__(self, tokenizer: TokenizerLike, cache_size: int = 50_000) -> None:
        self.tokenizer = tokenizer
        self._size = cache_size
        self._cache: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._lock = threading.Lock()  # the service encodes from several threads
        self.header_ids = tuple(tokenizer.encode(HEADER))

    def piece(self, text: str) -> tuple[int, ...]:
        with self._lock:
            ids = self._cache.get(text)
            if ids is not None:
                self._cache.move_to_end(text)
                return ids
        ids = tuple(self.tokenizer.encode(text, add_special_tokens=False))
        with self._lock:
            self._cache[text] = ids
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return ids

    def encode_batch(self, texts: Sequence[str]) -> list[tuple[int, ...]]:
        """Ids of many pieces at once, uncached (the fast tokenizer's batch call gives the same
        ids as ``piece``; a test checks it): for building training rows."""
        if not texts:
            return []
        batch: Any = self.tokenizer
        if not callable(batch):
            return [tuple(self.tokenizer.encode(t, add_special_tokens=False)) for t in texts]
        return [tuple(ids) for ids in batch(list(texts), add_special_tokens=False)["input_ids"]]

    def encode(self, prompt: Prompt) -> list[int]:
        """Ids of a prompt (its first piece must be the header)."""
        if not prompt.pieces or prompt.pieces[0] != HEADER:
            raise ValueError("a prompt starts with the header piece")
        ids = list(self.header_ids)
        for text in prompt.pieces[1:]:
            ids.extend(self.piece(text))
        return ids

    def label_tokens(self, behavior: str) -> tuple[int, ...]:
        """The label tokens of a behavior: its name piece's ids."""
        return self.piece(name_piece(behavior))
