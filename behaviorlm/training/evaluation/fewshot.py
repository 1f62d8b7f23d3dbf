"""Few-shot tail experiment: can a tail behavior be learned from k examples?

A few tail behaviors are held out: for each k (default 0, 5, 20) an adapter is trained (through
``behaviorlm.training.stages.train``, any strategy and preset) on the train split with every sample
of the
held-out behaviors removed except k seeded picks per behavior. The held-out behaviors stay in the
vocabulary (count k; with k = 0 they are known by name only). Each adapter is then scored on the
test samples of the held-out behaviors plus a seeded random set of other test samples (so
precision means something), and their recall / precision / F1 / HR@5 are reported.

Held-out choice (``choice``): tail behaviors with at least max(k) training targets and a test
sample, unless ``behaviors`` names them. ``median`` (the default) takes the ones whose training
count is closest (in log scale) to the median tail count, so the experiment is about a typical
tail behavior, not the few large tails just under the anchor line; ``largest`` takes the ones
with the most test samples (ties by name). The anchor recall of the same adapter on the same
evaluation set is reported next to the held-out recall (the paper's claim: a tail behavior
learned from 5 examples reaches a good share of the anchors' recall).

With ``stage1_from`` (strategy ``behaviorlm``), every k starts from that run's stage 1 and
difficulty scores instead of training its own: stage 1 is tuned on anchor samples only, so it is
the same for every k (held-out behaviors are tails), and only stage 2 sees the k examples.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from behaviorlm.errors import InputError
from behaviorlm.manifest import MANIFEST_FILE
from behaviorlm.options import option
from behaviorlm.training.config import Strategy
from behaviorlm.training.evaluation import metrics as M
from behaviorlm.vocabulary import Vocabulary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FewShotConfig:
    """``behaviorlm eval --fewshot``: each field is a flag (``--fewshot-<name>``; data, out,
    base_model, engine, dtype, batch_size and seed are the eval command's own)."""

    data: Path = option(help="prepared dataset")
    out: Path = option(help="output directory (adapters in out/k<k>/, fewshot.json/md/png)")
    ks: tuple[int, ...] = option(
        (0, 5, 20),
        flag="--fewshot-ks",
        parse=lambda t: tuple(int(x) for x in t.split(",")),
        help="examples per held-out behavior",
    )
    holdout: int = option(
        5,
        flag="--fewshot-holdout",
        help="how many tail behaviors to hold out",
    )
    choice: str = option(
        "median",
        flag="--fewshot-choice",
        choices=("median", "largest"),
        parse=str,
        help="which tail behaviors to hold out: median (training count closest to the median "
        "tail count, among those with >= max(k) training samples and a test sample) or "
        "largest (most test samples)",
    )
    behaviors: tuple[str, ...] = option(
        (),
        flag="--fewshot-behaviors",
        parse=lambda t: tuple(s.strip() for s in t.split(",") if s.strip()),
        help="comma-separated behaviors to hold out instead",
    )
    strategy: Strategy = option(
        "balanced",
        flag="--fewshot-strategy",
        choices=("sft", "balanced", "behaviorlm"),
        parse=str,
        help="training strategy of the few-shot adapters (balanced: the k examples are drawn "
        "as often as any class's, sft: in proportion to k)",
    )
    preset: str = option(
        "cpu", flag="--fewshot-preset", help="training preset (tiny, cpu, gpu or a YAML file)"
    )
    overrides: tuple[str, ...] = option(
        (),
        flag="--fewshot-set",
        action="append",
        metavar="KEY=VALUE",
        help="training config override (repeatable), e.g. baseline.steps=100",
    )
    stage1_from: Path | None = option(
        None,
        flag="--fewshot-stage1-from",
        metavar="RUN",
        help="with --fewshot-strategy behaviorlm: reuse this finished run's stage 1 and "
        "difficulty scores for every k (stage 1 sees anchors only, so the held-out tail "
        "behaviors never reach it); only stage 2 is trained",
    )
    other_test_samples: int = option(
        1000,
        flag="--fewshot-other-samples",
        help="test samples of other behaviors added to the evaluation set (seeded; the anchor "
        "recall is measured on them)",
    )
    base_model: str = option("smollm2", help="base model")
    engine: str = option("auto", help="scoring engine")
    dtype: str = option("auto", help="model dtype (auto, bfloat16 or float32)")
    batch_size: int = option(32, help="prompts per engine forward")
    seed: int = option(0, help="picks of the k examples and of the other test samples")

    def __post_init__(self) -> None:
        if not self.ks or any(k < 0 for k in self.ks):
            raise InputError(f"--fewshot-ks: need non-negative counts, got {self.ks}")
        if self.holdout < 1 and not self.behaviors:
            raise InputError(f"--fewshot-holdout: must be >= 1, got {self.holdout}")
        if self.other_test_samples < 0:
            raise InputError("--fewshot-other-samples: must be >= 0")
        if self.stage1_from is not None and self.strategy != "behaviorlm":
            raise InputError(
                f"--fewshot-stage1-from: only with --fewshot-strategy behaviorlm "
                f"(got {self.strategy})"
            )


def choose_holdout(vocab: Vocabulary, test_targets: Sequence[str], cfg: FewShotConfig) -> list[str]:
    if cfg.behaviors:
        bad = [b for b in cfg.behaviors if b not in vocab]
        if bad:
            raise InputError(f"--fewshot-behaviors: not in the vocabulary: {bad}")
        return list(cfg.behaviors)
    need = max(cfg.ks)
    support: dict[str, int] = {}
    for t in test_targets:
        support[t] = support.get(t, 0) + 1
    candidates = [
        n for n in vocab.tails if vocab.counts[vocab.index[n]] >= need and support.get(n, 0) > 0
    ]
    if cfg.choice == "median":
        tail_counts = [vocab.counts[vocab.index[n]] for n in vocab.tails]
        center = float(np.log(max(float(np.median(tail_counts)), need, 1)))
        candidates.sort(
            key=lambda n: (abs(np.log(vocab.counts[vocab.index[n]]) - center), -support[n], n)
        )
    else:
        candidates.sort(key=lambda n: (-support[n], n))
    if len(candidates) < cfg.holdout:
        raise InputError(
            f"few-shot: only {len(candidates)} tail behaviors have >= {need} training samples "
            f"and a test sample; lower --fewshot-holdout or the largest k"
        )
    return candidates[: cfg.holdout]


FINAL_STAGE: dict[str, str] = {"behaviorlm": "stage2", "sft": "sft", "balanced": "balanced"}


def training_subset(targets: Sequence[str], held: Sequence[str], k: int, seed: int) -> list[int]:
    """All indices of other behaviors plus k seeded picks of each held-out behavior."""
    arr = np.asarray(targets, dtype=object)
    keep = list(np.flatnonzero(~np.isin(arr, list(held))))
    rng = np.random.default_rng([seed, k])
    for name in held:
        idx = np.flatnonzero(arr == name)
        keep.extend(rng.choice(idx, size=min(k, len(idx)), replace=False).tolist())
    return sorted(int(i) for i in keep)


@dataclass(frozen=True)
class EvalSet:
    """The few-shot evaluation samples: every test sample of a held-out behavior plus a seeded
    sample of the others."""

    samples: Any
    true: np.ndarray
    held_cols: list[int]


def fewshot_eval_set(ds: Any, held: Sequence[str], cfg: FewShotConfig) -> EvalSet:
    vocab = ds.vocabulary
    arr = np.asarray(ds.targets("test"), dtype=object)
    held_idx = np.flatnonzero(np.isin(arr, held))
    others = np.flatnonzero(~np.isin(arr, held))
    rng = np.random.default_rng([cfg.seed, 99])
    others = rng.choice(others, size=min(cfg.other_test_samples, len(others)), replace=False)
    eval_idx = np.sort(np.concatenate([held_idx, others]))
    index = vocab.index
    true = np.array([index[t] for t in arr[eval_idx]], dtype=np.int64)
    return EvalSet(ds.samples("test").take(eval_idx), true, [index[n] for n in held])


def train_k_shot(
    cfg: FewShotConfig,
    k: int,
    held: Sequence[str],
    ds: Any,
    full: Any,
    config: Any,
    base: Any,
) -> tuple[Path, dict[str, int], int]:
    """Train (or resume) the adapter that sees ``k`` examples of each held-out behavior; its
    run directory, the behaviors' training counts and the number of training samples."""
    from behaviorlm.training.stages import reuse_stage1, train

    vocab = ds.vocabulary
    train_targets = ds.targets("train")
    subset = training_subset(train_targets, held, k, cfg.seed)
    counts = dict(zip(vocab.names, vocab.counts, strict=True))
    for name in held:
        counts[name] = min(k, counts[name])
    data = full.subset(
        subset,
        Vocabulary.from_counts(counts, vocab.anchor_share),
        fewshot={"k": k, "held_out": held},
    )
    run_dir = cfg.out / f"k{k}"
    if not (run_dir / FINAL_STAGE[cfg.strategy] / MANIFEST_FILE).exists():
        if cfg.stage1_from is not None and not run_dir.exists():
            reuse_stage1(cfg.stage1_from, run_dir, config, data, subset, len(train_targets))
        train(
            cfg.strategy,
            data,
            base,
            config,
            run_dir,
            run_name=f"fewshot-k{k}",
            resume=run_dir.exists(),
        )
    return run_dir, counts, len(subset)


def score_k_shot(cfg: FewShotConfig, k: int, system: Any, evalset: EvalSet, names: Any) -> Any:
    """Probabilities of the k-shot adapter on the evaluation set (cached under out/cache)."""
    from behaviorlm.training.evaluation.systems import LLMSystem, open_engine, score_samples

    llm = LLMSystem(f"k{k}", system.adapter_dir, system.manifest)
    engine = open_engine(cfg.engine, cfg.base_model, llm, cfg.dtype, cfg.batch_size)
    try:
        return score_samples(
            engine, llm, evalset.samples, names, cfg.out / "cache", "fewshot"
        ).probs
    finally:
        engine.close()


def fewshot_row(
    k: int,
    system: Any,
    probs: np.ndarray,
    evalset: EvalSet,
    vocab: Vocabulary,
    counts: dict[str, int],
    held: Sequence[str],
    train_samples: int,
) -> dict[str, Any]:
    manifest = system.manifest
    true, held_cols = evalset.true, evalset.held_cols
    # Rows read by the final stage over the rows it could read: how many times (in
    # expectation) each of the k examples was a target.
    passes = manifest.metrics["rows"] / max(manifest.data["stage_rows"], 1)
    anchor = vocab.anchor_mask
    per = M.per_behavior(probs, true, vocab.names, vocab.counts, anchor)
    rank = M.ranks(probs, true)
    on_held = np.isin(true, held_cols)
    anchor_cols = [c for c in np.flatnonzero(anchor) if per[c]["support"] > 0]
    anchor_recall = float(np.mean([per[c]["recall"] for c in anchor_cols])) if anchor_cols else 0.0
    macro_recall = float(np.mean([per[c]["recall"] for c in held_cols]))
    return {
        "k": k,
        "adapter": str(system.adapter_dir),
        "train_samples": train_samples,
        "stage_readouts": manifest.data["stage_readouts"],
        # How often training read a held-out behavior's examples (in expectation): every
        # readout of a row is trained when the row is, so this is k x the stage's passes.
        "passes": round(passes, 3),
        "expected_reads": {n: round(min(k, counts[n]) * passes, 2) for n in held},
        "train_seconds": manifest.metrics.get("wall_seconds"),
        "held_out_samples": int(on_held.sum()),
        "held_out_hr@1": float((rank[on_held] == 1).mean()) if on_held.any() else None,
        "held_out_hr@5": float((rank[on_held] <= 5).mean()) if on_held.any() else None,
        "held_out_mean_prob": float(probs[on_held][:, held_cols].sum(axis=1).mean())
        if on_held.any()
        else None,
        "behaviors": [per[c] for c in held_cols],
        "macro_recall": macro_recall,
        "macro_f1": float(np.mean([per[c]["f1"] for c in held_cols])),
        # Macro recall of the anchors present in the evaluation set, the paper's yardstick.
        "anchor_macro_recall": anchor_recall,
        "recall_vs_anchor": macro_recall / anchor_recall if anchor_recall > 0 else None,
        "overall_accuracy": float((probs.argmax(axis=1) == true).mean()),
    }


def run_fewshot(cfg: FewShotConfig) -> dict[str, Any]:
    """Hold out tail behaviors; for each k train an adapter with k examples of each, score it
    on the held-out behaviors' test samples (plus others), write fewshot.json/md/png."""
    from behaviorlm.base_model import resolve_base_model
    from behaviorlm.training.config import load_config
    from behaviorlm.training.data.dataset import PreparedDataset
    from behaviorlm.training.evaluation.systems import discover_adapters
    from behaviorlm.training.stages import TrainingData

    ds = PreparedDataset.load(cfg.data)
    held = choose_holdout(ds.vocabulary, ds.targets("test"), cfg)
    log.info("few-shot: holding out %s", held)
    config = load_config(cfg.preset, cfg.overrides).with_dtype_resolved()
    base = resolve_base_model(cfg.base_model)
    full = TrainingData.from_prepared(cfg.data)
    evalset = fewshot_eval_set(ds, held, cfg)
    rows = []
    for k in cfg.ks:
        run_dir, counts, n_train = train_k_shot(cfg, k, held, ds, full, config, base)
        system = discover_adapters(run_dir)[-1]
        assert system.manifest is not None  # discover_adapters only returns trained adapters
        probs = score_k_shot(cfg, k, system, evalset, ds.vocabulary.names)
        row = fewshot_row(k, system, probs, evalset, ds.vocabulary, counts, held, n_train)
        rows.append(row)
        log.info(
            "few-shot k=%d: held-out recall %.3f, F1 %.3f", k, row["macro_recall"], row["macro_f1"]
        )
    result = {
        "config": {**{k: str(v) if isinstance(v, Path) else v for k, v in cfg.__dict__.items()}},
        "held_out": held,
        "eval_samples": len(evalset.true),
        "rows": rows,
    }
    write_fewshot(cfg.out, result)
    return result


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def write_fewshot(out: Path, result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "fewshot.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    lines = [
        "# Few-shot tail experiment",
        "",
        f"Held-out tail behaviors: {', '.join(result['held_out'])}; "
        f"{result['eval_samples']} test samples (all of the held-out behaviors' plus others). "
        f"Strategy {result['config']['strategy']}, preset {result['config']['preset']}, "
        f"overrides {list(result['config']['overrides'])}"
        + (
            f", stage 1 reused from {result['config']['stage1_from']}."
            if result["config"].get("stage1_from")
            else "."
        ),
        "",
        "| k | train samples | reads of each held-out behavior (expected) | held-out samples | "
        "macro recall | macro F1 | HR@1 | HR@5 | mean p(held-out) | anchor macro recall | "
        "recall / anchor recall | overall acc |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        draws = ", ".join(f"{v:.1f}" for v in r["expected_reads"].values())
        lines.append(
            f"| {r['k']} | {r['train_samples']} | {draws} | {r['held_out_samples']} | "
            f"{r['macro_recall']:.3f} | {r['macro_f1']:.3f} | {r['held_out_hr@1']:.3f} | "
            f"{r['held_out_hr@5']:.3f} | {r['held_out_mean_prob']:.4f} | "
            f"{r['anchor_macro_recall']:.3f} | {_ratio(r['recall_vs_anchor'])} | "
            f"{r['overall_accuracy']:.3f} |"
        )
    lines += [
        "",
        "Per held-out behavior (test support; times predicted at top 1):",
        "",
        "| k | behavior | support | predicted | precision | recall | F1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        for b in r["behaviors"]:
            lines.append(
                f"| {r['k']} | {b['behavior']} | {b['support']} | {b['predicted']} | "
                f"{b['precision']:.3f} | {b['recall']:.3f} | {b['f1']:.3f} |"
            )
    lines += ["", "![recall and F1 against k](fewshot.png)", ""]
    (out / "fewshot.md").write_text("\n".join(lines))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ks = [r["k"] for r in result["rows"]]
    for key, label in (
        ("macro_recall", "recall"),
        ("macro_f1", "F1"),
        ("held_out_hr@5", "HR@5"),
        ("anchor_macro_recall", "anchor recall (same adapter)"),
    ):
        ax.plot(ks, [r[key] for r in result["rows"]], marker="o", label=label)
    ax.set_xlabel("training examples per held-out behavior (k)")
    ax.set_ylabel("held-out behaviors (macro)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "fewshot.png", dpi=110)
    plt.close(fig)
