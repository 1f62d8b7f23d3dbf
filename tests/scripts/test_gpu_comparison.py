"""scripts/gpu-comparison.sh in its CPU rehearsal mode (--tiny): the very steps of the GPU run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu-comparison.sh"


def test_usage_without_arguments() -> None:
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 2 and "--tiny" in done.stderr


@pytest.mark.slow
def test_tiny_rehearsal_writes_one_folder(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    out = tmp_path / "gpu"
    args = ["bash", str(SCRIPT), str(out), "--tiny", "threads=1"]
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "transformers" in (out / "env.txt").read_text()
    report = json.loads((out / "cmp" / "eval" / "report.json").read_text())
    names = json.dumps(report)
    for name in ("behaviorlm/stage2", "sft/sft", "balanced/balanced", "zero-shot"):
        assert name in names
    steps = dict(line.split("\t") for line in (out / "timings.tsv").read_text().splitlines()[1:])
    assert {"tiny-setup", "compare-strategies", "train sft/sft"} <= set(steps)
    assert all(float(v) >= 0 for v in steps.values())
    assert (out / "cmp" / "eval" / "report.md").exists()
