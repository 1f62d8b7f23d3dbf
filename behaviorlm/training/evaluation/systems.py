"""LLM systems scored through a ``ScoringEngine``: the zero-shot base model and trained adapters.

Every system scores the same prompts (``behaviorlm.prompt.render_sample``) over the dataset's
vocabulary in vocabulary order, at temperature 1 (the raw label-word distribution); calibration
is applied afterwards in numpy (``calibration.py``), which is exactly what the engine does with a
stored temperature. Scores are cached in chunks under ``<out>/cache/`` so an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from behaviorlm.errors import InputError
from behaviorlm.events import Sample
from behaviorlm.manifest import MANIFEST_FILE, AdapterManifest
from behaviorlm.prompt import Prompt, render_sample
from behaviorlm.repeats import RepeatInput

log = logging.getLogger(__name__)
CHUNK = 256  # prompts per engine call and per cache write


@dataclass(frozen=True)
class Scores:
    """What ``score_samples`` returns. ``seconds``: engine time spent scoring these samples,
    summed over every run that added to the cache (a resumed or re-rendered evaluation reports
    the scoring's real cost, not the few seconds of reading the cache); nan when the cache was
    written before it recorded time. ``cached``: samples read from the cache this run."""

    probs: np.ndarray
    mass: np.ndarray
    seconds: float
    cached: int


@dataclass(frozen=True)
class LLMSystem:
    """``adapter_dir`` None = the base model zero-shot."""

    name: str
    adapter_dir: Path | None = None
    manifest: AdapterManifest | None = None

    @property
    def kind(self) -> str:
        return "llm-zero-shot" if self.adapter_dir is None else "llm-adapter"


def discover_adapters(run: Path) -> list[LLMSystem]:
    """The adapters of a run: ``run/manifest.json`` itself, or every ``run/<stage>/manifest.json``.

    Named ``<run>/<stage>`` (e.g. ``ct-pj/stage2``), sorted by stage directory name.
    """
    if not run.exists():
        raise InputError(f"--runs: {run} does not exist")
    if (run / MANIFEST_FILE).exists():
        found = [run]
    else:
        found = sorted(p.parent for p in run.glob(f"*/{MANIFEST_FILE}"))
    if not found:
        raise InputError(f"--runs: no adapter in {run} (expected {run}/<stage>/{MANIFEST_FILE})")
    out = []
    for d in found:
        manifest = AdapterManifest.load(d)
        # an adapter directory given directly is named like one found in its run
        name = f"{d.parent.name}/{d.name}"
        out.append(LLMSystem(name=name, adapter_dir=d, manifest=manifest))
    return out


def _fingerprint(system: LLMSystem, prompts: Sequence[Prompt], behaviors: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(system.name.encode())
    if system.manifest is not None:
        h.update(system.manifest.version.encode())
        h.update(str(system.manifest.created_at).encode())
    for text in (*behaviors, *(p.text for p in prompts)):
        h.update(text.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def score_samples(
    engine: Any,
    system: LLMSystem,
    samples: Sequence[Sample],
    behaviors: Sequence[str],
    cache_dir: Path | None,
    label: str = "",
) -> Scores:
    """[n, V] probabilities (temperature 1) of ``system`` for ``samples`` over ``behaviors``,
    [n] label mass (the model's raw probability that the next token starts a name), and the
    scoring time (see ``Scores``)."""
    from tqdm import tqdm

    from behaviorlm.scoring.base import ScoreRequest

    prompts = [render_sample(s) for s in samples]
    pasts = repeat_inputs(system, samples)
    behaviors = tuple(behaviors)
    out = np.zeros((len(prompts), len(behaviors)))
    mass = np.zeros(len(prompts))
    done = 0
    seconds = 0.0
    cache: Path | None = None
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        key = _fingerprint(system, prompts, behaviors)
        cache = cache_dir / f"{system.name.replace('/', '__')}-{label}-{key}.npz"
        if cache.exists():
            saved = np.load(cache)
            done = int(saved["done"])
            out[:done] = saved["probs"][:done]
            mass[:done] = saved["mass"][:done]
            seconds = float(saved["seconds"]) if "seconds" in saved else float("nan")
            log.info(
                "%s: resuming at %d/%d scored samples from %s",
                system.name,
                done,
                len(prompts),
                cache,
            )
    adapter = None if system.adapter_dir is None else system.name
    desc = f"{system.name} {label}".strip()
    cached = done
    with tqdm(total=len(prompts), initial=done, desc=desc, unit="sample") as bar:
        for start in range(done, len(prompts), CHUNK):
            chunk = prompts[start : start + CHUNK]
            began = time.monotonic()
            results = engine.score_batch(
                [
                    ScoreRequest(
                        prompt=p,
                        behaviors=behaviors,
                        adapter=adapter,
                        temperature=1.0,
                        past=pasts[start + j] if pasts is not None else None,
                    )
                    for j, p in enumerate(chunk)
                ]
            )
            for j, res in enumerate(results):
                if tuple(res.behaviors) != behaviors:
                    raise RuntimeError(f"{system.name}: engine returned behaviors out of order")
                out[start + j] = res.probs
                mass[start + j] = res.label_mass
            seconds += time.monotonic() - began
            bar.update(len(chunk))
            if cache is not None:
                tmp = cache.with_suffix(".tmp.npz")
                end = start + len(chunk)
                np.savez(tmp, probs=out[:end], mass=mass[:end], done=end, seconds=seconds)
                tmp.replace(cache)
    return Scores(out, mass, seconds, cached)


def repeat_inputs(system: LLMSystem, samples: Sequence[Sample]) -> list[RepeatInput] | None:
    """Each sample's past for the repeat features, when the system's head reads them (the
    user's last ``repeat_window`` events, as a request would send them)."""
    head = system.manifest.head if system.manifest is not None else None
    if head is None or head.repeat_window == 0:
        return None
    past = getattr(samples, "past", None)
    if past is None:
        raise InputError(f"{system.name}: its repeat features need samples of a prepared dataset")
    shown = system.manifest.history_events if system.manifest is not None else None
    return [past(i, head.repeat_window, shown or 0) for i in range(len(samples))]


def open_engine(kind: str, base_spec: str, system: LLMSystem, dtype: str, batch_size: int) -> Any:
    """An engine for one system: the adapter merged into the weights (fastest on CPU)."""
    from behaviorlm.base_model import resolve_base_model
    from behaviorlm.scoring.base import AdapterSpec
    from behaviorlm.scoring.factory import choose_kind, make_engine, vllm_readout

    base = resolve_base_model(base_spec)
    head = system.manifest is not None and system.manifest.head is not None
    full = system.manifest is not None and system.manifest.tuning == "full"
    # vLLM serves LoRA on its base model only: a fully tuned model goes to transformers
    kind = "transformers" if full and kind == "auto" else choose_kind(kind)
    merge = system.adapter_dir is not None and kind == "transformers"
    opts: dict[str, Any] = {"dtype": dtype, "batch_size": batch_size}
    if merge:
        opts["merge"] = True
    if kind == "vllm":
        opts["readout"] = vllm_readout("auto", trained_head=head)
    engine = make_engine(kind, base, **opts)
    if system.adapter_dir is not None and system.manifest is not None:
        engine.load_adapter(AdapterSpec(system.name, system.adapter_dir, system.manifest))
    return engine
