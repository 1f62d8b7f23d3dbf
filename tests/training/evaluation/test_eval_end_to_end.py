"""``behaviorlm eval`` end to end on a small prepared dataset built in code.

Real parts: the data pipeline's synthetic log, the classical systems, the transformers engine
on the tiny random Llama (zero-shot and a random LoRA adapter in a run directory), the report
files and ``--compare``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from behaviorlm.cli import main
from behaviorlm.manifest import AdapterManifest


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from behaviorlm.training.data.pipeline import prepare_log
    from behaviorlm.training.data.synthetic import SYNTHETIC_COLUMNS, make_synthetic_log

    out = tmp_path_factory.mktemp("prepared") / "syn"
    return prepare_log(
        make_synthetic_log(150, 3000, 60, seed=1), out, name="synthetic", **SYNTHETIC_COLUMNS
    )


def test_classical_report_and_compare(
    prepared: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "classical"
    rc = main(
        [
            "eval",
            "--data",
            str(prepared.root),
            "--out",
            str(out),
            "--systems",
            "classical",
            "--max-test-samples",
            "40",
            "--seed",
            "3",
        ]
    )
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["evaluation"]["samples"] == 40
    assert "seed 3" in report["evaluation"]["selection"]
    ev = report["evaluation"]
    assert ev["tail_samples"] > 0 and ev["anchor_samples"] + ev["tail_samples"] == 40
    names = [s["name"] for s in report["systems"]]
    assert names[:2] == ["most-popular", "user-frequency-all"]
    assert "markov-user +LA1" in names  # logit-adjusted variant of every system
    # Every number is recomputable from the saved probabilities.
    saved = np.load(out / "predictions.npz")
    true = saved["__true__"]
    for system in report["systems"]:
        name = system["name"]
        assert saved[name].shape == (40, len(prepared.vocabulary))
        top = saved[f"{name}:top"]
        overall = system["metrics"]["overall"]
        assert overall["accuracy"] == pytest.approx(float((top[:, 0] == true).mean()))
        assert overall["hr@5"] == pytest.approx(float((top[:, :5] == true[:, None]).any(1).mean()))
        assert overall["nll"] == pytest.approx(float(-np.log(saved[f"{name}:p_true"]).mean()))
    # The most-popular system always predicts the most frequent behavior.
    mp = report["systems"][0]
    assert mp["metrics"]["overall"]["accuracy"] == pytest.approx(float((true == 0).mean()))
    for png in ("anchor_tail.png", "anchor_vs_tail.png", "per_behavior_f1.png", "reliability.png"):
        assert (out / png).stat().st_size > 5000
    md = (out / "report.md").read_text()
    assert "| markov-user |" in md and "tail macro-F1" in md
    # Every calibrated system says how low a temperature could take its ECE on these samples.
    floor = report["systems"][1]["params"]["calibration"]["test_ece_floor"]
    assert 0 <= floor["ece"] <= report["systems"][1]["metrics"]["overall"]["ece"] + 1e-9
    assert "ECE floor (T on test)" in md
    capsys.readouterr()

    rc = main(["eval", "--compare", str(out), str(out), "--out", str(tmp_path / "cmp")])
    assert rc == 0
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert table.split("## 95%")[0].count("classical: most-popular |") == 2
    assert "## 95% bootstrap intervals" in table
    assert (tmp_path / "cmp" / "anchor_vs_tail.png").stat().st_size > 5000

    # Runs named <run>-seed<k>: merged over seeds with mean and spread.
    for seed, acc in ((0, 0.2), (1, 0.4)):
        rep = json.loads((out / "report.json").read_text())
        rep["systems"][0]["name"] = f"demo-seed{seed}/stage2"
        rep["systems"][0]["metrics"]["overall"]["accuracy"] = acc
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "report.json").write_text(json.dumps(rep))
    rc = main(["eval", "--compare", str(tmp_path / "s0"), str(tmp_path / "s1")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "## Over seeds" in printed
    (row,) = [line for line in printed.splitlines() if line.startswith("| demo/stage2 | 2 |")]
    assert row.split("|")[3].strip() == "0.300 (0.200, 0.400)"

    # A run named without the suffix joins its -seed<k> runs as seed 0, and is listed.
    rep = json.loads((tmp_path / "s0" / "report.json").read_text())
    rep["systems"][0]["name"] = "demo/stage2"
    rep["systems"][0]["metrics"]["overall"]["accuracy"] = 0.6
    (tmp_path / "s0" / "report.json").write_text(json.dumps(rep))
    rc = main(["eval", "--compare", str(tmp_path / "s0"), str(tmp_path / "s1")])
    assert rc == 0
    printed = capsys.readouterr().out
    (row,) = [line for line in printed.splitlines() if line.startswith("| demo/stage2 | 2 |")]
    assert row.split("|")[3].strip() == "0.500 (0.400, 0.600)"
    assert "- demo/stage2: s0: demo/stage2, s1: demo-seed1/stage2" in printed

    # --compare-as: a run trained under another name joins the seeds, and the table says so.
    rep["systems"][0]["name"] = "served-demo/stage2"
    (tmp_path / "s0" / "report.json").write_text(json.dumps(rep))
    args = ["eval", "--compare", str(tmp_path / "s0"), str(tmp_path / "s1")]
    rc = main([*args, "--compare-as", "served-demo/stage2=demo-seed2/stage2"])
    assert rc == 0
    printed = capsys.readouterr().out
    (row,) = [line for line in printed.splitlines() if line.startswith("| demo/stage2 | 2 |")]
    assert row.split("|")[3].strip() == "0.500 (0.400, 0.600)"
    assert "- `served-demo/stage2` is read as `demo-seed2/stage2` (`--compare-as`)" in printed
    assert main([*args, "--compare-as", "nothing/stage2=x"]) == 2
    assert "no system named 'nothing/stage2'" in capsys.readouterr().err
    assert main([*args, "--compare-as", "no-equals-sign"]) == 2
    assert "expected SYSTEM=NAME, got 'no-equals-sign'" in capsys.readouterr().err
    twice = ["--compare-as", "served-demo/stage2=a", "--compare-as", "served-demo/stage2=b"]
    assert main([*args, *twice]) == 2
    assert "'served-demo/stage2' is given twice" in capsys.readouterr().err
    other = rep["systems"][1]["name"]  # a name the same report already has
    assert main([*args, "--compare-as", f"served-demo/stage2={other}"]) == 2
    assert f"already has a system {other!r}" in capsys.readouterr().err


def test_bad_input_is_named(
    prepared: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "eval",
                "--data",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
                "--systems",
                "classical",
            ]
        )
        == 2
    )
    assert "not a prepared dataset" in capsys.readouterr().err
    assert (
        main(
            [
                "eval",
                "--data",
                str(prepared.root),
                "--out",
                str(tmp_path / "o"),
                "--systems",
                "classical,nonsense",
            ]
        )
        == 2
    )
    assert "--systems: unknown ['nonsense']" in capsys.readouterr().err
    assert main(["eval", "--compare", str(tmp_path)]) == 2
    assert "no report.json" in capsys.readouterr().err


def test_llm_systems_calibration_and_resume(prepared: Any, tiny_model: Any, tmp_path: Path) -> None:
    from tests.random_adapter import make_random_adapter

    run = tmp_path / "models" / "tiny-run"
    make_random_adapter(
        tiny_model, run / "stage2", vocabulary=prepared.vocabulary, seed=0, name="tiny-run"
    )
    out = tmp_path / "llm"
    argv = [
        "eval",
        "--data",
        str(prepared.root),
        "--out",
        str(out),
        "--runs",
        str(run),
        "--systems",
        "most-popular,zero-shot,adapters",
        "--base-model",
        str(tiny_model.path),
        "--dtype",
        "float32",
        "--max-test-samples",
        "12",
        "--max-validation-samples",
        "10",
        "--store-calibration",
        "--logit-adjust",
        "",
    ]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    by_name = {s["name"]: s for s in report["systems"]}
    zero = by_name[f"zero-shot ({tiny_model.path})"]
    adapter = by_name["tiny-run/stage2"]
    assert zero["kind"] == "llm-zero-shot" and adapter["kind"] == "llm-adapter"
    assert adapter["params"]["stage"] == "stage2"
    assert 0.0 < zero["params"]["mean_label_mass"] <= 1.0
    calib = adapter["params"]["calibration"]
    assert calib["validation_nll_after"] <= calib["validation_nll_before"] + 1e-9
    assert "tiny-run/stage2 +T" in by_name
    # The fitted temperature went into the adapter's manifest.
    stored = AdapterManifest.load(run / "stage2").calibration
    assert stored.temperature == pytest.approx(calib["temperature"])
    assert stored.fitted_on is not None and "validation" in stored.fitted_on
    saved = np.load(out / "predictions.npz")
    probs = saved["tiny-run__stage2"]
    assert probs.shape == (12, len(prepared.vocabulary))
    assert probs.sum(axis=1) == pytest.approx(np.ones(12), abs=1e-5)
    assert not np.allclose(probs, saved[f"zero-shot ({tiny_model.path})".replace("/", "__")])
    # A rerun finds every score in the cache and reproduces the numbers.
    assert list((out / "cache").glob("*.npz"))
    assert main([*argv[:-3], "--logit-adjust", ""]) == 0
    again = json.loads((out / "report.json").read_text())
    again_adapter = {s["name"]: s for s in again["systems"]}["tiny-run/stage2"]
    assert again_adapter["metrics"] == adapter["metrics"]
    # ... and reports the scoring's cost of the first run, not the cache read.
    assert adapter["params"]["test_samples_from_cache"] == 0
    assert adapter["params"]["test_scoring_seconds"] > 0
    assert again_adapter["params"]["test_samples_from_cache"] == 12
    assert (
        again_adapter["params"]["test_scoring_seconds"] == adapter["params"]["test_scoring_seconds"]
    )
    # One stage's directory given directly is the same system, under the same name.
    direct = [a if a != str(run) else str(run / "stage2") for a in argv[:-3]]
    assert main([*direct, "--systems", "adapters", "--logit-adjust", ""]) == 0
    names = [s["name"] for s in json.loads((out / "report.json").read_text())["systems"]]
    assert "tiny-run/stage2" in names


def test_trained_head_adapter_and_the_hybrid_arm(
    prepared: Any, tiny_model: Any, tmp_path: Path
) -> None:
    """An adapter with a trained head and repeat features is evaluated with each sample's
    past, and the hybrid arm fuses it with SASRec (weights from validation)."""
    from behaviorlm.training.config import load_config
    from behaviorlm.training.stages import TrainingData, train

    config = load_config(
        "tiny", ["baseline.steps=3", "head.trained=true", "head.repeat_window=6", "threads=1"]
    )
    run = tmp_path / "models" / "head-run"
    train("sft", TrainingData.from_prepared(prepared.root), tiny_model, config, run)
    out = tmp_path / "hybrid"
    argv = [
        "eval",
        *("--data", str(prepared.root), "--out", str(out), "--runs", str(run)),
        *("--systems", "sasrec,adapters,hybrid-sasrec", "--base-model", str(tiny_model.path)),
        *("--dtype", "float32", "--max-test-samples", "20", "--max-validation-samples", "15"),
        *("--sasrec-max-seconds", "5", "--sasrec-epochs", "1", "--logit-adjust", "1"),
    ]
    assert main(argv) == 0
    by_name = {s["name"]: s for s in json.loads((out / "report.json").read_text())["systems"]}
    hybrid = by_name["head-run/sft x sasrec (hybrid)"]
    assert hybrid["kind"] == "hybrid" and hybrid["params"]["llm"] == "head-run/sft"
    assert hybrid["params"]["validation_samples"] == 15
    assert hybrid["params"]["llm_weight"] + hybrid["params"]["sasrec_weight"] > 0
    # Paired differences: the LLM and the hybrid (and their logit-adjusted variants, not +T)
    # minus SASRec (the only reference that ran), the point difference being the two systems'
    # own metrics apart, in report.md and plotted.
    report = json.loads((out / "report.json").read_text())
    pairs = {(d["system"], d["reference"]): d["metrics"] for d in report["differences"]}
    llms = ["head-run/sft", "head-run/sft x sasrec (hybrid)"]
    assert set(pairs) == {(name, "sasrec") for llm in llms for name in (llm, f"{llm} +LA1")}
    acc = pairs[("head-run/sft", "sasrec")]["overall.accuracy"]
    own = [by_name[k]["metrics"]["overall"]["accuracy"] for k in ("head-run/sft", "sasrec")]
    assert acc["difference"] == pytest.approx(own[0] - own[1])
    lo, hi = acc["interval"]
    assert lo <= acc["difference"] <= hi and 0.0 <= acc["above_zero"] <= 1.0
    text = (out / "report.md").read_text()
    assert "## Paired differences against SASRec" in text and "| head-run/sft | sasrec |" in text
    assert (out / "differences.png").stat().st_size > 0
    # --compare lists each report's pairs under the report's name
    assert main(["eval", "--compare", str(out), "--out", str(tmp_path / "cmp")]) == 0
    assert "| hybrid: head-run/sft | sasrec |" in (tmp_path / "cmp" / "compare.md").read_text()
    assert (tmp_path / "cmp" / "differences.png").stat().st_size > 0
    saved = np.load(out / "predictions.npz")
    fused = saved["head-run__sft x sasrec (hybrid)"]
    assert fused.sum(axis=1) == pytest.approx(np.ones(20), abs=1e-6)
    # without SASRec there is nothing to fuse: a clear error, not an empty row
    bad = [a if a != "sasrec,adapters,hybrid-sasrec" else "adapters,hybrid-sasrec" for a in argv]
    assert main(bad) != 0


@pytest.mark.slow
def test_fewshot_experiment_with_the_tiny_preset(
    prepared: Any, tiny_model: Any, tmp_path: Path
) -> None:
    out = tmp_path / "fewshot"
    argv = _fewshot_argv(prepared, tiny_model, out, "--fewshot-set", "baseline.steps=2")
    assert main(argv) == 0
    result = json.loads((out / "fewshot.json").read_text())
    held = result["held_out"]
    assert len(held) == 1 and held[0] in prepared.vocabulary.tails
    k0, k2 = result["rows"]
    # Training data: k picks of the held-out behavior on top of every other sample.
    assert k2["train_samples"] - k0["train_samples"] == 2
    for row in (k0, k2):
        manifest = AdapterManifest.load(Path(row["adapter"]))
        entry = {e.name: e for e in manifest.vocabulary}[held[0]]
        assert entry.count == row["k"] and not entry.anchor
        assert row["held_out_samples"] >= 1
        assert 0.0 <= row["macro_recall"] <= 1.0
        assert 0.0 <= row["anchor_macro_recall"] <= 1.0
    assert (out / "fewshot.png").stat().st_size > 5000
    assert "| 2 |" in (out / "fewshot.md").read_text()


@pytest.mark.slow
def test_fewshot_reuses_a_runs_stage1(
    prepared: Any, tiny_model: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--fewshot-stage1-from: every k starts from the same stage 1; difficulty renumbered."""
    import pandas as pd
    import torch
    from safetensors.torch import load_file

    from behaviorlm.training.config import load_config
    from behaviorlm.training.evaluation.fewshot import training_subset
    from behaviorlm.training.stages import TrainingData, train

    source = tmp_path / "source"
    train(
        "behaviorlm",
        TrainingData.from_prepared(prepared.root),
        tiny_model,
        load_config("tiny", ("stage2.steps=2",)),
        source,
    )
    scored = pd.read_parquet(source / "difficulty.parquet")
    assert len(scored) > 0
    out = tmp_path / "fewshot"
    argv = _fewshot_argv(
        prepared,
        tiny_model,
        out,
        "--fewshot-strategy",
        "behaviorlm",
        "--fewshot-stage1-from",
        str(source),
        "--fewshot-set",
        "stage2.steps=2",
    )
    assert main(argv) == 0
    result = json.loads((out / "fewshot.json").read_text())
    held = result["held_out"]
    train_targets = list(prepared.targets("train"))
    theirs = load_file(str(source / "stage1" / "adapter_model.safetensors"))
    for row in result["rows"]:
        run = Path(row["adapter"]).parent
        assert Path(row["adapter"]).name == "stage2"
        ours = load_file(str(run / "stage1" / "adapter_model.safetensors"))
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
        # Scores follow their samples into the few-shot numbering; removed samples lose theirs.
        subset = training_subset(train_targets, held, row["k"], 0)
        frame = pd.read_parquet(run / "difficulty.parquet")
        kept = scored[scored["index"].isin(subset)]
        assert len(frame) == len(kept)
        assert [train_targets[subset[i]] for i in frame["index"]] == list(frame["target"])
        # each kept example is read once per pass over the stage's rows
        assert row["expected_reads"][held[0]] == pytest.approx(row["k"] * row["passes"], abs=0.01)
    assert "stage 1 reused from" in (out / "fewshot.md").read_text()
    assert main([*argv, "--fewshot-strategy", "sft"]) == 2
    error = capsys.readouterr().err
    assert "--fewshot-stage1-from: only with --fewshot-strategy behaviorlm" in error


def _fewshot_argv(prepared: Any, tiny_model: Any, out: Path, *extra: str) -> list[str]:
    """``eval --fewshot`` on the tiny model: one held-out behavior, k = 0 and 2."""
    return [
        "eval",
        "--fewshot",
        "--data",
        str(prepared.root),
        "--out",
        str(out),
        "--base-model",
        str(tiny_model.path),
        "--dtype",
        "float32",
        "--fewshot-ks",
        "0,2",
        "--fewshot-holdout",
        "1",
        "--fewshot-preset",
        "tiny",
        "--fewshot-other-samples",
        "6",
        *extra,
    ]


def test_a_fully_tuned_run_is_evaluated(prepared: Any, tiny_model: Any, tmp_path: Path) -> None:
    """`eval --runs` on a tuning=full run: the engine loads the stage's whole model (merged
    mode, as eval runs adapters) and the report holds it as an LLM system."""
    from behaviorlm.training.config import load_config
    from behaviorlm.training.stages import TrainingData, train

    config = load_config(
        "tiny",
        ["tuning=full", "baseline.steps=3", "head.trained=true", "baseline.lr=0.001", "threads=1"],
    )
    run = tmp_path / "models" / "full-run"
    train("sft", TrainingData.from_prepared(prepared.root), tiny_model, config, run)
    out = tmp_path / "full-eval"
    argv = [
        "eval",
        *("--data", str(prepared.root), "--out", str(out), "--runs", str(run)),
        *("--systems", "adapters", "--base-model", str(tiny_model.path), "--dtype", "float32"),
        *("--max-test-samples", "12", "--max-validation-samples", "8", "--logit-adjust", ""),
    ]
    assert main(argv) == 0
    by_name = {s["name"]: s for s in json.loads((out / "report.json").read_text())["systems"]}
    assert "full-run/sft" in by_name
    probs = np.load(out / "predictions.npz")["full-run__sft"]
    assert probs.shape[0] == 12 and probs.sum(axis=1) == pytest.approx(np.ones(12), abs=1e-6)
