"""The CPU engine benchmark's own logic: its agreement figures and its command line.

The timed runs themselves are the script's job (figures in docs/benchmarks.md), never a test's.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from behaviorlm.manifest import MANIFEST_FILE

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cpu_engine_benchmark.py"


def load_script() -> ModuleType:
    # The benchmarks run as scripts, with their folder on sys.path (they import ``common``).
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("cpu_engine_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_agreement_counts_top1_top5_and_max_difference() -> None:
    bench = load_script()
    reference = np.array(
        [
            [0.40, 0.20, 0.15, 0.10, 0.08, 0.07],
            [0.50, 0.20, 0.10, 0.09, 0.06, 0.05],
        ]
    )
    candidate = reference.copy()
    # Row 1: ranks 5 and 6 swap (one of five top-5 members differs), top-1 kept.
    candidate[1] = [0.50, 0.20, 0.10, 0.09, 0.05, 0.06]
    top1, top5, max_diff = bench.agreement(reference, candidate)
    assert top1 == 1.0
    assert top5 == pytest.approx((5 / 5 + 4 / 5) / 2)
    assert max_diff == pytest.approx(0.01)
    # A different top-1 counts against top-1 agreement.
    candidate[0] = [0.20, 0.40, 0.15, 0.10, 0.08, 0.07]
    top1, _, max_diff = bench.agreement(reference, candidate)
    assert top1 == 0.5
    assert max_diff == pytest.approx(0.20)


def test_unknown_candidate_is_refused_by_name(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / MANIFEST_FILE).write_text("{}")
    data = tmp_path / "checkins.csv.gz"
    data.write_bytes(b"")
    run = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--adapter",
            str(adapter),
            "--data",
            str(data),
            "--candidates",
            "torch-fp32,onnx-magic",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0
    assert "onnx-magic" in run.stderr and "torch-fp32-merged" in run.stderr


def test_help_explains_every_option() -> None:
    run = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    for option in ("--adapter", "--candidates", "--emulate-avx2", "--agreement-prompts"):
        assert option in run.stdout
    assert "--child" not in run.stdout  # internal


def test_the_floor_counts_the_decoders_linear_weights(tiny_model: Any) -> None:
    """The floor (FLOPs / matmul rate) counts every linear weight of the decoder layers once:
    the tiny Llama's q, k, v, o and MLP projections, not its embeddings."""
    from transformers import AutoModelForCausalLM

    bench = load_script()
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model.path))
    c = model.config
    kv = c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    per_layer = 2 * c.hidden_size * c.hidden_size + 2 * c.hidden_size * kv
    per_layer += 3 * c.hidden_size * c.intermediate_size
    assert bench.decoder_linear_params(model) == c.num_hidden_layers * per_layer
