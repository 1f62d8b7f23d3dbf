"""The paired-difference part of a report: a table and a plot of each LLM (or hybrid) system
minus each reference (``evaluate.paired_differences``, ``metrics.paired_differences``).

A difference's interval comes from the same bootstrap draws for both systems, so it answers
"is A ahead of B on these samples" directly; two per-system intervals that overlap do not
answer it (they are wider than the difference's, whose shared part cancels)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from behaviorlm.training.evaluation.metrics import DIFFERENCE_METRICS

DIFFERENCES_PNG = "differences.png"
HEADINGS = {
    "overall.accuracy": "acc",
    "overall.hr@5": "HR@5",
    "overall.weighted_f1": "weighted-F1",
    "anchor.macro_f1": "anchor macro-F1",
    "tail.macro_f1": "tail macro-F1",
}
EXPLANATION = (
    "System minus reference on the evaluated samples, with the 2.5 / 97.5 percentiles of the "
    "difference over the 200 bootstrap resamples of the intervals above (both systems on the "
    "same resample). **Bold**: the interval is clear of 0 (ahead or behind on these samples). "
    "`ahead` = share of resamples in which the system is ahead."
)


def signed(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:+.3f}"


def sign_of(d: dict[str, Any]) -> int:
    """+1 if the difference's interval lies above 0, -1 below, 0 if it holds 0 (no ranking)."""
    lo, hi = d["interval"]
    return 1 if lo > 0 else -1 if hi < 0 else 0


def cell(d: dict[str, Any] | None) -> str:
    if not d:
        return "–"
    lo, hi = d["interval"]
    text = f"{signed(d['difference'])} [{signed(lo)}, {signed(hi)}] ({d['above_zero']:.0%} ahead)"
    return f"**{text}**" if sign_of(d) else text


def system_label(d: dict[str, Any]) -> str:
    """The system's name, after its report's (``--compare`` sets ``report``)."""
    return f"{d['report']}: {d['system']}" if d.get("report") else str(d["system"])


def difference_table(differences: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown rows, one per (system, reference) pair."""
    keys = [f"{s}.{m}" for s, m in DIFFERENCE_METRICS]
    lines = [
        "| system | minus | " + " | ".join(HEADINGS.get(k, k) for k in keys) + " |",
        "|" + "---|" * (len(keys) + 2),
    ]
    for d in differences:
        row = [system_label(d).replace("|", "/"), d["reference"]]
        row += [cell(d["metrics"].get(k)) for k in keys]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def plot_differences(differences: Sequence[dict[str, Any]], path: Path) -> None:
    """One panel per metric of DIFFERENCE_METRICS: each pair's difference with its interval
    as a horizontal bar, and 0 marked (a pair clear of the line is ranked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [f"{s}.{m}" for s, m in DIFFERENCE_METRICS]
    labels = [f"{system_label(d)} - {d['reference']}" for d in differences]
    fig, axes = plt.subplots(
        1, len(keys), figsize=(3.2 * len(keys) + 3, 0.4 * len(labels) + 1.6), sharey=True
    )
    for ax, key in zip(axes, keys, strict=True):
        for y, d in enumerate(differences):
            m = d["metrics"].get(key)
            if not m:
                continue
            lo, hi = m["interval"]
            ax.errorbar(
                m["difference"],
                y,
                xerr=[[m["difference"] - lo], [hi - m["difference"]]],
                fmt="o",
                capsize=3,
                color={1: "tab:green", -1: "tab:red", 0: "0.4"}[sign_of(m)],
            )
        ax.axvline(0, color="k", lw=0.8)
        ax.set_title(HEADINGS.get(key, key), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(labels)), labels, fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle("system minus reference, paired 95% bootstrap intervals", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
