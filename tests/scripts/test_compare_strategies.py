"""scripts/compare-strategies.sh end to end on the tiny model: three strategies, one report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from behaviorlm.manifest import MANIFEST_FILE

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "compare-strategies.sh"


def test_usage_without_arguments() -> None:
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 2 and "DATA OUT PRESET" in done.stderr


@pytest.mark.slow
def test_trains_three_strategies_and_reports_them(tiny_model: Any, tmp_path: Path) -> None:
    from behaviorlm.training.data.pipeline import prepare_log
    from behaviorlm.training.data.synthetic import SYNTHETIC_COLUMNS, make_synthetic_log

    data = tmp_path / "data"
    prepare_log(make_synthetic_log(60, 2000, 30, seed=3), data, name="syn", **SYNTHETIC_COLUMNS)
    env = {
        **os.environ,
        "BEHAVIORLM": f"{sys.executable} -m behaviorlm.cli",
        "BASE_MODEL": str(tiny_model.path),
        "VALIDATION_SAMPLES": "12",
    }
    out = tmp_path / "cmp"
    args = ["bash", str(SCRIPT), str(data), str(out), "tiny", "24", "threads=1"]
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "eval" / "report.json").read_text())
    systems = json.dumps(report)
    for name in ("behaviorlm/stage1", "behaviorlm/stage2", "sft/sft", "balanced/balanced"):
        assert name in systems
        manifest = json.loads((out / name / MANIFEST_FILE).read_text())
        assert manifest["calibration"]["fitted_on"]  # --store-calibration wrote it
    assert (out / "eval" / "report.md").read_text().count("zero-shot") >= 1
    # a second run resumes every finished run instead of refusing the existing directories
    again = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished" in again.stderr
