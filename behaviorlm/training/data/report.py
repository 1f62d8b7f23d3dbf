"""What a preparation did, for people: ``stats.md`` and ``behavior_frequency.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from behaviorlm.vocabulary import Vocabulary

PLOT_FILE = "behavior_frequency.png"
REPORT_FILE = "stats.md"


def write_report(root: Path, stats: dict[str, Any], vocabulary: Vocabulary) -> None:
    (root / REPORT_FILE).write_text(render_markdown(stats))
    plot_frequency(vocabulary, root / PLOT_FILE, title=str(stats.get("name", "")))


def render_markdown(stats: dict[str, Any]) -> str:
    v = stats["vocabulary"]
    lg = stats["log"]
    epu = lg["events_per_user"]
    n = stats["samples"]
    top = ", ".join(f"{t['name']} {t['share']:.1%}" for t in lg["top_behaviors"][:5])
    lines = [
        f"# Prepared dataset: {stats['name']}",
        "",
        "## Log (after row checks)",
        "",
        f"- input rows: {stats['input_rows']:,}; clean events: {lg['events']:,} "
        f"from {lg['users']:,} users",
        f"- events per user: median {epu['median']:g}, mean {epu['mean']:g}, max {epu['max']:,}; "
        f"{epu['users_with_10_or_more']:,} users with 10 or more",
        f"- wall-clock range: {lg['wall_clock_range'] or 'no timestamps'}",
        f"- context: {', '.join(stats['context_columns']) or 'none'}",
        f"- behaviors: {lg['behaviors']:,} ({lg['behaviors_cover_50pct']} cover "
        f"50% of events, {lg['behaviors_cover_80pct']} cover 80%, "
        f"{lg['behaviors_under_1pct']} under 1% share); top: {top}",
        "",
        "## Samples",
        "",
        f"Kept {stats['events']:,} events of {stats['users']:,} users "
        f"({stats['users_too_short']:,} users too short for a target).",
        "",
        "| split | samples | users |",
        "|---|---:|---:|",
        *(f"| {s} | {n[s]:,} | {stats['users_per_split'][s]:,} |" for s in n),
        "",
        f"Users without a training sample: {stats['users_without_train_samples']:,}.",
        "",
        f"## Vocabulary: {v['labels']} labels, {v['anchors']} anchors "
        f"(share > {v['anchor_share']:g}), {v['tails']} tails",
        "",
        f"Anchors hold {v['anchor_train_share']:.1%} of training targets; "
        f"{v['labels_cover_50pct']} labels cover 50%, {v['labels_cover_80pct']} cover 80%; "
        f"{v['labels_without_train_samples']} labels have no training sample.",
        "",
    ]
    rules = stats["vocabulary_rules"]
    if rules:
        lines += [
            "| rule | behaviors | to | train | validation | test | dropped |",
            "|---|---:|---|---:|---:|---:|---:|",
        ]
        for name, r in rules.items():
            t = r["targets"]
            lines.append(
                f"| {name} | {r['behaviors']} | {r['to']} | {t['train']:,} | "
                f"{t['validation']:,} | {t['test']:,} | {sum(r['dropped'].values()):,} |"
            )
    else:
        lines.append("No vocabulary rule applied: every behavior is its own label.")
    placeholders = stats.get("not_a_target") or {}
    if placeholders:
        lines += ["", "## Not targets (placeholders, kept in histories)", ""]
        lines += [f"- {name}: {count:,} events" for name, count in placeholders.items()]
    lines += ["", "## Skipped rows", ""]
    skipped = stats["skipped_rows"]
    if not skipped:
        lines.append("None.")
    for reason, count in sorted(skipped.items(), key=lambda kv: -kv[1]):
        lines.append(f"- {reason}: {count:,}")
        lines.extend(f"  - e.g. `{ex}`" for ex in stats["skipped_examples"].get(reason, [])[:3])
    lines += ["", f"![behavior frequency]({PLOT_FILE})", ""]
    return "\n".join(lines)


def plot_frequency(vocabulary: Vocabulary, path: Path, title: str = "") -> None:
    """Training share per label, by rank (log scale), with the anchor/tail cut marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total = max(vocabulary.total, 1)
    shares = [c / total for c in vocabulary.counts]
    anchors = len(vocabulary.anchors)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    ranks = range(1, len(shares) + 1)
    colors = ["tab:blue" if i < anchors else "tab:orange" for i in range(len(shares))]
    ax.bar(ranks, [max(s, 1e-7) for s in shares], width=1.0, color=colors)
    ax.set_yscale("log")
    ax.axhline(
        vocabulary.anchor_share,
        color="black",
        ls="--",
        lw=1,
        label=f"anchor cut: share > {vocabulary.anchor_share:g}",
    )
    if anchors:
        ax.axvline(anchors + 0.5, color="gray", ls=":", lw=1)
    ax.set_xlabel("behavior rank (training targets)")
    ax.set_ylabel("share of training targets")
    ax.set_title(f"{title}: {anchors} anchors (blue), {len(shares) - anchors} tails (orange)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
