"""Metrics for next-behavior prediction, overall and split into anchor and tail behaviors.

Everything is computed from a probability matrix ``probs`` [n, V] (one row per test sample,
columns in vocabulary order), the true class index per sample and a per-class anchor mask.

Conventions (documented once, used everywhere):
- The top-1 prediction is the arg-max with ties going to the lower index (vocabulary order =
  decreasing training frequency). Ranks use the same stable order: rank = 1 + #classes with a
  higher probability + #classes with the same probability and a lower index.
- The anchor (tail) subset of samples is the samples whose TRUE behavior is an anchor (tail).
  Accuracy, HR@5, MRR, NLL, Brier and ECE of a subset average over its samples.
- Per-class precision/recall/F1 always use the top-1 predictions over ALL samples (a tail class
  predicted for an anchor sample is a false positive of that tail class). Macro averages run over
  the classes of the subset that occur in the test set (support > 0); weighted averages weight
  them by support. Classes never in the test set do not enter the averages.
- NLL clips p(true) at 1e-12. Brier is the multi-class score sum_j (p_j - y_j)^2 (0 to 2).
  ECE uses the top-1 confidence in 15 equal-width bins.
- ``ece`` of the anchor (tail) subset conditions on the TRUE behavior, so it is not a calibration
  measure: a perfectly calibrated model that never predicts a tail is always wrong on tail-target
  samples and gets a tail ``ece`` equal to its mean confidence there (most-popular on PJ: overall
  ECE 0.032, tail ``ece`` 0.194). ``ece_by_prediction`` is the one to read: the ECE over the
  samples whose top-1 PREDICTION is an anchor (tail) behavior, i.e. "when the service answers a
  tail behavior with p = 0.3, is it right 30% of the time", which a calibrated model meets for
  every group of predicted classes. ``predictions`` counts those samples (its ECE rests on them).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ECE_BINS = 15
NLL_FLOOR = 1e-12
SUBSETS = ("overall", "anchor", "tail")


def check_inputs(probs: np.ndarray, true: np.ndarray, anchor: np.ndarray) -> None:
    if probs.ndim != 2:
        raise ValueError(f"probs must be [n, V], got shape {probs.shape}")
    n, v = probs.shape
    if true.shape != (n,):
        raise ValueError(f"true must be [n]={n}, got shape {true.shape}")
    if anchor.shape != (v,):
        raise ValueError(f"anchor mask must be [V]={v}, got shape {anchor.shape}")
    if n and (true.min() < 0 or true.max() >= v):
        raise ValueError(f"true indices must be in [0, {v}), got {true.min()}..{true.max()}")


def top1(probs: np.ndarray) -> np.ndarray:
    """Arg-max per row, ties to the lowest index."""
    return np.asarray(np.argmax(probs, axis=1), dtype=np.int64)


def ranks(probs: np.ndarray, true: np.ndarray) -> np.ndarray:
    """1-based rank of the true class in each row (stable tie-break by index)."""
    p_true = probs[np.arange(len(true)), true][:, None]
    higher = (probs > p_true).sum(axis=1)
    cols = np.arange(probs.shape[1])[None, :]
    tied_before = ((probs == p_true) & (cols < true[:, None])).sum(axis=1)
    return np.asarray(1 + higher + tied_before, dtype=np.int64)


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> float:
    if len(confidence) == 0:
        return float("nan")
    return float(
        sum(
            b["weight"] * abs(b["accuracy"] - b["confidence"])
            for b in reliability_bins(confidence, correct, bins)
            if b["count"]
        )
    )


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> list[dict[str, float]]:
    """Equal-width confidence bins (right-closed; confidence 0 falls in the first bin)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    n = max(len(confidence), 1)
    out = []
    for b in range(bins):
        sel = which == b
        count = int(sel.sum())
        out.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "count": count,
                "weight": count / n,
                "confidence": float(confidence[sel].mean()) if count else float("nan"),
                "accuracy": float(correct[sel].mean()) if count else float("nan"),
            }
        )
    return out


@dataclass(frozen=True)
class PerClass:
    """Per-class counts from top-1 predictions over all samples."""

    support: np.ndarray  # true occurrences [V]
    predicted: np.ndarray  # top-1 predictions [V]
    hits: np.ndarray  # correct top-1 predictions [V]

    @classmethod
    def from_predictions(cls, pred: np.ndarray, true: np.ndarray, v: int) -> PerClass:
        return cls(
            support=np.bincount(true, minlength=v),
            predicted=np.bincount(pred, minlength=v),
            hits=np.bincount(true[pred == true], minlength=v),
        )

    def prf(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(self.predicted > 0, self.hits / self.predicted, 0.0)
            recall = np.where(self.support > 0, self.hits / self.support, 0.0)
            denom = precision + recall
            f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
        return precision, recall, f1


def _averages(per: PerClass, classes: np.ndarray) -> dict[str, float]:
    """Macro and support-weighted P/R/F1 over the given classes that occur in the test set."""
    precision, recall, f1 = per.prf()
    occur = classes[per.support[classes] > 0]
    out: dict[str, float] = {"classes": float(len(occur))}
    if len(occur) == 0:
        for k in ("precision", "recall", "f1"):
            out[f"macro_{k}"] = float("nan")
            out[f"weighted_{k}"] = float("nan")
        return out
    w = per.support[occur] / per.support[occur].sum()
    for k, arr in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[f"macro_{k}"] = float(arr[occur].mean())
        out[f"weighted_{k}"] = float((arr[occur] * w).sum())
    return out


def ece_by_prediction(
    confidence: np.ndarray, correct: np.ndarray, pred: np.ndarray, classes: np.ndarray
) -> float:
    """ECE over the samples whose top-1 prediction is one of ``classes`` (nan if none)."""
    sel = np.isin(pred, classes)
    return expected_calibration_error(confidence[sel], correct[sel])


def _sample_metrics(
    probs: np.ndarray, true: np.ndarray, rank: np.ndarray, pred: np.ndarray
) -> dict[str, float]:
    n = len(true)
    if n == 0:
        keys = ("accuracy", "hr@5", "mrr", "nll", "brier", "ece")
        return {"samples": 0.0, **{k: float("nan") for k in keys}}
    p_true = probs[np.arange(n), true]
    sq = (probs**2).sum(axis=1) - 2 * p_true + 1.0
    confidence = probs[np.arange(n), pred]
    correct = (pred == true).astype(np.float64)
    return {
        "samples": float(n),
        "accuracy": float(correct.mean()),
        "hr@5": float((rank <= 5).mean()),
        "mrr": float((1.0 / rank).mean()),
        "nll": float(-np.log(np.maximum(p_true, NLL_FLOOR)).mean()),
        "brier": float(sq.mean()),
        "ece": expected_calibration_error(confidence, correct),
    }


def compute_metrics(
    probs: np.ndarray, true: np.ndarray, anchor: np.ndarray
) -> dict[str, dict[str, float]]:
    """{"overall" | "anchor" | "tail": {metric: value}} (see the module docstring)."""
    probs = np.asarray(probs, dtype=np.float64)
    true = np.asarray(true, dtype=np.int64)
    anchor = np.asarray(anchor, dtype=bool)
    check_inputs(probs, true, anchor)
    v = probs.shape[1]
    pred = top1(probs)
    rank = ranks(probs, true) if len(true) else np.zeros(0, dtype=np.int64)
    per = PerClass.from_predictions(pred, true, v)
    confidence = probs[np.arange(len(true)), pred]
    correct = (pred == true).astype(np.float64)
    all_classes = np.arange(v)
    out: dict[str, dict[str, float]] = {}
    for subset, classes in (
        ("overall", all_classes),
        ("anchor", all_classes[anchor]),
        ("tail", all_classes[~anchor]),
    ):
        sel = np.isin(true, classes)
        row = _sample_metrics(probs[sel], true[sel], rank[sel], pred[sel])
        row.update(_averages(per, classes))
        # How often the system predicts this subset at all (collapse onto anchors shows here).
        row["predicted_share"] = float(np.isin(pred, classes).mean()) if len(pred) else 0.0
        row["classes_predicted"] = float((per.predicted[classes] > 0).sum())
        row["predictions"] = float(per.predicted[classes].sum())
        row["ece_by_prediction"] = ece_by_prediction(confidence, correct, pred, classes)
        out[subset] = row
    return out


def per_behavior(
    probs: np.ndarray,
    true: np.ndarray,
    names: Sequence[str],
    train_counts: Sequence[int],
    anchor: np.ndarray,
) -> list[dict[str, Any]]:
    """One row per behavior: P/R/F1, test support, top-1 predictions, training count."""
    probs = np.asarray(probs, dtype=np.float64)
    true = np.asarray(true, dtype=np.int64)
    per = PerClass.from_predictions(top1(probs), true, probs.shape[1])
    precision, recall, f1 = per.prf()
    return [
        {
            "behavior": name,
            "anchor": bool(anchor[i]),
            "train_count": int(train_counts[i]),
            "support": int(per.support[i]),
            "predicted": int(per.predicted[i]),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
        }
        for i, name in enumerate(names)
    ]


def reliability(
    probs: np.ndarray, true: np.ndarray, bins: int = ECE_BINS
) -> list[dict[str, float]]:
    """Reliability-diagram bins for the top-1 prediction."""
    probs = np.asarray(probs, dtype=np.float64)
    true = np.asarray(true, dtype=np.int64)
    pred = top1(probs)
    confidence = probs[np.arange(len(true)), pred]
    return reliability_bins(confidence, (pred == true).astype(np.float64), bins)


# Metrics given a 95% bootstrap interval: (subset, metric). Macro-F1 of the tail rests on a few
# correct predictions of rare classes, so its interval is the one to read before a ranking.
INTERVAL_METRICS = (
    ("overall", "accuracy"),
    ("overall", "hr@5"),
    ("overall", "macro_f1"),
    ("overall", "weighted_f1"),
    ("anchor", "macro_f1"),
    ("tail", "macro_f1"),
    ("tail", "hr@5"),
    ("overall", "ece"),
    ("anchor", "ece_by_prediction"),
    ("tail", "ece_by_prediction"),
)
BOOTSTRAP_RESAMPLES = 200
# Paired differences (system minus reference) on the same resamples: the issue-32 targets
# (acc@1 and weighted F1 against SASRec, tail macro-F1 against the user's most frequent) and
# the anchor macro-F1 a tail gain must not cost. Two per-system intervals that overlap can still
# hold a difference clear of 0: the resamples are shared, so what the two systems get right on
# the same samples cancels out of the difference.
DIFFERENCE_METRICS = (
    ("overall", "accuracy"),
    ("overall", "hr@5"),
    ("overall", "weighted_f1"),
    ("anchor", "macro_f1"),
    ("tail", "macro_f1"),
)


@dataclass(frozen=True)
class Resampling:
    """What the resampled metrics need of one system's predictions on the test samples: the
    top-1 prediction, the rank of the true behavior and the top-1 confidence."""

    pred: np.ndarray
    rank: np.ndarray
    confidence: np.ndarray

    @classmethod
    def from_probs(cls, probs: np.ndarray, true: np.ndarray) -> Resampling:
        pred = top1(probs)
        return cls(pred, ranks(probs, true), probs[np.arange(len(true)), pred])


def resample_draws(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap's sample indices, one draw at a time: the same draws for every system
    with the same ``n`` and ``seed``, which is what makes intervals comparable and differences
    paired."""
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield rng.integers(0, n, n)


def resample_values(
    r: Resampling,
    true: np.ndarray,
    anchor: np.ndarray,
    idx: np.ndarray,
    metrics: Sequence[tuple[str, str]] = INTERVAL_METRICS,
) -> dict[str, float]:
    """{"subset.metric": value} of ``metrics`` on the samples ``idx`` (one bootstrap draw;
    ``np.arange(n)`` gives the values on the evaluated samples themselves)."""
    v = len(anchor)
    classes = np.arange(v)
    subsets = {"overall": classes, "anchor": classes[anchor], "tail": classes[~anchor]}
    t, p, rk = true[idx], r.pred[idx], r.rank[idx]
    is_anchor_sample = anchor[t]
    masks = {
        "overall": np.ones(len(idx), dtype=bool),
        "anchor": is_anchor_sample,
        "tail": ~is_anchor_sample,
    }
    per = PerClass.from_predictions(p, t, v)
    averages: dict[str, dict[str, float]] = {}
    out: dict[str, float] = {}
    for subset, metric in metrics:
        if metric in ("accuracy", "hr@5"):
            sel = masks[subset]
            hit = (p[sel] == t[sel]) if metric == "accuracy" else (rk[sel] <= 5)
            value = float(hit.mean()) if sel.any() else float("nan")
        elif metric in ("ece", "ece_by_prediction"):
            value = ece_by_prediction(
                r.confidence[idx], (p == t).astype(np.float64), p, subsets[subset]
            )
        else:
            if subset not in averages:
                averages[subset] = _averages(per, subsets[subset])
            value = averages[subset][metric]
        out[f"{subset}.{metric}"] = value
    return out


def _percentiles(vals: Sequence[float] | np.ndarray) -> list[float]:
    return [float(np.nanpercentile(vals, 2.5)), float(np.nanpercentile(vals, 97.5))]


def bootstrap_intervals(
    probs: np.ndarray,
    true: np.ndarray,
    anchor: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[str, list[float]]:
    """{"subset.metric": [low, high]}: the 2.5% and 97.5% percentiles of each metric of
    INTERVAL_METRICS over ``resamples`` resamples of the test samples with replacement (the
    same resamples for every system with the same ``seed`` and sample count, so systems are
    compared on the same draws)."""
    probs = np.asarray(probs, dtype=np.float64)
    true = np.asarray(true, dtype=np.int64)
    anchor = np.asarray(anchor, dtype=bool)
    check_inputs(probs, true, anchor)
    n = len(true)
    if n == 0:
        return {}
    r = Resampling.from_probs(probs, true)
    values: dict[str, list[float]] = {f"{s}.{m}": [] for s, m in INTERVAL_METRICS}
    for idx in resample_draws(n, resamples, seed):
        for key, value in resample_values(r, true, anchor, idx).items():
            values[key].append(value)
    return {key: _percentiles(vals) for key, vals in values.items() if not np.all(np.isnan(vals))}


def paired_differences(
    system: Resampling,
    reference: Resampling,
    true: np.ndarray,
    anchor: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[str, dict[str, float | list[float]]]:
    """{"subset.metric": {"difference", "interval", "above_zero"}} for DIFFERENCE_METRICS:
    ``system`` minus ``reference`` on the evaluated samples, the 2.5 / 97.5 percentiles of the
    difference over the draws of ``bootstrap_intervals`` (both systems on the same draw), and
    the share of draws in which the system is ahead. An interval above 0 ranks the system first
    on that metric; per-system intervals that overlap do not settle it either way."""
    true = np.asarray(true, dtype=np.int64)
    anchor = np.asarray(anchor, dtype=bool)
    n = len(true)
    if n == 0:
        return {}
    keys = [f"{s}.{m}" for s, m in DIFFERENCE_METRICS]
    every = np.arange(n)
    a = resample_values(system, true, anchor, every, DIFFERENCE_METRICS)
    b = resample_values(reference, true, anchor, every, DIFFERENCE_METRICS)
    deltas: dict[str, list[float]] = {k: [] for k in keys}
    for idx in resample_draws(n, resamples, seed):
        da = resample_values(system, true, anchor, idx, DIFFERENCE_METRICS)
        db = resample_values(reference, true, anchor, idx, DIFFERENCE_METRICS)
        for k in keys:
            deltas[k].append(da[k] - db[k])
    out: dict[str, dict[str, float | list[float]]] = {}
    for k in keys:
        vals = np.asarray(deltas[k])
        if np.all(np.isnan(vals)) or np.isnan(a[k] - b[k]):
            continue
        out[k] = {
            "difference": float(a[k] - b[k]),
            "interval": _percentiles(vals),
            "above_zero": float(np.mean(vals[~np.isnan(vals)] > 0)),
        }
    return out
