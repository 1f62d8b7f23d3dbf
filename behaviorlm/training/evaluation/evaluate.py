"""Run every requested system on the same test samples of a prepared dataset and score them.

Sample selection: with ``max_test_samples`` N (< the split size) a seeded uniform random subset
of N test samples is taken (sorted back into file order), so the natural anchor/tail mix is kept
and overall numbers stay comparable to the full split. ``selection="anchor-tail"`` instead takes
N/2 anchor-target and N/2 tail-target samples (the prototype's stratified set: tail numbers get
more samples, overall numbers are no longer the natural mix). Every system sees exactly those
samples.

Classical systems are fitted on the whole train split, tune their smoothing on the whole
validation split and get a temperature fitted there (ranking unchanged, NLL/ECE calibrated).
LLM temperatures are fitted on a seeded random subset of at most ``max_validation_samples``
validation samples.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from behaviorlm.dtypes import DTYPE_CHOICES
from behaviorlm.errors import InputError
from behaviorlm.options import option
from behaviorlm.scoring.factory import ENGINE_KINDS
from behaviorlm.training.evaluation import CLASSICAL, GROUPS, KNOWN
from behaviorlm.training.evaluation import metrics as M
from behaviorlm.training.evaluation.calibration import (
    apply_temperature,
    fit_temperature,
    logit_adjust,
    temperature_ece_floor,
)
from behaviorlm.training.evaluation.sequences import load_event_arrays, split_sequences
from behaviorlm.vocabulary import name_index

log = logging.getLogger(__name__)


def split_list(text: str) -> tuple[str, ...]:
    """'a, b,,c' -> ('a', 'b', 'c')."""
    return tuple(s.strip() for s in text.split(",") if s.strip())


def parse_taus(text: str) -> tuple[float, ...]:
    import argparse

    try:
        return tuple(float(t) for t in split_list(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.5,1, got {text!r}") from exc


@dataclass(frozen=True)
class EvalConfig:
    """What ``behaviorlm eval`` runs; each field is its flag (``--help`` is made from them)."""

    data: Path = option(help="prepared dataset directory (behaviorlm data prepare)")
    out: Path = option(
        help="report directory: report.json, report.md, plots, cache/ of LLM scores (resumable)"
    )
    runs: tuple[Path, ...] = option(
        (),
        nargs="*",
        parse=Path,
        help="training run directories models/<run>; every <run>/<stage>/manifest.json is "
        "evaluated as a system (needs 'adapters' in --systems)",
    )
    systems: tuple[str, ...] = option(
        ("classical", "sasrec", "adapters"),
        parse=split_list,
        help=f"comma-separated systems: {', '.join(KNOWN)}, or the group classical "
        f"({', '.join(GROUPS['classical'])})",
    )
    split: str = option("test", help="split to evaluate")
    max_test_samples: int | None = option(
        None,
        help="evaluate a seeded random subset of this many samples (none: all); every system "
        "sees the same ones",
    )
    selection: str = option(
        "uniform",
        choices=("uniform", "anchor-tail"),
        help="with --max-test-samples: a uniform random subset (natural mix), or half "
        "anchor-target and half tail-target samples (stratified)",
    )
    max_validation_samples: int = option(
        1000, help="validation samples used to fit LLM temperatures"
    )
    seed: int = option(0, help="sample subset and SASRec seed")
    last_k: int | None = option(
        None, help="window of user-frequency-lastk (none: the dataset's history length)"
    )
    logit_adjust: tuple[float, ...] = option(
        (1.0,),
        parse=parse_taus,
        help="comma-separated taus: adds a '+LA<tau>' variant of every system (scores minus "
        "tau * log training prior); '' for none",
    )
    calibrate: bool = option(
        True,
        negate="--no-calibrate",
        help="fit a temperature per LLM system on validation NLL and report both "
        "(--no-calibrate: do not)",
    )
    store_calibration: bool = option(
        False, help="write each adapter's fitted temperature into its manifest.json"
    )
    engine: str = option("auto", choices=ENGINE_KINDS, help="scoring engine for LLM systems")
    base_model: str = option("smollm2", help="base model: 'smollm2', a model directory or a hub id")
    dtype: str = option(
        "auto",
        choices=DTYPE_CHOICES,
        help="LLM weights dtype (auto: bf16 on a GPU or a CPU with native bf16, else fp32)",
    )
    batch_size: int = option(32, help="prompts per engine forward")
    sasrec_max_seconds: float = option(240.0, help="stop SASRec training after this many seconds")
    sasrec_epochs: int = option(8, help="at most this many SASRec epochs")

    def __post_init__(self) -> None:
        unknown = [s for s in self.systems if s not in KNOWN and s not in GROUPS]
        if unknown:
            raise InputError(f"--systems: unknown {unknown}; known: {[*GROUPS, *KNOWN]}")
        if self.max_test_samples is not None and self.max_test_samples < 1:
            raise InputError(f"--max-test-samples: must be >= 1, got {self.max_test_samples}")
        if self.selection not in ("uniform", "anchor-tail"):
            raise InputError(f"--selection: uniform or anchor-tail, got {self.selection!r}")
        if self.selection == "anchor-tail" and self.max_test_samples is None:
            raise InputError("--selection anchor-tail needs --max-test-samples")
        if self.max_validation_samples < 1:
            raise InputError("--max-validation-samples: must be >= 1")
        if self.last_k is not None and self.last_k < 1:
            raise InputError(f"--last-k: must be >= 1, got {self.last_k}")
        if self.runs and "adapters" not in self.systems:
            raise InputError("--runs given but --systems does not include 'adapters'")

    def expanded(self) -> list[str]:
        out: list[str] = []
        for s in self.systems:
            for name in GROUPS.get(s, (s,)):
                if name not in out:
                    out.append(name)
        return out


@dataclass
class SystemResult:
    name: str
    kind: str
    probs: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    variant_of: str | None = None
    # validation probabilities (the hybrid arm's fit): classical systems over the whole
    # validation split, LLM systems over the seeded subset their temperature was fitted on
    val_probs: np.ndarray | None = field(default=None, repr=False)


def choose_subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=limit, replace=False))


def choose_stratified(is_anchor: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """limit/2 anchor-target and limit/2 tail-target samples (all of a group if it is smaller)."""
    rng = np.random.default_rng(seed)
    picks = []
    for group in (np.flatnonzero(is_anchor), np.flatnonzero(~is_anchor)):
        size = min(limit // 2, len(group))
        picks.append(rng.choice(group, size=size, replace=False))
    return np.sort(np.concatenate(picks))


def run_classical(
    cfg: EvalConfig,
    ds: Any,
    names: Sequence[str],
    test_idx: np.ndarray,
) -> list[SystemResult]:
    from behaviorlm.training.evaluation.baselines import (
        GlobalMarkov,
        MostPopular,
        UserFrequency,
        UserMarkov,
    )
    from behaviorlm.training.evaluation.sasrec import SASRec, SASRecConfig

    wanted = [n for n in names if n in CLASSICAL or n == "sasrec"]
    if not wanted:
        return []
    vocab = ds.vocabulary
    events = load_event_arrays(ds.root, vocab.names)
    train = split_sequences(ds.root, "train", events, vocab.names)
    validation = split_sequences(ds.root, "validation", events, vocab.names)
    test = split_sequences(ds.root, cfg.split, events, vocab.names).subset(test_idx)
    last_k = cfg.last_k or int(ds.info.get("config", {}).get("history_len", 10))
    glob = GlobalMarkov(vocab.counts, len(events.raw_names))
    systems: dict[str, Any] = {
        "most-popular": MostPopular(vocab.counts),
        "user-frequency-all": UserFrequency(vocab.counts, window=None),
        "user-frequency-lastk": UserFrequency(vocab.counts, window=last_k),
        "markov-global": glob,
        "markov-user": UserMarkov(glob),
        "sasrec": SASRec(
            len(events.raw_names),
            len(vocab.names),
            SASRecConfig(
                seed=cfg.seed,
                max_len=max(20, last_k),
                max_seconds=cfg.sasrec_max_seconds,
                epochs=cfg.sasrec_epochs,
            ),
        ),
    }
    out = []
    for name in wanted:
        system = systems[name]
        start = time.monotonic()
        system.fit(train, validation if len(validation) else None)
        probs = system.predict(test)
        params = dict(system.params)
        val_probs = None
        if len(validation):
            # A temperature keeps the ranking (what the system's name promises) and fixes the
            # spread: classical systems are compared with calibrated LLMs on NLL/ECE fairly.
            val_probs = system.predict(validation)
            fit = fit_temperature(val_probs, validation.targets)
            probs = apply_temperature(probs, fit.temperature)
            params["calibration"] = {
                "temperature": fit.temperature,
                "validation_nll_before": fit.nll_before,
                "validation_nll_after": fit.nll_after,
                "validation_samples": fit.samples,
            }
        out.append(
            SystemResult(
                system.name,
                "sequence-model" if name == "sasrec" else "classical",
                probs,
                params,
                time.monotonic() - start,
                val_probs=val_probs if name == "sasrec" else None,
            )
        )
        log.info("%s: fitted and scored in %.1f s", system.name, out[-1].seconds)
    return out


def run_llm(
    cfg: EvalConfig,
    ds: Any,
    names: Sequence[str],
    test_idx: np.ndarray,
) -> list[SystemResult]:
    from behaviorlm.training.evaluation.calibration import store_temperature
    from behaviorlm.training.evaluation.systems import (
        LLMSystem,
        discover_adapters,
        open_engine,
        score_samples,
    )

    systems: list[LLMSystem] = []
    if "zero-shot" in names:
        systems.append(LLMSystem(name=f"zero-shot ({cfg.base_model})"))
    if "adapters" in names:
        for run in cfg.runs:
            systems.extend(discover_adapters(run))
    if not systems:
        return []
    behaviors = ds.vocabulary.names
    test_samples = ds.samples(cfg.split).take(test_idx)
    n_val = ds.num_samples("validation")
    val_idx = choose_subset(n_val, cfg.max_validation_samples, cfg.seed)
    val_samples = ds.samples("validation").take(val_idx)
    index = name_index(behaviors)
    val_true = np.array(
        [index[t] for t in np.asarray(ds.targets("validation"))[val_idx]], dtype=np.int64
    )
    cache = cfg.out / "cache"
    out: list[SystemResult] = []
    for system in systems:
        start = time.monotonic()
        engine = open_engine(cfg.engine, cfg.base_model, system, cfg.dtype, cfg.batch_size)
        try:
            scores = score_samples(engine, system, test_samples, behaviors, cache, "test")
            val_probs = (
                score_samples(engine, system, val_samples, behaviors, cache, "validation").probs
                if cfg.calibrate and len(val_idx)
                else None
            )
        finally:
            engine.close()
        probs, mass = scores.probs, scores.mass
        params: dict[str, Any] = {
            "mean_label_mass": float(mass.mean()),
            # the scoring's own cost, also when this run read it from the cache (seconds: wall
            # time of this run, which is then mostly loading)
            "test_scoring_seconds": (
                round(scores.seconds, 2) if np.isfinite(scores.seconds) else None
            ),
            "test_samples_from_cache": scores.cached,
        }
        if system.manifest is not None:
            trained = {e.name for e in system.manifest.vocabulary}
            unseen = sorted(set(behaviors) - trained)
            if unseen:  # scored anyway (the trie takes any name), but say so
                log.warning(
                    "%s: %d dataset behaviors are not in the adapter's vocabulary, e.g. %s",
                    system.name,
                    len(unseen),
                    unseen[:3],
                )
                params["behaviors_not_in_adapter_vocabulary"] = len(unseen)
            params.update(
                stage=system.manifest.stage,
                strategy=system.manifest.strategy,
                version=system.manifest.version,
                adapter=str(system.adapter_dir),
                stored_temperature=system.manifest.calibration.temperature,
            )
        res = SystemResult(
            system.name,
            system.kind,
            probs,
            params,
            time.monotonic() - start,
            val_probs=val_probs,
        )
        out.append(res)
        if val_probs is not None:
            fit = fit_temperature(val_probs, val_true)
            calib = {
                "temperature": fit.temperature,
                "validation_nll_before": fit.nll_before,
                "validation_nll_after": fit.nll_after,
                "validation_samples": fit.samples,
            }
            res.params["calibration"] = calib
            out.append(
                SystemResult(
                    f"{system.name} +T",
                    system.kind,
                    apply_temperature(probs, fit.temperature),
                    dict(calib),
                    variant_of=system.name,
                )
            )
            if cfg.store_calibration and system.adapter_dir is not None:
                store_temperature(
                    system.adapter_dir, fit, f"{ds.name} validation ({fit.samples} samples)"
                )
                log.info(
                    "%s: stored temperature %.3f in its manifest", system.name, fit.temperature
                )
    return out


def add_hybrids(cfg: EvalConfig, ds: Any, results: list[SystemResult]) -> list[SystemResult]:
    """Each LLM system fused with SASRec (``fusion.py``), weights fitted on validation."""
    from behaviorlm.training.evaluation.fusion import fit_fusion, fuse

    sasrec = next((r for r in results if r.name == "sasrec" and r.variant_of is None), None)
    llms = [r for r in results if r.kind.startswith("llm") and r.variant_of is None]
    if sasrec is None or sasrec.val_probs is None or not llms:
        raise InputError(
            "--systems hybrid-sasrec needs sasrec, at least one LLM system and a validation "
            "split (with --calibrate)"
        )
    val_idx = choose_subset(ds.num_samples("validation"), cfg.max_validation_samples, cfg.seed)
    index = ds.vocabulary.index
    val_true = np.array(
        [index[t] for t in np.asarray(ds.targets("validation"))[val_idx]], dtype=np.int64
    )
    out = []
    for llm in llms:
        if llm.val_probs is None:
            continue
        fit = fit_fusion(llm.val_probs, sasrec.val_probs[val_idx], val_true)
        out.append(
            SystemResult(
                f"{llm.name} x sasrec (hybrid)",
                "hybrid",
                fuse(llm.probs, sasrec.probs, fit.llm_weight, fit.other_weight),
                {
                    "llm": llm.name,
                    "llm_weight": fit.llm_weight,
                    "sasrec_weight": fit.other_weight,
                    "validation_nll": fit.validation_nll,
                    "validation_samples": fit.validation_samples,
                },
            )
        )
        log.info(
            "%s x sasrec: weights %.1f / %.1f (validation NLL %.3f)",
            llm.name,
            fit.llm_weight,
            fit.other_weight,
            fit.validation_nll,
        )
    return out


def add_logit_adjusted(
    results: list[SystemResult], prior: np.ndarray, taus: Sequence[float]
) -> list[SystemResult]:
    extra = []
    for res in results:
        # Adjusting the popularity prior by itself gives a uniform distribution: skip it.
        if res.variant_of is not None or res.name == "most-popular":
            continue
        for tau in taus:
            extra.append(
                SystemResult(
                    f"{res.name} +LA{tau:g}",
                    res.kind,
                    logit_adjust(res.probs, prior, tau),
                    {"tau": tau},
                    variant_of=res.name,
                )
            )
    return extra


def score_result(res: SystemResult, true: np.ndarray, vocab: Any) -> dict[str, Any]:
    anchor = vocab.anchor_mask
    return {
        "name": res.name,
        "kind": res.kind,
        "variant_of": res.variant_of,
        "params": res.params,
        "seconds": round(res.seconds, 2),
        "metrics": M.compute_metrics(res.probs, true, anchor),
        "intervals": M.bootstrap_intervals(res.probs, true, anchor),
        "per_behavior": M.per_behavior(res.probs, true, vocab.names, vocab.counts, anchor),
        "reliability": M.reliability(res.probs, true),
    }


# The references every LLM (and hybrid) system is differenced against, when they ran: the
# baselines of the issue-32 targets (SASRec; "the user's most frequent behavior").
DIFFERENCE_REFERENCES = ("sasrec", "user-frequency-all")


def paired_differences(
    results: Sequence[SystemResult], true: np.ndarray, anchor: np.ndarray
) -> list[dict[str, Any]]:
    """Each LLM or hybrid system (and its ``+LA`` variants) minus each reference of
    DIFFERENCE_REFERENCES that ran, with paired bootstrap intervals
    (``metrics.paired_differences``). ``+T`` variants are left out: a temperature moves no
    top-1 prediction and no rank, so their differences are their system's."""
    refs = [r for r in results if r.name in DIFFERENCE_REFERENCES and r.variant_of is None]
    systems = [
        r
        for r in results
        if (r.kind.startswith("llm") or r.kind == "hybrid") and not r.name.endswith(" +T")
    ]
    resampled = {r.name: M.Resampling.from_probs(r.probs, true) for r in [*refs, *systems]}
    return [
        {
            "system": s.name,
            "reference": ref.name,
            "metrics": M.paired_differences(resampled[s.name], resampled[ref.name], true, anchor),
        }
        for s in systems
        for ref in refs
    ]


def evaluate(cfg: EvalConfig) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(report body with every number, probabilities per system) — see report.py for files."""
    from behaviorlm.training.data.dataset import PreparedDataset

    ds = PreparedDataset.load(cfg.data)
    if cfg.split not in ds.splits():
        raise InputError(f"--split: {cfg.split!r} is not one of {list(ds.splits())}")
    n = ds.num_samples(cfg.split)
    if n == 0:
        raise InputError(f"{cfg.data}: the {cfg.split} split has no samples")
    vocab = ds.vocabulary
    all_targets = np.asarray(ds.targets(cfg.split))
    if cfg.selection == "anchor-tail" and cfg.max_test_samples is not None:
        is_anchor = np.array([vocab.is_anchor(str(t)) for t in all_targets])
        test_idx = choose_stratified(is_anchor, cfg.max_test_samples, cfg.seed)
        selection = f"stratified: half anchor-target, half tail-target samples (seed {cfg.seed})"
    else:
        test_idx = choose_subset(n, cfg.max_test_samples, cfg.seed)
        selection = (
            "all" if len(test_idx) == n else f"seeded uniform random subset (seed {cfg.seed})"
        )
    index = vocab.index
    true = np.array([index[t] for t in all_targets[test_idx]], dtype=np.int64)
    names = cfg.expanded()
    results = run_classical(cfg, ds, names, test_idx) + run_llm(cfg, ds, names, test_idx)
    if "hybrid-sasrec" in names:
        results += add_hybrids(cfg, ds, results)
    prior = np.asarray(vocab.counts, dtype=np.float64) + 1.0
    results += add_logit_adjusted(results, prior / prior.sum(), cfg.logit_adjust)
    anchor_mask = vocab.anchor_mask
    for res in results:
        if "calibration" in res.params:  # relative to the probabilities reported for it
            res.params["calibration"]["test_ece_floor"] = temperature_ece_floor(
                res.probs, true, anchor_mask
            )
    body = {
        "data": {
            "root": str(ds.root),
            "name": ds.name,
            "info": ds.info,
            "vocabulary_size": len(vocab),
            "anchors": len(vocab.anchors),
            "tails": len(vocab.tails),
            "anchor_share": vocab.anchor_share,
            "anchor_cut_count": min(
                (c for n, c in zip(vocab.names, vocab.counts, strict=True) if vocab.is_anchor(n)),
                default=None,
            ),
            "train_anchor_target_share": (
                sum(c for n, c in zip(vocab.names, vocab.counts, strict=True) if vocab.is_anchor(n))
                / max(vocab.total, 1)
            ),
            "samples": {s: ds.num_samples(s) for s in ds.splits()},
        },
        "evaluation": {
            "split": cfg.split,
            "samples": len(test_idx),
            "of": n,
            "selection": selection,
            "anchor_samples": int(anchor_mask[true].sum()),
            "tail_samples": int((~anchor_mask[true]).sum()),
            "test_classes_present": len(np.unique(true)),
        },
        "systems": [score_result(r, true, vocab) for r in results],
        "differences": paired_differences(results, true, anchor_mask),
    }
    probs = {r.name: r.probs for r in results}
    probs["__true__"] = true
    probs["__indices__"] = test_idx
    if not results:
        raise InputError("no system ran: check --systems and --runs")
    return body, probs


__all__ = ["EvalConfig", "SystemResult", "choose_subset", "evaluate"]
