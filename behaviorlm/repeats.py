"""Repeat-aware features: what a user's own history says about each behavior, as numbers.

A quarter of the next behaviors in the logs measured here (23% of the Context Trails PJ test
targets, 11% of its tail targets) already occur in the ten events a prompt shows, and "the
user's most frequent behavior" beats every tuned LLM on the tail by living on that. The trained
behavior head (``behaviorlm.head``) adds a few learned weights times these features to each
behavior's logit, so the model can use repeats directly instead of reading them off the text.

Per behavior b, over the last ``window`` events before the predicted one (the request's whole
history up to that, not only the K events the prompt shows):

- ``log_count``: log(1 + occurrences of b);
- ``log_count_shown``: log(1 + occurrences of b among the last ``shown`` events, the prompt's);
- ``recency``: 1 / (1 + events since b's last occurrence) (1 for the last event), 0 if absent;
- ``is_last``: 1 if b is the last event;
- ``same_hour``: log(1 + occurrences of b at the predicted event's hour of day);
- ``same_weekday``: log(1 + occurrences of b on the predicted event's weekday).

Hours and weekdays are local wall-clock times (as the prompt renders them); a feature that
needs a time is 0 when the predicted event or the past event has none. Behaviors absent from
the window have all features 0, so the head's features only ever add to a repeated behavior's
logit. Pure Python + numpy: training, evaluation and the service compute them with this code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

FEATURES: tuple[str, ...] = (
    "log_count",
    "log_count_shown",
    "recency",
    "is_last",
    "same_hour",
    "same_weekday",
)
UNKNOWN = -1  # an hour or weekday that is not known


@dataclass(frozen=True)
class RepeatInput:
    """The past a prediction's features read: behaviors oldest first, their local hour and
    weekday (``UNKNOWN`` = no time), the predicted event's hour and weekday, and how many of
    the last events the prompt shows."""

    behaviors: tuple[str, ...]
    hours: tuple[int, ...]
    weekdays: tuple[int, ...]
    now_hour: int = UNKNOWN
    now_weekday: int = UNKNOWN
    shown: int = 0

    def __post_init__(self) -> None:
        if not len(self.behaviors) == len(self.hours) == len(self.weekdays):
            raise ValueError("RepeatInput: behaviors, hours and weekdays differ in length")

    def last(self, window: int) -> RepeatInput:
        """The last ``window`` events only (what an adapter trained with that window read)."""
        if len(self.behaviors) <= window:
            return self
        return RepeatInput(
            self.behaviors[-window:],
            self.hours[-window:],
            self.weekdays[-window:],
            self.now_hour,
            self.now_weekday,
            self.shown,
        )

    @classmethod
    def of_events(
        cls,
        behaviors: Sequence[str],
        times: Sequence[datetime | None],
        now: datetime | None,
        shown: int,
    ) -> RepeatInput:
        """From event names and timestamps (the service's request history)."""
        return cls(
            tuple(behaviors),
            tuple(UNKNOWN if t is None else t.hour for t in times),
            tuple(UNKNOWN if t is None else t.weekday() for t in times),
            UNKNOWN if now is None else now.hour,
            UNKNOWN if now is None else now.weekday(),
            shown,
        )


def features_by_name(past: RepeatInput) -> dict[str, np.ndarray]:
    """The feature vector (``FEATURES`` order, float32) of every behavior in ``past``."""
    n = len(past.behaviors)
    out: dict[str, np.ndarray] = {}
    counts: dict[str, list[float]] = {}
    for pos, name in enumerate(past.behaviors):
        # [count, count shown, last position, same hour, same weekday]
        acc = counts.setdefault(name, [0.0, 0.0, -1.0, 0.0, 0.0])
        acc[0] += 1.0
        if pos >= n - past.shown:
            acc[1] += 1.0
        acc[2] = float(pos)
        if past.now_hour != UNKNOWN and past.hours[pos] == past.now_hour:
            acc[3] += 1.0
        if past.now_weekday != UNKNOWN and past.weekdays[pos] == past.now_weekday:
            acc[4] += 1.0
    for name, (count, shown, last, hour, weekday) in counts.items():
        since = (n - 1) - last
        out[name] = np.asarray(
            [
                np.log1p(count),
                np.log1p(shown),
                1.0 / (1.0 + since),
                1.0 if since == 0 else 0.0,
                np.log1p(hour),
                np.log1p(weekday),
            ],
            dtype=np.float32,
        )
    return out


def feature_matrix(past: RepeatInput, index: Mapping[str, int], size: int) -> np.ndarray:
    """[size, len(FEATURES)] features of behaviors ``index`` maps to rows (others absent)."""
    out = np.zeros((size, len(FEATURES)), dtype=np.float32)
    for name, values in features_by_name(past).items():
        row = index.get(name)
        if row is not None:
            out[row] = values
    return out


def hours_weekdays(local_micros: np.ndarray, has_time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hour of day and weekday (Monday 0) of local wall-clock microseconds since 1970-01-01
    (a Thursday), ``UNKNOWN`` where there is no time: the arrays training reads in bulk."""
    hour_us = 3_600_000_000
    hours = (local_micros // hour_us) % 24
    weekdays = ((local_micros // (24 * hour_us)) + 3) % 7
    hours = np.where(has_time, hours, UNKNOWN).astype(np.int64)
    weekdays = np.where(has_time, weekdays, UNKNOWN).astype(np.int64)
    return hours, weekdays
