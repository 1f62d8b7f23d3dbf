"""A generated behavior log with learnable structure, for tests, examples and the benchmark.

Each event's behavior is drawn from one of four sources, so a model can beat the frequency
baseline: the user's favourites (5 per user), the behavior paired with the previous draw
(``pairs``: after "music 3" often comes its fixed partner), a time-of-day table (morning,
daytime, evening and night favour different behaviors) and the global long-tail (Zipf)
distribution. Context ``place`` (home/work/out) follows the hour. ``category`` is a parent
group per behavior (for the ``parent`` fallback).

From a log to a prepared dataset in one call::

    from behaviorlm.training.data.pipeline import prepare_log
    from behaviorlm.training.data.synthetic import make_synthetic_log, SYNTHETIC_COLUMNS
    ds = prepare_log(make_synthetic_log(300, 30_000, 60, seed=0), out_dir, **SYNTHETIC_COLUMNS)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

GROUPS = ("music", "news", "chat", "game", "shop", "map", "photo", "mail")
# Keyword arguments of prepare_log that use the synthetic log's context and parents.
SYNTHETIC_COLUMNS: dict[str, Any] = {"context_cols": ("place",), "parent_col": "category"}


def behavior_names(n_behaviors: int) -> list[str]:
    return [f"{GROUPS[i % len(GROUPS)]} {i // len(GROUPS) + 1}" for i in range(n_behaviors)]


def make_synthetic_log(
    n_users: int,
    n_events: int,
    n_behaviors: int,
    seed: int = 0,
    *,
    zipf: float = 1.1,
    start: str = "2024-01-01",
    tz_offset: str | None = None,
) -> pd.DataFrame:
    """Columns ``user_id, timestamp, behavior, category, place``; one row per event.

    Users get unequal history lengths (geometric-ish), timestamps move forward by exponential
    gaps (mean 3 hours). ``timestamp`` is naive datetime64, or ISO-8601 text with the given
    offset (e.g. ``"+08:00"``) when ``tz_offset`` is set. Rows are ordered by user then time.
    """
    if n_users < 1 or n_events < n_users or n_behaviors < 2:
        raise ValueError("need n_users >= 1, n_events >= n_users and n_behaviors >= 2")
    rng = np.random.default_rng(seed)
    names = np.array(behavior_names(n_behaviors), dtype=object)
    global_w = 1.0 / np.arange(1, n_behaviors + 1) ** zipf
    global_w /= global_w.sum()

    # Unequal history lengths summing to n_events, each user at least one event.
    weights = rng.lognormal(0.0, 1.0, n_users)
    lengths = 1 + np.floor(weights / weights.sum() * (n_events - n_users)).astype(np.int64)
    lengths[: n_events - int(lengths.sum())] += 1
    user = np.repeat(np.arange(n_users), lengths)
    first = np.repeat(np.cumsum(lengths) - lengths, lengths)

    gaps = rng.exponential(3 * 3600, n_events)
    gaps[np.arange(n_events) == first] = rng.uniform(0, 30 * 86400, n_users)
    seconds = np.cumsum(gaps)
    starts = np.cumsum(lengths) - lengths
    seconds -= np.repeat(seconds[starts] - gaps[starts], lengths)
    stamps = pd.Timestamp(start) + pd.to_timedelta(seconds.astype(np.int64), unit="s")
    hour = stamps.hour.to_numpy()
    bucket = np.digitize(hour, [6, 12, 18]) % 4  # 0 night, 1 morning, 2 day, 3 evening

    # Favourites from a flatter distribution: users differ from each other, not only the tail.
    favourites = _draw(rng, np.sqrt(global_w), (n_users, 5))
    pairs = rng.permutation(n_behaviors)
    bucket_w = np.stack([global_w[rng.permutation(n_behaviors)] for _ in range(4)])
    base = _draw(rng, global_w, n_events)
    timed = _draw_rows(rng, bucket_w, bucket)
    fav = favourites[user, rng.integers(0, 5, n_events)]
    source = rng.choice(4, size=n_events, p=[0.4, 0.25, 0.2, 0.15])
    # A "follow" event repeats the partner of the previous event's own draw (not of its final
    # behavior), which keeps this vectorised; the partner is still visible in the history.
    drawn = np.where(source <= 1, fav, np.where(source == 2, timed, base))
    follows = (source == 1) & (np.arange(n_events) != first)
    behavior = np.where(follows, pairs[np.roll(drawn, 1)], drawn)

    place = np.where(
        (hour >= 9) & (hour < 17) & (stamps.dayofweek.to_numpy() < 5),
        "work",
        np.where((hour >= 22) | (hour < 7), "home", rng.choice(["home", "out"], n_events)),
    )
    timestamp: Any = stamps
    if tz_offset is not None:
        timestamp = stamps.strftime("%Y-%m-%dT%H:%M:%S") + tz_offset
    return pd.DataFrame(
        {
            "user_id": np.char.add("u", user.astype(str)),
            "timestamp": timestamp,
            "behavior": names[behavior],
            "category": np.array(GROUPS, dtype=object)[behavior % len(GROUPS)],
            "place": place,
        }
    )


def _draw(rng: np.random.Generator, weights: np.ndarray, size: Any) -> np.ndarray:
    cdf = np.cumsum(weights)
    u = rng.random(size) * cdf[-1]
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(weights) - 1)


def _draw_rows(rng: np.random.Generator, weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One draw per element from the distribution ``weights[rows[i]]`` (rows normalised)."""
    k, n = weights.shape
    cdf = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1) + np.arange(k)[:, None]
    flat = cdf.ravel()
    u = rows + rng.random(len(rows)) * 0.999999
    return np.minimum(np.searchsorted(flat, u, side="right") - rows * n, n - 1)
